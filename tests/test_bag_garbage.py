"""Bags of bad data never yield an accuracy: payloads that do not decode are counted per topic and
reported; a model modality or the labels mostly undecodable is refused in one line; a label is
never paired with another sample's frame; ``bag info`` verifies MCAP checksums."""
import json

import numpy as np
import pytest

from admn_ros import wire
from admn_ros.cli import main as admn
from admn_ros.datasets.bags import BagError, read_bag
from admn_ros.wire import topics as T
from admn_ros.datasets.ros_messages.typestore import bag_messages, make_typestore

START = 1_700_000_000_000_000_000
N = 40


def garbage_bag(path, *, broken=None, all_random=False, seed=0):
    """``N`` synthetic test samples at 10 Hz with labels, no rate in the metadata (a foreign
    bag); ``broken`` maps a topic to the sample indices whose payload is random bytes."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from admn_ros.datasets.registry import load_dataset
    broken = broken or {}
    data = load_dataset('synthetic', 'test', size=N).arrays
    store, flavour, rng = make_typestore(), bag_messages(), np.random.default_rng(seed)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for k in range(N):
            t = START + k * 100_000_000
            msgs = [(T.RGB_TOPIC, T.IMAGE_TYPE, wire.rgb_msg(data['rgb'][k], t, flavour=flavour)),
                    (T.DEPTH_TOPIC, T.IMAGE_TYPE, wire.depth_msg(data['depth'][k], t, flavour=flavour)),
                    (T.AUDIO_TOPIC, T.IMAGE_TYPE, wire.audio_msg(data['audio'][k], t, flavour=flavour)),
                    (T.LABEL_TOPIC, T.DIAGNOSTIC_ARRAY_TYPE,
                     wire.label_msg(t, int(data['label'][k]), flavour=flavour))]
            for topic, msgtype, msg in msgs:
                if topic not in conns:
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
                raw = store.serialize_cdr(msg, msgtype)
                if all_random or k in broken.get(topic, ()):
                    raw = rng.integers(0, 256, len(raw) // 3 + 7, dtype=np.uint8).tobytes()
                writer.write(conns[topic], t, raw)
    return path, data['label']


def test_labels_pair_only_with_their_own_sample_when_most_frames_are_broken(tmp_path):
    survivors = [3, 4, 21, 33]
    path, labels = garbage_bag(tmp_path / 'b', broken={
        T.RGB_TOPIC: [k for k in range(N) if k not in survivors]})
    got = read_bag(path)
    assert got.broken == {'rgb': N - len(survivors)} and got.recorded['rgb'] == N
    assert got.undecodable == {T.RGB_TOPIC: N - len(survivors)}
    assert got.period_ns == 100_000_000
    # Every frame kept carries its own sample's label (the spacing of the surviving frames,
    # up to 1.2 s here, must not widen the matching).
    index = (got.stamps_ns - START) // 100_000_000
    assert list(index) == survivors
    assert list(got.batch['label']) == [int(labels[k]) for k in survivors]


@pytest.mark.parametrize('broken, expected', [
    ({T.RGB_TOPIC: range(4, N), T.DEPTH_TOPIC: range(2, N)}, 'rgb 36 of 40 undecodable'),
    ({T.RGB_TOPIC: range(N)}, 'rgb 40 of 40 undecodable'),
    ({T.LABEL_TOPIC: range(0, N, 2), T.AUDIO_TOPIC: [1]}, 'label 21 of 40 undecodable'),
])
def test_bag_eval_refuses_a_bag_whose_inputs_or_labels_mostly_do_not_decode(
        tmp_path, capsys, broken, expected):
    if T.LABEL_TOPIC in broken:
        broken[T.LABEL_TOPIC] = list(broken[T.LABEL_TOPIC]) + [1]
    path, _ = garbage_bag(tmp_path / 'b', broken=broken)
    code = admn(['bag', 'eval', str(path), '--dataset', 'synthetic', '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.count('\n') == 0 and expected in err, (code, err)
    assert not (tmp_path / 'o' / 'offline.json').exists()


def test_bag_eval_reports_undecodable_messages_per_topic(tmp_path, capsys):
    path, _ = garbage_bag(tmp_path / 'b', broken={T.RGB_TOPIC: [5, 6], T.AUDIO_TOPIC: [9]})
    out = tmp_path / 'o'
    assert admn(['bag', 'eval', str(path), '--dataset', 'synthetic', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert f'{T.RGB_TOPIC} 2' in printed and f'{T.AUDIO_TOPIC} 1' in printed
    report = json.loads((out / 'offline.json').read_text())
    assert report['undecodable'] == {T.RGB_TOPIC: 2, T.AUDIO_TOPIC: 1}
    assert report['frames'] == N - 3
    md = (out / 'offline_report.md').read_text()
    assert 'did not decode' in md and T.RGB_TOPIC in md


def test_a_bag_of_random_payloads_says_none_decodes(tmp_path, capsys):
    path, _ = garbage_bag(tmp_path / 'b', all_random=True)
    with pytest.raises(BagError, match=r'none of its 120 camera/depth/audio messages decodes'):
        read_bag(path)
    assert admn(['bag', 'eval', str(path), '--dataset', 'synthetic',
                 '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert 'rgb 40 of 40 undecodable' in err and err.strip().count('\n') == 0


def test_bag_eval_refuses_a_bag_without_a_model_modality_unless_allowed(tmp_path, capsys):
    from admn_ros.datasets.bags import write_bag
    from admn_ros.datasets.registry import load_dataset
    data = load_dataset('synthetic', 'test', size=12).arrays
    batch = {k: v for k, v in data.items() if k in ('depth', 'audio', 'label')}
    bag = write_bag(tmp_path / 'noc', batch, class_names=None, rate_hz=10.0)
    args = ['bag', 'eval', str(bag), '--dataset', 'synthetic', '--out', str(tmp_path / 'o')]
    assert admn(args) == 2
    err = capsys.readouterr().err
    assert 'has no rgb' in err and '--allow-missing-modalities' in err
    assert admn(args + ['--allow-missing-modalities']) == 0
    report = json.loads((tmp_path / 'o' / 'offline.json').read_text())
    assert report['modalities'] == ['depth', 'audio'] and report['frames'] == 12


@pytest.mark.ros
@pytest.mark.slow
def test_replay_eval_of_a_bag_that_scores_nothing_exits_non_zero(tmp_path, capsys):
    path, _ = garbage_bag(tmp_path / 'b', all_random=True)
    report = tmp_path / 'r.json'
    code = admn(['bringup', 'replay_eval', f'bag:={path}', f'report:={report}'])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code != 0, text[-3000:]
    assert 'not a valid evaluation: 0' in text, text[-3000:]
    assert json.loads(report.read_text())['matched'] == 0
