"""sensor_source, noise_injector and bag_player over real rclpy (in-process, private context)."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from admn_ros import wire  # noqa: E402
from tests.fixtures_models import RosHarness  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def harness(ros_context):
    made = []

    def make(*nodes):
        made.append(RosHarness(ros_context))
        for node in nodes:
            made[-1].add(node)
        return made[-1]
    yield make
    for h in made:
        h.close()


# --------------------------------------------------------------------------- messages
def test_message_helpers_round_trip_and_reject_bad_input():
    stamp = 1_700_000_000_123_456_789
    wave = np.linspace(-0.5, 0.5, 800, dtype=np.float32)
    msg = wire.audio_msg(wave, stamp)
    assert (msg.encoding, msg.height, msg.width) == ('16SC1', 1, 800)
    assert wire.stamp_to_ns(msg.header.stamp) == stamp
    assert np.allclose(wire.read_audio(msg)[0], wave, atol=1 / 32768)
    assert wire.read_label(wire.label_msg(stamp, 7, 'seven')) == (7, 'seven')
    levels = {'rgb': ('low_light', 0.25), 'audio': ('clean', 0.0)}
    assert wire.read_corruption(wire.corruption_msg(stamp, levels)) == levels
    with pytest.raises(ValueError, match='no .label. status'):
        wire.read_label(DiagnosticArray())
    with pytest.raises(ValueError, match='uint8'):
        wire.rgb_msg(np.zeros((4, 4, 3), np.float32), stamp)
    with pytest.raises(ValueError, match='reliability'):
        wire.sensor_qos(reliability=5)
    assert wire.message_class('sensor_msgs/msg/Image') is Image
    with pytest.raises(ImportError):
        wire.message_class('audio_common_msgs/msg/NoSuchType')
    with pytest.raises(ValueError, match='pkg/msg/Name'):
        wire.message_class('Image')


# --------------------------------------------------------------------------- sensor_source
def test_sensor_source_publishes_dataset_samples_with_shared_stamps(ros_context, harness):
    from admn_ros.nodes.sensor_source import SensorSource
    from admn_ros.datasets.registry import load_dataset

    ds = load_dataset('tensors', 'test', seed=3, size=4)
    src = SensorSource(context=ros_context, parameter_overrides=[
        Parameter('source', value='tensors'), Parameter('seed', value=3),
        Parameter('dataset_size', value=4), Parameter('rate_hz', value=50.0),
        Parameter('loop', value=False)])
    h = harness(src)
    rgb, depth = h.listen(Image, wire.RGB), h.listen(Image, wire.DEPTH)
    audio, labels = h.listen(Image, wire.AUDIO), h.listen(DiagnosticArray, wire.LABEL)
    streams = (rgb, depth, audio, labels)
    assert h.spin_until(lambda: all(len(s) == 4 for s in streams))
    h.spin_for(0.2)
    assert len(rgb) == 4  # loop=False: no fifth frame
    stamps = [[wire.stamp_to_ns(m.header.stamp) for m in stream] for stream in streams]
    assert stamps[0] == stamps[1] == stamps[2] == stamps[3]          # sample i shares t_i
    assert all(b > a for a, b in zip(stamps[0], stamps[0][1:]))
    assert 10e6 < np.median(np.diff(stamps[0])) < 60e6                # ~20 ms at 50 Hz
    a = ds.arrays
    for i in range(4):
        assert np.array_equal(wire.read_image(rgb[i]), a['rgb'][i])
        np.testing.assert_array_equal(wire.read_image(depth[i]), a['depth'][i])  # NaN-aware
        assert np.allclose(wire.read_audio(audio[i])[0], a['audio'][i], atol=1 / 32767)
        assert wire.read_label(labels[i]) == (int(a['label'][i]), ds.class_names[int(a['label'][i])])
    assert rgb[0].header.frame_id == wire.FRAME_IDS['rgb']


def test_sensor_source_latches_the_audio_info_of_its_stamped_stream(ros_context, harness):
    """With audio_common_msgs, the AudioDataStamped stream comes with one latched AudioInfo that
    a subscriber joining later still gets, naming the format the buffers really are in."""
    if not wire.audio_common_available():
        pytest.skip('audio_common_msgs is not built here: sensor_source publishes neither '
                    'AudioDataStamped nor AudioInfo')
    from audio_common_msgs.msg import AudioDataStamped, AudioInfo
    from rclpy.qos import DurabilityPolicy

    from admn_ros.nodes.sensor_source import SensorSource
    from admn_ros.runtime.audio_stream import AudioStreamDecoder
    src = SensorSource(context=ros_context, parameter_overrides=[
        Parameter('source', value='tensors'), Parameter('dataset_size', value=2),
        Parameter('modalities', value=['audio']), Parameter('rate_hz', value=50.0),
        Parameter('loop', value=False)])
    h = harness(src)
    assert src.info_pub.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    stamped, image = h.listen(AudioDataStamped, wire.AUDIO_STAMPED), h.listen(Image, wire.AUDIO)
    assert h.spin_until(lambda: len(stamped) == len(image) == 2)
    infos = []
    h.probe.create_subscription(AudioInfo, wire.AUDIO_STAMPED_INFO, infos.append,
                                wire.latched_qos())
    assert h.spin_until(lambda: infos), 'a late transient-local subscriber got no AudioInfo'
    h.spin_for(0.2)
    assert len(infos) == 1 and wire.audio_info_key(infos[0]) == wire.audio_info_key(wire.AUDIO_INFO)
    decoder = AudioStreamDecoder()   # decoded with that AudioInfo: the Image stream's samples
    decoder.set_info(infos[0])
    for msg, img in zip(stamped, image):
        stamp, wave = decoder.push(wire.header_stamp_ns(msg), bytes(msg.audio.data))
        assert stamp == wire.header_stamp_ns(img)
        np.testing.assert_array_equal(wave, wire.read_audio(img)[0])


def test_sensor_source_wav_chunks_are_stamped_at_their_first_sample(ros_context, harness, tmp_path):
    import soundfile

    from admn_ros.nodes.sensor_source import SensorSource
    wave = (0.5 * np.sin(np.arange(4000) * 0.05)).astype(np.float32)
    soundfile.write(tmp_path / 'a.wav', wave, 8000)  # 0.5 s at 8 kHz -> resampled to 16 kHz
    src = SensorSource(context=ros_context, parameter_overrides=[
        Parameter('source', value=f'wav:{tmp_path / "a.wav"}'),
        Parameter('audio_chunk_s', value=0.05), Parameter('loop', value=False),
        Parameter('exit_on_end', value=True)])
    h = harness(src)
    chunks = h.listen(Image, wire.AUDIO)
    assert h.spin_until(lambda: src.finished, timeout=5)
    assert len(chunks) == 10 and all(c.width == 800 for c in chunks)
    received = np.concatenate([wire.read_audio(c)[0] for c in chunks])
    assert np.corrcoef(received[::2], wave)[0, 1] > 0.99
    stamps = np.array([wire.stamp_to_ns(c.header.stamp) for c in chunks])
    assert np.all(np.diff(stamps) == 50_000_000)  # exactly one chunk apart, despite timer jitter
    with pytest.raises(ValueError, match='unknown source'):
        SensorSource(context=ros_context, parameter_overrides=[Parameter('source', value='camera')])


# --------------------------------------------------------------------------- noise_injector
def _spin_one(h, pub, msg, outputs, count):
    pub.publish(msg)
    assert h.spin_until(lambda: len(outputs) >= count)


def test_noise_injector_applies_runtime_severity_and_reports_it(ros_context, harness):
    from admn_ros.nodes.noise_injector import NoiseInjector
    inj = NoiseInjector(context=ros_context,
                        parameter_overrides=[Parameter('input_reliability', value=1)])
    h = harness(inj)
    out = h.listen(Image, wire.CORRUPTED_TOPICS['rgb'])
    levels = h.listen(DiagnosticArray, wire.CORRUPTION)
    pub = h.probe.create_publisher(Image, wire.RGB, 10)
    assert h.spin_until(lambda: pub.get_subscription_count() > 0)
    clean = np.full((24, 24, 3), 120, np.uint8)
    errors, recorded = [], []
    for i, severity in enumerate((0.0, 0.2, 0.8)):
        result = inj.set_parameters([Parameter('rgb.type', value='gaussian_noise'),
                                     Parameter('rgb.severity', value=severity)])
        assert all(r.successful for r in result)
        stamp = 1_000 + i
        _spin_one(h, pub, wire.rgb_msg(clean, stamp, 'cam'), out, i + 1)
        assert h.spin_until(lambda: len(levels) >= i + 1)
        assert wire.stamp_to_ns(out[i].header.stamp) == stamp and out[i].header.frame_id == 'cam'
        assert wire.stamp_to_ns(levels[i].header.stamp) == stamp
        errors.append(np.abs(wire.read_image(out[i]).astype(float) - clean).mean())
        recorded.append(wire.read_corruption(levels[i])['rgb'])
    assert errors[0] == 0 and 0 < errors[1] < errors[2]
    assert recorded == [('clean', 0.0), ('gaussian_noise', 0.2), ('gaussian_noise', 0.8)]


def test_noise_injector_corrupts_mono8_and_drops_negative_stamps(ros_context, harness):
    from admn_ros.nodes.noise_injector import NoiseInjector
    inj = NoiseInjector(context=ros_context, parameter_overrides=[
        Parameter('input_reliability', value=1), Parameter('rgb.type', value='low_light'),
        Parameter('rgb.severity', value=0.5)])
    h = harness(inj)
    out = h.listen(Image, wire.CORRUPTED_TOPICS['rgb'])
    pub = h.probe.create_publisher(Image, wire.RGB, 10)
    assert h.spin_until(lambda: pub.get_subscription_count() > 0)
    grey = np.full((24, 24), 150, np.uint8)
    bad = wire.image_msg(grey, 'mono8', 0)
    bad.header.stamp.sec = -2                       # int32 on the wire: it can arrive
    pub.publish(bad)
    assert h.spin_until(lambda: inj.dropped == 1)
    _spin_one(h, pub, wire.image_msg(grey, 'mono8', 5_000), out, 1)   # still running
    assert out[0].encoding == 'rgb8' and wire.stamp_to_ns(out[0].header.stamp) == 5_000
    darker = wire.read_image(out[0])
    assert darker.shape == (24, 24, 3) and darker.mean() < 150 and inj.dropped == 1


def test_noise_injector_rejects_invalid_parameters_with_a_reason(ros_context, tmp_path):
    from admn_ros.nodes.noise_injector import NoiseInjector
    inj = NoiseInjector(context=ros_context)
    try:
        before = inj.get_parameter('rgb.type').value
        (result,) = inj.set_parameters([Parameter('rgb.type', value='fog')])
        assert not result.successful and 'fog' in result.reason and 'gaussian_blur' in result.reason
        (result,) = inj.set_parameters([Parameter('depth.severity', value=1.5)])
        assert not result.successful
        bad = tmp_path / 'bad.yaml'
        bad.write_text('tracks:\n  rgb: {kind: ramp, ctype: fog, t0: 0, t1: 1, s0: 0, s1: 1}\n')
        (result,) = inj.set_parameters([Parameter('schedule_file', value=str(bad))])
        assert not result.successful and 'fog' in result.reason
        assert inj.get_parameter('rgb.type').value == before
        assert inj.get_parameter('schedule_file').value == ''
    finally:
        inj.destroy_node()
    with pytest.raises(ValueError, match='unknown audio corruption'):
        NoiseInjector(context=ros_context,
                      parameter_overrides=[Parameter('audio.type', value='fog')])


def test_noise_injector_follows_a_schedule_in_source_time(ros_context, harness, tmp_path):
    from admn_ros.nodes.noise_injector import NoiseInjector
    schedule = tmp_path / 'schedule.yaml'
    schedule.write_text('tracks:\n  audio: {kind: step, t: 2.0, before: [clean, 0.0], '
                        'after: [muted, 1.0]}\n')
    inj = NoiseInjector(context=ros_context, parameter_overrides=[
        Parameter('schedule_file', value=str(schedule)), Parameter('rgb.type', value='low_light'),
        Parameter('rgb.severity', value=0.5)])
    h = harness(inj)
    out = h.listen(Image, wire.CORRUPTED_TOPICS['audio'])
    levels = h.listen(DiagnosticArray, wire.CORRUPTION)
    pub = h.probe.create_publisher(Image, wire.AUDIO, 10)
    assert h.spin_until(lambda: pub.get_subscription_count() > 0)
    chunk = (0.3 * np.sin(np.arange(400) * 0.1)).astype(np.float32)
    t0 = 5_000_000_000
    for k, t in enumerate((t0, t0 + 1_900_000_000, t0 + 2_000_000_000)):  # schedule t 0, 1.9, 2.0
        _spin_one(h, pub, wire.audio_msg(chunk, t), out, k + 1)
    assert h.spin_until(lambda: len(levels) == 3)
    assert np.allclose(wire.read_audio(out[1])[0], chunk, atol=1e-4)
    assert np.all(wire.read_audio(out[2]) == 0)
    recorded = [wire.read_corruption(m) for m in levels]
    assert [r['audio'] for r in recorded] == [('clean', 0.0), ('clean', 0.0), ('muted', 1.0)]
    # No rgb track: with a schedule given, the fixed levels do not apply (the schedule decides).
    assert all(r['rgb'] == ('clean', 0.0) for r in recorded)


# --------------------------------------------------------------------------- bag_player
def _small_batch(n=6):
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 3.0, (n, 6, 8)).astype(np.float32)
    depth[:, 0, 0] = np.nan
    return {'rgb': rng.integers(0, 256, (n, 6, 8, 3), dtype=np.uint8), 'depth': depth,
            'audio': rng.uniform(-0.5, 0.5, (n, 400)).astype(np.float32), 'label': np.arange(n) % 3}


def test_bag_player_replays_every_message_with_clock(ros_context, harness, tmp_path):
    from rosgraph_msgs.msg import Clock

    from admn_ros.nodes.bag_player import BagPlayer
    from admn_ros.datasets.bags import write_bag
    batch = _small_batch()
    bag = write_bag(tmp_path / 'bag', batch, class_names=['a', 'b', 'c'], rate_hz=10.0)
    follower = rclpy.create_node('follower', context=ros_context,
                                 parameter_overrides=[Parameter('use_sim_time', value=True)])
    player = BagPlayer(context=ros_context, parameter_overrides=[
        Parameter('bag_path', value=str(bag)), Parameter('as_fast_as_possible', value=True),
        Parameter('clock_hz', value=100.0), Parameter('wait_for_subscribers', value=1)])
    h = harness(player, follower)
    rgb, depth = h.listen(Image, '/camera/color/image_raw'), h.listen(Image, '/camera/depth/image')
    audio, labels = h.listen(Image, '/audio/pcm'), h.listen(DiagnosticArray, '/ground_truth/label')
    clocks = h.listen(Clock, '/clock')
    n = len(batch['label'])
    assert h.spin_until(lambda: player.done.is_set() and len(labels) == n and len(clocks) >= 4 * n)
    assert player.published == {'/camera/color/image_raw': n, '/camera/depth/image': n,
                                '/audio/pcm': n, '/ground_truth/label': n}
    assert (len(rgb), len(depth), len(audio)) == (n, n, n)
    for i in range(n):
        assert np.array_equal(wire.read_image(rgb[i]), batch['rgb'][i])
        np.testing.assert_array_equal(wire.read_image(depth[i]), batch['depth'][i])
        assert np.allclose(wire.read_audio(audio[i])[0], batch['audio'][i], atol=1 / 32767)
        assert wire.read_label(labels[i]) == (i % 3, 'abc'[i % 3])
    stamps = [wire.stamp_to_ns(m.header.stamp) for m in rgb]
    assert np.all(np.diff(stamps) == 100_000_000)  # header stamps are not rewritten
    clock_ns = [wire.stamp_to_ns(c.clock) for c in clocks]
    assert clock_ns == sorted(clock_ns) and clock_ns[-1] == stamps[-1]
    h.spin_for(0.1)
    assert follower.get_clock().now().nanoseconds == stamps[-1]  # use_sim_time follows the bag


def test_bag_player_reliability_can_override_the_recorded_qos(ros_context, tmp_path):
    from rclpy.qos import ReliabilityPolicy

    from admn_ros.nodes.bag_player import BagPlayer
    from admn_ros.datasets.bags import write_bag
    bag = write_bag(tmp_path / 'bag', _small_batch(2), rate_hz=20.0)   # records no QoS: reliable
    expected = {'recorded': ReliabilityPolicy.RELIABLE, 'reliable': ReliabilityPolicy.RELIABLE,
                'best_effort': ReliabilityPolicy.BEST_EFFORT}
    for choice, policy in expected.items():
        player = BagPlayer(context=ros_context, parameter_overrides=[
            Parameter('bag_path', value=str(bag)), Parameter('reliability', value=choice),
            Parameter('wait_for_subscribers', value=1), Parameter('wait_timeout_s', value=0.1)])
        try:
            assert {t.publisher.qos_profile.reliability for t in player.tracks.values()} == {policy}
        finally:
            player.destroy_node()
    with pytest.raises(ValueError, match='reliability must be one of'):
        BagPlayer(context=ros_context, parameter_overrides=[
            Parameter('bag_path', value=str(bag)), Parameter('reliability', value='sometimes')])


def test_bag_player_transient_local_hands_a_late_subscriber_what_was_already_sent(ros_context, tmp_path):
    # A replay's subscriber may match the player a second after the player matched it (discovery
    # finishing one way first on a busy machine): with durability transient_local at both ends it
    # still gets the first messages; a volatile one never does.
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from admn_ros.nodes.bag_player import BagPlayer
    from admn_ros.datasets.bags import write_bag
    n = 4
    bag = write_bag(tmp_path / 'bag', _small_batch(n), class_names=['a', 'b', 'c'], rate_hz=20.0)
    for durability, policy in (('volatile', DurabilityPolicy.VOLATILE),
                               ('transient_local', DurabilityPolicy.TRANSIENT_LOCAL)):
        player = BagPlayer(context=ros_context, parameter_overrides=[
            Parameter('bag_path', value=str(bag)), Parameter('as_fast_as_possible', value=True),
            Parameter('durability', value=durability)])
        assert {t.publisher.qos_profile.durability for t in player.tracks.values()} == {policy}
        h = RosHarness(ros_context)
        h.add(player)
        try:
            assert h.spin_until(player.done.is_set)   # every message sent before anyone listened
            got = {'volatile': [], 'transient_local': []}
            for kind, received in got.items():
                h.probe.create_subscription(
                    DiagnosticArray, '/ground_truth/label', received.append,
                    QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                               durability=wire.durability_policy(kind)))
            h.spin_until(lambda: len(got['transient_local']) == n, 3.0)
            h.spin_for(0.3)
        finally:
            h.close()
        late = n if durability == 'transient_local' else 0
        assert {k: len(v) for k, v in got.items()} == {'volatile': 0, 'transient_local': late}
        if late:
            assert [wire.read_label(m)[0] for m in got['transient_local']] == [i % 3 for i in range(n)]
    with pytest.raises(ValueError, match='durability must be one of'):
        BagPlayer(context=ros_context, parameter_overrides=[
            Parameter('bag_path', value=str(bag)), Parameter('durability', value='forever')])


def _qos(reliability, durability):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability
    from rosbags.interfaces import QosTime
    never = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=5, reliability=QosReliability[reliability],
               durability=QosDurability[durability], deadline=never, lifespan=never,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never,
               avoid_ros_namespace_conventions=False)


def test_replay_qos_latches_audio_info_whatever_the_bag_recorded(tmp_path):
    """The one QoS decision of a replay: AudioInfo is always latched (a rosbags-written bag
    records no QoS, a recording may say volatile, the reliability parameter may force best
    effort); other topics follow the recording, or reliable volatile."""
    from rclpy.qos import DurabilityPolicy as D, ReliabilityPolicy as R
    from rosbags.rosbag2 import Reader

    from admn_ros.wire import topics as T
    from tests.test_bag_tools import robot_bag

    def kind(qos):
        return qos.reliability, qos.durability, qos.depth

    latched = (R.RELIABLE, D.TRANSIENT_LOCAL, 1)
    with Reader(robot_bag(tmp_path / 'robot', seconds=0.2)) as reader:
        recorded = {c.topic: (c.msgtype, list(c.ext.offered_qos_profiles))
                    for c in reader.connections}
    assert recorded['/mic/audio_info'] == (T.AUDIO_INFO_TYPE, [])   # rosbags recorded no QoS
    for topic, (msgtype, offered) in recorded.items():
        qos, note = wire.replay_qos(msgtype, offered, 10)
        expected = latched if topic == '/mic/audio_info' else (R.RELIABLE, D.VOLATILE, 10)
        assert (kind(qos), note) == (expected, ''), topic

    volatile = [_qos('BEST_EFFORT', 'VOLATILE')]
    for reliability in wire.REPLAY_RELIABILITY:
        assert kind(wire.replay_qos(T.AUDIO_INFO_TYPE, volatile, 10, reliability)[0]) == latched
    assert kind(wire.replay_qos(T.IMAGE_TYPE, volatile, 7)[0]) == (R.BEST_EFFORT, D.VOLATILE, 7)
    assert kind(wire.replay_qos(T.IMAGE_TYPE, volatile, 7, 'reliable')[0]) == (
        R.RELIABLE, D.VOLATILE, 7)
    kept = [_qos('RELIABLE', 'TRANSIENT_LOCAL')] * 2
    assert kind(wire.replay_qos(T.FLOAT32_TYPE, kept, 3)[0]) == (R.RELIABLE, D.TRANSIENT_LOCAL, 3)
    assert kind(wire.replay_qos(T.FLOAT32_TYPE, kept, 3, durability='volatile')[0]) == (
        R.RELIABLE, D.VOLATILE, 3)
    assert kind(wire.replay_qos(T.IMAGE_TYPE, volatile, 7, 'reliable', 'transient_local')[0]) == (
        R.RELIABLE, D.TRANSIENT_LOCAL, 7)
    qos, note = wire.replay_qos(T.IMAGE_TYPE, kept + volatile, 3)
    assert kind(qos) == (R.RELIABLE, D.VOLATILE, 3) and 'disagree' in note
    with pytest.raises(ValueError, match='reliability must be one of'):
        wire.replay_qos(T.IMAGE_TYPE, [], 3, 'sometimes')
    with pytest.raises(ValueError, match='durability must be one of'):
        wire.replay_qos(T.IMAGE_TYPE, [], 3, durability='forever')


def test_bag_player_latches_the_audio_info_of_a_rosbags_bag(ros_context, harness, tmp_path):
    """Over ROS: the AudioInfo of a bag written by rosbags (no recorded QoS) reaches a
    transient-local subscriber that joins after playback ended, under its remapped name."""
    if not wire.audio_common_available():
        pytest.skip('audio_common_msgs is not built here: bag_player skips AudioInfo, so it '
                    'cannot be published (the QoS decision is tested without it)')
    from audio_common_msgs.msg import AudioInfo
    from rclpy.qos import DurabilityPolicy

    from admn_ros.nodes.bag_player import BagPlayer
    from tests.test_bag_tools import robot_bag
    bag = robot_bag(tmp_path / 'robot', seconds=0.2)
    player = BagPlayer(context=ros_context, parameter_overrides=[
        Parameter('bag_path', value=str(bag)), Parameter('as_fast_as_possible', value=True),
        Parameter('topics', value=['/mic/audio_info', '/mic/audio_stamped']),
        Parameter('remappings', value=['/mic/audio_info:=/audio/audio_info'])])
    h = harness(player)
    assert h.spin_until(lambda: player.done.is_set(), timeout=30)
    assert player.published['/mic/audio_info'] == 1
    track = player.tracks['/mic/audio_info']
    assert track.publisher.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    got = []
    h.probe.create_subscription(AudioInfo, '/audio/audio_info', got.append, wire.latched_qos())
    assert h.spin_until(lambda: got, timeout=10), 'a late transient-local subscriber got nothing'
    assert wire.audio_info_key(got[0]) == (1, 44100, 'S16LE', 'wave')


def test_bag_player_paces_filters_remaps_and_skips_unknown_types(ros_context, harness, tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from admn_ros.nodes.bag_player import BagPlayer
    from admn_ros.datasets.bags import write_bag
    from admn_ros.datasets.ros_messages.typestore import make_typestore
    bag = write_bag(tmp_path / 'bag', _small_batch(5), rate_hz=20.0)   # 0.2 s of bag time
    player = BagPlayer(context=ros_context, parameter_overrides=[
        Parameter('bag_path', value=str(bag)), Parameter('rate', value=2.0),
        Parameter('exit_on_end', value=True), Parameter('start_offset', value=0.1),
        Parameter('topics', value=['/camera/color/image_raw', 'ground_truth/label']),
        Parameter('remappings', value=['/camera/color/image_raw:=replayed/rgb']),
        Parameter('wait_for_subscribers', value=1)])
    h = harness(player)
    rgb, other = h.listen(Image, '/replayed/rgb'), h.listen(Image, '/audio/pcm')
    h.listen(DiagnosticArray, '/ground_truth/label')
    start = time.monotonic()
    assert h.spin_until(lambda: player.finished, timeout=30)
    assert time.monotonic() - start >= 0.1 / 2.0                 # paced: 0.1 s of bag at 2x
    h.spin_for(0.05)
    # start_offset 0.1 s skips the frames stamped 0 and 50 ms; audio is filtered out.
    assert [wire.stamp_to_ns(m.header.stamp) % 10**9 for m in rgb] == [100_000_000, 150_000_000,
                                                                     200_000_000]
    assert other == []
    assert set(player.published) == {'/camera/color/image_raw', '/ground_truth/label'}

    # A type this install cannot build is skipped, counted, and does not stop the rest.
    store = make_typestore()
    path = tmp_path / 'audio_common'
    types = {k: store.types[v] for k, v in (
        ('stamped', 'audio_common_msgs/msg/AudioDataStamped'),
        ('data', 'audio_common_msgs/msg/AudioData'),
        ('diag', 'diagnostic_msgs/msg/DiagnosticArray'), ('header', 'std_msgs/msg/Header'),
        ('time', 'builtin_interfaces/msg/Time'))}
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        stamped = w.add_connection('/audio/audio_stamped', types['stamped'].__msgtype__,
                                   typestore=store)
        label = w.add_connection('/ground_truth/label', types['diag'].__msgtype__, typestore=store)
        for k in range(3):
            hdr = types['header'](stamp=types['time'](sec=k, nanosec=0), frame_id='mic')
            chunk = types['stamped'](header=hdr, audio=types['data'](data=np.zeros(8, np.uint8)))
            w.write(stamped, k * 10**9, store.serialize_cdr(chunk, stamped.msgtype))
            w.write(label, k * 10**9,
                    store.serialize_cdr(types['diag'](header=hdr, status=[]), label.msgtype))
    skipper = BagPlayer(context=ros_context, parameter_overrides=[
        Parameter('bag_path', value=str(path)), Parameter('as_fast_as_possible', value=True),
        Parameter('wait_for_subscribers', value=1)])
    h2 = harness(skipper)
    labels = h2.listen(DiagnosticArray, '/ground_truth/label')
    assert h2.spin_until(lambda: skipper.done.is_set() and len(labels) == 3, timeout=30)
    assert skipper.skipped == {'/audio/audio_stamped': 3}
    assert skipper.published == {'/ground_truth/label': 3}
    with pytest.raises(ValueError, match='old:=new'):
        BagPlayer(context=ros_context, parameter_overrides=[
            Parameter('bag_path', value=str(bag)), Parameter('remappings', value=['nonsense'])])


def test_incompatible_qos_is_reported_with_the_policy_name(ros_context, harness, capfd):
    """A reliable input never matches a best-effort publisher; the node must say so, not go quiet."""
    from rclpy.qos import qos_profile_sensor_data

    from admn_ros.nodes.noise_injector import NoiseInjector
    inj = NoiseInjector(context=ros_context, parameter_overrides=[
        Parameter('input_reliability', value=1), Parameter('modalities', value=['depth'])])
    h = harness(inj)
    h.probe.create_publisher(Image, wire.DEPTH, qos_profile_sensor_data,  # best effort
                             event_callbacks=wire.publisher_events(h.probe, wire.DEPTH))
    seen = ''
    deadline = time.monotonic() + 5
    while seen.count('RELIABILITY') < 2 and time.monotonic() < deadline:
        h.spin_for(0.1)
        seen += capfd.readouterr().err
    assert "subscription on 'camera/depth/image' cannot match a publisher: incompatible QoS " \
           'policy RELIABILITY' in seen
    assert "publisher on 'camera/depth/image' cannot serve a subscriber: incompatible QoS " \
           'policy RELIABILITY' in seen


def test_audio_info_subscription_warns_that_it_must_be_latched(ros_context, harness, capfd):
    """A volatile publisher never serves a latched subscription: the warning says what the
    publisher must offer, not to look at input_reliability (which does not apply to it)."""
    from rclpy.qos import QoSProfile

    node = rclpy.create_node('listener', context=ros_context)
    h = harness(node)
    node.create_subscription(
        DiagnosticArray, 'audio/audio_info', lambda _: None, wire.latched_qos(),
        event_callbacks=wire.subscription_events(node, 'audio/audio_info', wire.AUDIO_INFO_ADVICE))
    h.probe.create_publisher(DiagnosticArray, 'audio/audio_info', QoSProfile(depth=1))  # volatile
    seen = ''
    deadline = time.monotonic() + 5
    while 'DURABILITY' not in seen and time.monotonic() < deadline:
        h.spin_for(0.1)
        seen += capfd.readouterr().err
    assert "subscription on 'audio/audio_info' cannot match a publisher: incompatible QoS " \
           'policy DURABILITY' in seen
    assert 'must offer AudioInfo latched (reliable, transient local)' in seen
    assert 'input_reliability' not in seen


def test_budget_subscription_warns_that_the_budget_must_be_latched(ros_context, harness, capfd):
    """The fusion node's budget subscription is latched too: a volatile budget publisher gets
    advice about the publisher, not about input_reliability."""
    from rclpy.qos import QoSProfile
    from std_msgs.msg import Float32

    from admn_ros.fusion_budget import BudgetOwnership

    node = rclpy.create_node('budget_listener', context=ros_context)
    h = harness(node)
    BudgetOwnership(node)
    h.probe.create_publisher(Float32, wire.BUDGET, QoSProfile(depth=1))  # volatile
    seen = ''
    deadline = time.monotonic() + 5
    while 'DURABILITY' not in seen and time.monotonic() < deadline:
        h.spin_for(0.1)
        seen += capfd.readouterr().err
    assert f"subscription on '{wire.BUDGET}' cannot match a publisher" in seen, seen
    assert 'budget publisher must offer it latched' in seen and 'input_reliability' not in seen


def test_bag_player_main_returns_when_the_bag_ends(tmp_path):
    """run_node: exit_on_end ends the spin loop and it returns 0 (init/shutdown of the global
    context included); the node process itself exits 0 when the bag ends."""
    import subprocess
    import sys

    from admn_ros.datasets.bags import write_bag
    from admn_ros.node_utils import run_node
    from admn_ros.nodes.bag_player import BagPlayer
    bag = write_bag(tmp_path / 'bag', _small_batch(3), rate_hz=100.0)
    start = time.monotonic()
    code = run_node(BagPlayer, ['--ros-args', '-p', f'bag_path:={bag}', '-p', 'exit_on_end:=true',
                                '-p', 'rate:=5.0'])
    assert code == 0
    assert 0.02 * 2 / 5.0 <= time.monotonic() - start < 10  # paced: 20 ms of bag at 5x
    assert not rclpy.ok()  # the global context was shut down again
    # Looping over nothing (start_offset past the end) ends instead of spinning forever.
    proc = subprocess.run([sys.executable, '-m', 'admn_ros.nodes.bag_player', '--ros-args',
                           '-p', f'bag_path:={bag}', '-p', 'exit_on_end:=true', '-p', 'loop:=true',
                           '-p', 'start_offset:=60.0'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_noise_experiment_config_with_an_rgb_only_schedule_corrupts_only_rgb(ros_context, harness,
                                                                              tmp_path):
    # The graph config's fixed levels (0.5 each) are for runs without a schedule, as it says.
    from admn_ros.graph import load_params_file
    from admn_ros.nodes.noise_injector import NoiseInjector
    from admn_ros.paths import config_dir
    fixed = load_params_file(config_dir() / 'ros' / 'noise_experiment.yaml')['noise_injector']
    assert fixed['depth.severity'] == 0.5 and fixed['audio.severity'] == 0.5
    schedule = tmp_path / 'rgb.yaml'
    schedule.write_text('tracks:\n  rgb: {kind: constant, ctype: low_light, severity: 1.0}\n')
    overrides = [Parameter(k, value=v) for k, v in fixed.items() if k != 'schedule_file']
    inj = NoiseInjector(context=ros_context, parameter_overrides=overrides + [
        Parameter('schedule_file', value=str(schedule))])
    h = harness(inj)
    levels = h.listen(DiagnosticArray, wire.CORRUPTION)
    pub = h.probe.create_publisher(Image, wire.DEPTH, 10)
    assert h.spin_until(lambda: pub.get_subscription_count() > 0)
    for k in range(3):
        pub.publish(wire.depth_msg(np.ones((8, 8), np.float32), 5_000_000_000 + k * 100_000_000))
    assert h.spin_until(lambda: len(levels) == 3)
    for record in map(wire.read_corruption, levels):
        assert record == {'rgb': ('low_light', 1.0), 'depth': ('clean', 0.0),
                          'audio': ('clean', 0.0)}, record


def test_bag_player_holds_back_recorded_fusion_outputs_unless_named(ros_context, tmp_path):
    # A bag recorded with admn_fusion's outputs (admn bag record --outputs) replayed into a live
    # graph must not publish them beside the live node's own: by default they stay in the bag;
    # naming a topic plays it.
    from types import SimpleNamespace

    from admn_ros.datasets.bags import write_bag
    from admn_ros.nodes.bag_player import BagPlayer
    from admn_ros.wire import topics as T
    from admn_ros.datasets.ros_messages.typestore import bag_messages

    bag_flavour = bag_messages()

    def outputs(stamp_ns, sample):
        inf = SimpleNamespace(class_id=1, class_name='b', score=0.9,
                              probs=np.array([0.05, 0.9, 0.05], np.float32))
        header = wire.header(stamp_ns, 'camera', bag_flavour)
        return [('/' + wire.PREDICTION, T.PREDICTION_TYPE,
                 wire.prediction_msg(inf, header, bag_flavour))]

    bag = write_bag(tmp_path / 'bag', _small_batch(3), class_names=['a', 'b', 'c'], rate_hz=20.0,
                    outputs=outputs)
    default = BagPlayer(context=ros_context, parameter_overrides=[
        Parameter('bag_path', value=str(bag)), Parameter('as_fast_as_possible', value=True)])
    named = BagPlayer(context=ros_context, parameter_overrides=[
        Parameter('bag_path', value=str(bag)), Parameter('as_fast_as_possible', value=True),
        Parameter('topics', value=['/' + wire.PREDICTION, '/ground_truth/label'])])
    try:
        assert '/' + wire.PREDICTION not in default.tracks
        assert '/ground_truth/label' in default.tracks and len(default.tracks) > 2
        assert set(named.tracks) == {'/' + wire.PREDICTION, '/ground_truth/label'}
    finally:
        default.destroy_node()
        named.destroy_node()
