"""No silent corruption: flipped bytes in an MCAP bag are refused by its checksums, undecodable
messages are counted per topic (reader, player, report), and an evaluation that ran with a modality
missing from most frames says so and fails unless asked to go on."""
import json
import types

import numpy as np
import pytest

from admn_ros.datasets import mcap_crc
from admn_ros.datasets.bags import BagError, read_bag, write_bag
from tests.test_bags import CLASSES, assert_same_samples, make_batch


def _flip_in_data(bag, seed=0, count=1):
    """Flip ``count`` bytes in the middle third of the bag's MCAP file (message payloads)."""
    f = mcap_crc.storage_files(bag)[0]
    data = bytearray(f.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.integers(len(data) // 3, 2 * len(data) // 3, count):
        data[int(i)] ^= 0x5A
    f.write_bytes(bytes(data))


def test_written_mcap_bags_are_sealed_and_a_flipped_byte_is_refused(tmp_path):
    batch = make_batch(8)
    bag = write_bag(tmp_path / 'b', batch, class_names=CLASSES)
    report = mcap_crc.verify_bag(bag)
    assert report.sealed and report.chunks_checked >= 1 and report.summary_checked
    assert_same_samples(read_bag(bag).batch, batch)     # still a valid bag for every reader
    _flip_in_data(bag)
    with pytest.raises(BagError, match='CRC mismatch') as err:
        read_bag(bag)
    assert '\n' not in str(err.value)


def test_every_corrupted_byte_position_is_caught(tmp_path):
    bag = write_bag(tmp_path / 'b', make_batch(3, t=400), class_names=CLASSES)
    f = mcap_crc.storage_files(bag)[0]
    clean = f.read_bytes()
    # Every 97th byte from the first record to the footer's CRC field: one flip each.
    for pos in range(8, len(clean) - 12, 97):
        data = bytearray(clean)
        data[pos] ^= 0x01
        f.write_bytes(bytes(data))
        with pytest.raises(mcap_crc.McapCrcError):
            mcap_crc.verify(f)
    f.write_bytes(clean)
    mcap_crc.verify(f)


def _garble_topic(src, dst, topic, every=1):
    """Copy bag ``src`` to ``dst`` with every ``every``-th message of ``topic`` cut short (its
    CDR no longer decodes)."""
    from rosbags.rosbag2 import Reader, Writer
    from admn_ros.datasets.ros_messages.typestore import make_typestore
    store = make_typestore()
    with Reader(src) as reader, Writer(dst, version=9) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store)
                 for c in reader.connections}
        seen = 0
        for conn, t, raw in reader.messages():
            if conn.topic == topic:
                seen += 1
                if seen % every == 0:
                    raw = bytes(raw)[:12]
            writer.write(conns[conn.id], t, raw)
    return dst


def test_undecodable_messages_are_counted_per_topic(tmp_path):
    from admn_ros.wire import topics as T
    src = write_bag(tmp_path / 'src', make_batch(10), class_names=CLASSES)
    bad = _garble_topic(src, tmp_path / 'bad', T.RGB_TOPIC, every=2)
    samples = read_bag(bad)
    assert samples.undecodable == {T.RGB_TOPIC: 5}
    assert len(samples.batch['label']) == 5       # the other half still matched


def test_bag_player_refuses_a_corrupted_mcap_and_counts_undecodable(ros_context, tmp_path):
    from rclpy.parameter import Parameter
    from admn_ros.nodes.bag_player import BagPlayer
    from admn_ros.wire import topics as T
    bag = write_bag(tmp_path / 'b', make_batch(6), class_names=CLASSES)
    _flip_in_data(bag)
    with pytest.raises(ValueError, match='CRC mismatch'):
        BagPlayer(context=ros_context, parameter_overrides=[Parameter('bag_path', value=str(bag))])

    src = write_bag(tmp_path / 'src', make_batch(6), class_names=CLASSES)
    bad = _garble_topic(src, tmp_path / 'bad', T.RGB_TOPIC)
    node = BagPlayer(context=ros_context, parameter_overrides=[
        Parameter('bag_path', value=str(bad)), Parameter('as_fast_as_possible', value=True)])
    try:
        assert node.done.wait(30)
        assert node.undecodable == {T.RGB_TOPIC: 6}
        assert node.published[T.RGB_TOPIC] == 0 and node.published[T.DEPTH_TOPIC] == 6
        values = node._status()[2]
        assert values[f'undecodable {T.RGB_TOPIC}'] == 6
    finally:
        node.destroy_node()


def _allocation(stamp_ns, present, depth=4):
    from admn_ros.wire import allocation_msg, header
    keep = {m: (np.arange(depth) < 2) if m in present else np.zeros(depth, bool)
            for m in ('rgb', 'depth', 'audio')}
    inf = types.SimpleNamespace(keep=keep, present=tuple(present), budget_fraction=0.5,
                                budget_unit='layers', budget_spent=0.5)
    return allocation_msg(inf, ('rgb', 'depth', 'audio'), header(stamp_ns, ''))


def _diagnostics(topic, count):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    return DiagnosticArray(status=[DiagnosticStatus(name='bag_player: playback', values=[
        KeyValue(key=f'undecodable {topic}', value=str(count))])])


@pytest.mark.parametrize('allow', [False, True])
def test_evaluation_with_a_modality_missing_from_most_frames_fails_unless_allowed(
        ros_context, tmp_path, allow):
    from rclpy.parameter import Parameter
    from admn_ros.nodes.evaluator import Evaluator
    report = tmp_path / 'report.json'
    node = Evaluator(context=ros_context, parameter_overrides=[
        Parameter('report_path', value=str(report)),
        Parameter('allow_missing_modalities', value=allow)])
    for i in range(20):   # rgb decoded in 2 of 20 frames only
        node._on_allocation(_allocation(1_000 + i, ('rgb', 'depth', 'audio') if i < 2 else ('depth',)))
    node._on_diagnostics(_diagnostics('/camera/color/image_raw', 18))
    node.destroy_node()
    data = json.loads(report.read_text())
    assert data['undecodable'] == {'/camera/color/image_raw': 18}
    assert data['absent_share']['rgb'] == pytest.approx(0.9)
    assert node.exit_code == (0 if allow else 1)
    md = report.with_suffix('.md').read_text()
    assert ('Not a valid evaluation' in md) and 'rgb missing from 90% of the frames' in md


def test_offline_eval_refuses_a_dataset_without_the_models_modalities(tmp_path, capsys):
    from admn_ros.cli import main as admn
    from tests.fixtures_models import make_random_checkpoint
    ckpt = make_random_checkpoint(tmp_path / 'm.pt', class_names=[str(i) for i in range(10)],
                                  dataset='avdigits')     # rgb, depth, audio; AV-digits has no depth
    code = admn(['eval', '--checkpoint', str(ckpt), '--dataset', 'avdigits', '--budgets', '0.5',
                 '--policies', 'full', '--size', '4'])
    err = capsys.readouterr().err
    if 'not available' in err or 'no such' in err.lower():
        pytest.skip('AV-digits data not available')
    assert code == 2 and 'depth' in err and '--allow-missing-modalities' in err, err


def test_evaluation_that_scored_fewer_than_min_frames_fails(ros_context, tmp_path):
    from rclpy.parameter import Parameter
    from admn_ros.nodes.evaluator import Evaluator
    codes = []
    for min_frames, predicted in ((1, False), (1, True), (0, False)):
        node = Evaluator(context=ros_context, parameter_overrides=[
            Parameter('report_path', value=str(tmp_path / 'report.json')),
            Parameter('min_frames', value=min_frames)])
        if predicted:   # an unlabelled replay: its predictions are what it scored
            node._on_allocation(_allocation(1_000, ('rgb', 'depth', 'audio')))
            node.predictions_received = 1
        node.destroy_node()
        codes.append(node.exit_code)
    assert codes == [1, 0, 0]


def test_bag_info_verifies_the_mcap_checksums_unless_told_not_to(tmp_path, capsys):
    from admn_ros.cli import main as admn
    bag = write_bag(tmp_path / 'b', make_batch(8), class_names=CLASSES)
    assert admn(['bag', 'info', str(bag)]) == 0
    assert 'chunk CRCs verified' in capsys.readouterr().out
    _flip_in_data(bag)
    assert admn(['bag', 'info', str(bag)]) == 2
    err = capsys.readouterr().err.strip()
    assert 'CRC mismatch' in err and err.count('\n') == 0, err
    assert admn(['bag', 'info', str(bag), '--no-verify']) == 0
    out = capsys.readouterr().out
    assert 'not verified' in out and '/ground_truth/label' in out
