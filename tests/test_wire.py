"""admn_ros.wire: every message type the package reads or writes, built in both flavours (rclpy and
rosbags), serialised to CDR, read back; the two flavours must put the same bytes on the wire."""
import subprocess
import sys

import numpy as np
import pytest

from admn_ros import wire
from admn_ros.runtime.engine import Inference
from admn_ros.wire import topics as T
from admn_ros.datasets.ros_messages.typestore import bag_messages, make_typestore

STAMP = 1_700_000_123_456_789_012
STORE = make_typestore()
BAG = bag_messages()


def cdr_both(build, msgtype):
    """Build with each flavour; returns (rclpy message, rosbags message decoded from the rclpy
    message's CDR bytes). Skips when rclpy or the message package is not installed here."""
    serialization = pytest.importorskip('rclpy.serialization')
    ros_msg = build(wire.ROS)
    bag_msg = build(BAG)
    ros_raw = bytes(serialization.serialize_message(ros_msg))
    from_ros = STORE.deserialize_cdr(ros_raw, msgtype)
    # The same content on the wire (re-serialised by rosbags: rclpy leaves padding bytes as they
    # happen to be in memory).
    assert (bytes(STORE.serialize_cdr(from_ros, msgtype))
            == bytes(STORE.serialize_cdr(bag_msg, msgtype))), msgtype
    back = serialization.deserialize_message(ros_raw, type(ros_msg))
    return back, from_ros


def inference(**changes):
    probs = np.array([0.1, 0.6, 0.05, 0.2, 0.05], np.float32)
    fields = dict(stamp_ns=STAMP, frame_id='cam', class_id=1, class_name='dog', score=0.6,
                  probs=probs, present=('rgb', 'audio'),
                  keep={'rgb': np.array([1, 0, 1, 1], bool), 'depth': np.zeros(4, bool),
                        'audio': np.array([1, 1, 0, 0], bool)},
                  quality={'rgb': 0.75, 'audio': 0.125}, gflops=1.25, budget_fraction=0.5,
                  budget_unit='flops', budget_spent=0.4375, preprocess_ms=1.0, policy_ms=0.5,
                  model_ms=3.0)
    fields.update(changes)
    return Inference(**fields)


def test_the_wire_package_imports_no_rclpy_and_no_message_package():
    code = ('import sys, admn_ros.wire, admn_ros.datasets.ros_messages.typestore\n'
            'import admn_ros.datasets.bags\n'
            "loaded = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', "
            "'std_msgs', 'diagnostic_msgs', 'builtin_interfaces')]\n"
            'assert not loaded, loaded\n')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_header_and_stamps():
    for ros, bag in [cdr_both(lambda f: wire.header(STAMP, 'cam', f), 'std_msgs/msg/Header')]:
        for msg in (ros, bag):
            assert wire.stamp_to_ns(msg.stamp) == STAMP and msg.frame_id == 'cam'
    with pytest.raises(ValueError, match='negative'):
        wire.header(-1, flavour=BAG)


@pytest.mark.parametrize('encoding', ['32FC1', '16UC1'])
def test_rgb_and_depth_images(encoding):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 11, 3), dtype=np.uint8)
    depth = rng.uniform(0.2, 9.0, (8, 11)).astype(np.float32)
    depth[0, 0] = np.nan                                         # REP 118: no reading
    for ros, bag in [cdr_both(lambda f: wire.rgb_msg(rgb, STAMP, flavour=f), T.IMAGE_TYPE)]:
        for msg in (ros, bag):
            assert np.array_equal(wire.read_image(msg), rgb)
            assert np.array_equal(wire.decode_rgb(msg), rgb)
            assert msg.header.frame_id == T.FRAME_IDS['rgb']
    expected = depth if encoding == '32FC1' else np.round(depth * 1000) / 1000
    for ros, bag in [cdr_both(lambda f: wire.depth_msg(depth, STAMP, encoding=encoding, flavour=f),
                              T.IMAGE_TYPE)]:
        for msg in (ros, bag):
            assert msg.encoding == encoding
            np.testing.assert_allclose(wire.decode_depth(msg), expected, atol=1e-6)


@pytest.mark.parametrize('encoding', ['16SC1', '32FC1'])
def test_audio_in_an_image(encoding):
    stereo = np.stack([np.linspace(-0.5, 0.5, 400), np.full(400, 0.25)]).astype(np.float32)
    for ros, bag in [cdr_both(lambda f: wire.audio_msg(stereo, STAMP, encoding=encoding, flavour=f),
                              T.IMAGE_TYPE)]:
        for msg in (ros, bag):
            np.testing.assert_allclose(wire.read_audio(msg), stereo, atol=1 / 32768)
            np.testing.assert_allclose(wire.decode_audio(msg), stereo.mean(0), atol=1 / 32768)


def test_audio_common_stamped_and_info():
    """ros-drivers' audio_common_msgs has no wheel: the rosbags flavour (bags) is checked here,
    the rclpy flavour too where the package is built."""
    wave = np.linspace(-0.5, 0.5, 320, dtype=np.float32)
    built = wire.audio_stamped_msg(wave, STAMP, flavour=BAG)
    msg = STORE.deserialize_cdr(STORE.serialize_cdr(built, T.AUDIO_STAMPED_TYPE),
                                T.AUDIO_STAMPED_TYPE)
    assert wire.header_stamp_ns(msg) == STAMP
    np.testing.assert_allclose(wire.read_audio(msg)[0], wave, atol=1 / 32768)
    info = STORE.deserialize_cdr(STORE.serialize_cdr(wire.audio_info_msg(flavour=BAG),
                                                     T.AUDIO_INFO_TYPE), T.AUDIO_INFO_TYPE)
    assert (info.channels, info.sample_rate, info.sample_format) == (1, 16000, 'S16LE')
    assert np.array_equal(wire.audio_common_to_array(msg, info), wire.read_audio(msg))
    if wire.audio_common_available():
        ros, _ = cdr_both(lambda f: wire.audio_stamped_msg(wave, STAMP, flavour=f),
                          T.AUDIO_STAMPED_TYPE)
        np.testing.assert_allclose(wire.read_audio(ros)[0], wave, atol=1 / 32768)


def test_ground_truth_label_and_corruption_one_writer_for_nodes_and_bags():
    levels = {'rgb': ('low_light', 0.30000001192092896), 'audio': ('clean', 0.0)}
    for ros, bag in [cdr_both(lambda f: wire.label_msg(STAMP, 2, 'bird', flavour=f),
                              T.DIAGNOSTIC_ARRAY_TYPE)]:
        for msg in (ros, bag):
            assert wire.read_label(msg) == (2, 'bird') and wire.header_stamp_ns(msg) == STAMP
            assert msg.status[0].message == 'bird'
            assert wire.status_level(msg.status[0]) == 0
    for ros, bag in [cdr_both(lambda f: wire.corruption_msg(STAMP, levels, flavour=f),
                              T.DIAGNOSTIC_ARRAY_TYPE)]:
        for msg in (ros, bag):
            assert wire.read_corruption(msg) == levels                    # severity exact
            assert [wire.status_level(s) for s in msg.status] == [1, 0]   # WARN when corrupted
    unlabelled = wire.corruption_msg(STAMP, levels, flavour=BAG)
    with pytest.raises(ValueError, match="no 'label' status"):
        wire.read_label(unlabelled)
    twice = wire.label_msg(STAMP, 2, 'bird', flavour=BAG)
    twice.status = twice.status * 2
    with pytest.raises(ValueError, match='exactly one'):
        wire.read_label(twice)


def test_fusion_outputs():
    """Each output has one admn_msgs type; rclpy and rosbags build the same message (compared
    field by field after a CDR round trip both ways) and the readers give back what went in."""
    inf = inference()
    header = lambda f: wire.header(STAMP, 'cam', f)  # noqa: E731
    for ros, bag in [cdr_both(lambda f: wire.prediction_msg(inf, header(f), f), T.PREDICTION_TYPE)]:
        for msg in (ros, bag):
            assert wire.read_prediction(msg) == (STAMP, 1, pytest.approx(0.6))
            assert msg.class_name == 'dog' and list(msg.top_class_ids) == [1, 3, 0, 2, 4]
            assert list(msg.top_scores) == pytest.approx([0.6, 0.2, 0.1, 0.05, 0.05])
    for ros, bag in [cdr_both(lambda f: wire.allocation_msg(inf, ('rgb', 'depth', 'audio'),
                                                              header(f), f), T.ALLOCATION_TYPE)]:
        for msg in (ros, bag):
            alloc = wire.read_allocation(msg)
            assert alloc['stamp_ns'] == STAMP and msg.header.frame_id == 'cam'
            assert alloc['layers'] == {'rgb': 3, 'depth': 0, 'audio': 2}
            assert list(msg.layers) == [3, 0, 2] and list(msg.depth) == [4, 4, 4]
            assert alloc['kept'] == {'rgb': [0, 2, 3], 'depth': [], 'audio': [0, 1]}
            assert alloc['present'] == {'rgb': True, 'depth': False, 'audio': True}
            assert (alloc['fraction'], alloc['unit'], alloc['spent']) == (
                0.5, 'flops', pytest.approx(0.4375))
            assert msg.budget_unit == type(msg).BUDGET_UNIT_FLOPS
    for ros, bag in [cdr_both(lambda f: wire.quality_msg(inf, header(f), f), T.QUALITY_TYPE)]:
        for msg in (ros, bag):
            assert wire.read_quality(msg) == {'rgb': 0.75, 'audio': 0.125}
            assert len(msg.familiarity) == 0
    for ros, bag in [cdr_both(lambda f: wire.inference_msg(inf, header(f), latency_ms=12.5,
                                                           processing_ms=4.25, dropped=7,
                                                           flavour=f), T.INFERENCE_TYPE)]:
        for msg in (ros, bag):
            got = wire.read_inference(msg)
            assert got['stamp_ns'] == STAMP and got['dropped'] == 7
            assert got['present'] == ('rgb', 'audio')
            assert (got['gflops'], got['latency_ms'], got['processing_ms']) == (1.25, 12.5, 4.25)


def test_fusion_output_readers_refuse_inconsistent_arrays():
    inf = inference()
    msg = wire.allocation_msg(inf, ('rgb', 'depth', 'audio'), wire.header(STAMP, '', BAG), BAG)
    msg.kept = msg.kept[:-1]
    with pytest.raises(ValueError, match='kept has 11 entries for a total depth of 12'):
        wire.read_allocation(msg)
    quality = wire.quality_msg(inf, wire.header(STAMP, '', BAG), BAG)
    quality.quality = quality.quality[:1]
    with pytest.raises(ValueError, match='quality has 1 entries for 2 modalities'):
        wire.read_quality(quality)


def test_every_fusion_output_topic_has_one_declared_admn_msgs_type():
    assert set(T.OUTPUT_TYPES) == {wire.PREDICTION, wire.ALLOCATION, wire.QUALITY, wire.INFERENCE}
    assert all(t.startswith('admn_msgs/msg/') for t in T.OUTPUT_TYPES.values())
    # The bag typestore knows every one of them from the .msg text alone.
    assert set(T.OUTPUT_TYPES.values()) <= set(STORE.types)


def test_budget_message():
    for ros, bag in [cdr_both(lambda f: wire.budget_msg(0.3, f), T.FLOAT32_TYPE)]:
        for msg in (ros, bag):
            assert wire.read_budget(msg) == 0.3     # float32 on the wire, rounded back


def test_oversized_payloads_are_refused_before_decoding():
    rgb = np.zeros((64, 64, 3), np.uint8)
    limits = wire.InputLimits(max_message_bytes=64 * 64 * 3 - 1)
    for msg in (wire.rgb_msg(rgb, STAMP, flavour=BAG), wire.rgb_msg(rgb, STAMP, flavour=wire.ROS)):
        assert wire.sensor_input.payload_bytes(msg) == 64 * 64 * 3
        with pytest.raises(wire.RejectedInput, match='max_message_bytes'):
            wire.decode_rgb(msg, limits)
        msg.encoding = 'yuv422'            # refused for its size before its encoding is looked at
        with pytest.raises(wire.RejectedInput, match='max_message_bytes'):
            wire.decode_rgb(msg, limits)
    audio = wire.audio_msg(np.zeros(1000, np.float32), STAMP, flavour=BAG)
    with pytest.raises(wire.RejectedInput, match='max_message_bytes'):
        wire.decode_audio(audio, wire.InputLimits(max_message_bytes=1999))
    assert len(wire.decode_audio(audio, wire.InputLimits(max_message_bytes=2000))) == 1000
