"""rosbag2 write -> read round trips (mcap and sqlite3), audio_common bags, corrupt bags."""
import numpy as np
import pytest

from admn_ros.datasets.bags import (DEFAULT_START_NS, BagError, apply_schedule, read_bag, write_bag,
                                    write_schedule_bag)
from admn_ros.wire import topics as T
from admn_ros.datasets.ros_messages.header import split_stamp
from admn_ros.datasets.ros_messages.image_codec import image_fields
from admn_ros.datasets.ros_messages.typestore import make_typestore

CLASSES = ['cat', 'dog', 'bird']


def make_batch(n=5, seed=0, t=1600):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 5.0, (n, 6, 9)).astype(np.float32)
    depth[:, 0, 0] = np.nan
    return {
        'rgb': rng.integers(0, 256, (n, 8, 10, 3), dtype=np.uint8),
        'depth': depth,
        'audio': rng.uniform(-1, 1, (n, t)).astype(np.float32),
        'label': rng.integers(0, 3, n).astype(np.int64),
        'severity_rgb': rng.uniform(0, 1, n).astype(np.float32),
        'ctype_rgb': rng.integers(1, 7, n).astype(np.int64),
        'severity_audio': np.zeros(n, np.float32),
        'ctype_audio': np.zeros(n, np.int64),
    }


def assert_same_samples(got, want):
    assert sorted(got) == sorted(want)
    for key in want:
        if key == 'audio':
            assert got[key].shape == want[key].shape
            assert np.max(np.abs(got[key] - want[key])) <= 1 / 32768 + 1e-7   # int16 quantisation
        else:
            assert got[key].dtype == want[key].dtype, key
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip_all_streams(tmp_path, storage):
    batch = make_batch()
    path = write_bag(tmp_path / 'bag', batch, class_names=CLASSES, rate_hz=20.0, storage=storage)
    assert (path / 'metadata.yaml').is_file()
    assert list(path.glob('*.mcap' if storage == 'mcap' else '*.db3'))
    got = read_bag(path)
    assert_same_samples(got.batch, batch)
    np.testing.assert_array_equal(got.stamps_ns, DEFAULT_START_NS + np.arange(5) * 50_000_000)
    assert got.class_names == CLASSES
    assert got.anchor == 'rgb' and all(v == 0 for v in got.unmatched.values())


def test_header_stamp_equals_log_time_and_label_fields(tmp_path):
    from rosbags.rosbag2 import Reader

    batch = make_batch(3)
    path = write_bag(tmp_path / 'bag', batch, class_names=CLASSES, rate_hz=4.0, start_ns=10**9)
    store = make_typestore()
    seen = {}
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == t
            seen.setdefault(conn.topic, []).append(msg)
    assert {m.encoding for m in seen[T.RGB_TOPIC]} == {'rgb8'}
    assert {m.encoding for m in seen[T.DEPTH_TOPIC]} == {'32FC1'}
    assert {(m.encoding, m.height) for m in seen[T.AUDIO_TOPIC]} == {('16SC1', 1)}
    first = seen[T.LABEL_TOPIC][0].status
    assert len(first) == 1 and first[0].name == 'label'
    values = {kv.key: kv.value for kv in first[0].values}
    assert values == {'class_id': str(batch['label'][0]),
                      'class_name': CLASSES[batch['label'][0]]}
    names = [s.name for s in seen[T.CORRUPTION_TOPIC][0].status]
    assert names == ['rgb', 'audio']


def test_chunked_audio_and_16uc1_depth(tmp_path):
    batch = make_batch(4, t=1600)                   # 0.1 s clips
    path = write_bag(tmp_path / 'bag', batch, class_names=CLASSES, rate_hz=10.0,
                     audio_chunk=300, depth_encoding='16UC1', storage='sqlite3')
    got = read_bag(path).batch
    assert got['audio'].shape == batch['audio'].shape
    assert np.max(np.abs(got['audio'] - batch['audio'])) <= 1 / 32768 + 1e-7
    assert np.array_equal(np.isnan(got['depth']), np.isnan(batch['depth']))
    assert np.nanmax(np.abs(got['depth'] - batch['depth'])) <= 0.0005 + 1e-6
    with pytest.raises(ValueError, match='interleave'):
        write_bag(tmp_path / 'bag2', batch, class_names=CLASSES, rate_hz=20.0, audio_chunk=300)


def test_write_refuses_existing_path_and_bad_labels(tmp_path):
    batch = make_batch(2)
    write_bag(tmp_path / 'bag', batch, class_names=CLASSES)
    with pytest.raises(BagError, match='exists'):
        write_bag(tmp_path / 'bag', batch, class_names=CLASSES)
    with pytest.raises(ValueError, match='class names'):
        write_bag(tmp_path / 'other', batch, class_names=['only'])


def write_raw_bag(path, items, storage='mcap'):
    """items: (topic, msgtype, log time ns, message) written as given."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = make_typestore()
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {}
        for topic, msgtype, t, msg in items:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=store)
            w.write(conns[topic], t, store.serialize_cdr(msg, msgtype))
    return path


def header(store, t, frame=''):
    sec, nsec = split_stamp(t)
    return store.types['std_msgs/msg/Header'](
        stamp=store.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec), frame_id=frame)


def image(store, t, arr, encoding):
    f = image_fields(arr, encoding)
    f['data'] = np.frombuffer(f['data'], np.uint8)
    return store.types[T.IMAGE_TYPE](header=header(store, t), **f)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_audio_common_stamped_bag_with_odd_chunks(tmp_path, storage):
    import soxr

    store = make_typestore()
    rng = np.random.default_rng(1)
    rate, n, clip = 8000, 3, 800                    # 0.1 s stereo clips at 8 kHz, S16LE
    pcm = rng.integers(-20000, 20000, (n, clip, 2)).astype('<i2')
    info_msg = store.types[T.AUDIO_INFO_TYPE](channels=2, sample_rate=rate, sample_format='S16LE',
                                              bitrate=rate * 32, coding_format='wave')
    items = [(T.AUDIO_INFO_TOPIC, T.AUDIO_INFO_TYPE, 0, info_msg)]
    rgb = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    for i in range(n):
        t0 = 10**9 + i * 500_000_000
        items.append((T.RGB_TOPIC, T.IMAGE_TYPE, t0, image(store, t0, rgb[i], 'rgb8')))
        payload = pcm[i].tobytes()
        cuts = [0, 333, 1001, 2999, len(payload)]   # odd byte counts split frames
        for a, b in zip(cuts[:-1], cuts[1:]):
            t = t0 + int(round(a / 4 * 1e9 / rate))    # first (partial) frame's capture time
            data = store.types[T.AUDIO_DATA_TYPE](data=np.frombuffer(payload[a:b], np.uint8))
            msg = store.types[T.AUDIO_STAMPED_TYPE](header=header(store, t), audio=data)
            items.append((T.AUDIO_STAMPED_TOPIC, T.AUDIO_STAMPED_TYPE, t, msg))
    items.sort(key=lambda x: x[2])
    path = write_raw_bag(tmp_path / 'ac', items, storage)

    got = read_bag(path)
    mono = (pcm.astype(np.float64) / 32768.0).mean(axis=2).astype(np.float32)
    want = np.stack([soxr.resample(m, rate, 16000) for m in mono]).astype(np.float32)
    assert got.batch['audio'].shape == (n, 2 * clip)
    np.testing.assert_allclose(got.batch['audio'], want, atol=1e-6)
    np.testing.assert_array_equal(got.batch['rgb'], rgb)
    assert 'label' not in got.batch and got.class_names == []

    no_info = write_raw_bag(tmp_path / 'noinfo', items[1:], storage)
    with pytest.raises(BagError, match='AudioInfo'):
        read_bag(no_info)


def test_jittered_streams_are_matched_and_extras_counted(tmp_path):
    store = make_typestore()
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    depth = rng.uniform(1, 2, (5, 3, 3)).astype(np.float32)
    items = []
    for i in range(4):
        t = 10**9 + i * 100_000_000
        items.append((T.RGB_TOPIC, T.IMAGE_TYPE, t, image(store, t, rgb[i], 'rgb8')))
        td = t + (7 - 4 * i) * 1_000_000            # depth a few ms off, both directions
        items.append((T.DEPTH_TOPIC, T.IMAGE_TYPE, td, image(store, td, depth[i], '32FC1')))
    t_extra = 10**9 + 450_000_000                   # a depth frame no RGB frame is near
    items.append((T.DEPTH_TOPIC, T.IMAGE_TYPE, t_extra, image(store, t_extra, depth[4], '32FC1')))
    items.sort(key=lambda x: x[2])
    got = read_bag(write_raw_bag(tmp_path / 'j', items))
    np.testing.assert_array_equal(got.batch['rgb'], rgb)
    np.testing.assert_array_equal(got.batch['depth'], depth[:4])
    assert got.unmatched == {'rgb': 0, 'depth': 1}
    np.testing.assert_array_equal(got.stamps_ns, 10**9 + np.arange(4) * 100_000_000)


def test_truncated_mcap_is_a_clear_error(tmp_path):
    path = write_bag(tmp_path / 'bag', make_batch(3), class_names=CLASSES, storage='mcap')
    mcap = next(path.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match='bag'):
        read_bag(path)


def test_garbled_db3_and_missing_metadata_are_clear_errors(tmp_path):
    path = write_bag(tmp_path / 'bag', make_batch(3), class_names=CLASSES, storage='sqlite3')
    db3 = next(path.glob('*.db3'))
    data = bytearray(db3.read_bytes())
    data[:100] = bytes(100)                          # destroy the SQLite header
    db3.write_bytes(bytes(data))
    with pytest.raises(BagError, match=str(path)):
        read_bag(path)
    (path / 'metadata.yaml').unlink()
    with pytest.raises(BagError, match='metadata.yaml'):
        read_bag(path)
    with pytest.raises(FileNotFoundError):
        read_bag(tmp_path / 'nothing')


class StepSchedule:
    """Tiny stand-in for datasets.schedules: rgb noise from t = 0.2 s on."""

    def level_at(self, t):
        return {'rgb': ('gaussian_noise', 0.6) if t >= 0.2 else ('clean', 0.0),
                'depth': ('clean', 0.0)}


def test_schedule_bag_labels_follow_the_schedule(tmp_path):
    batch = {k: v for k, v in make_batch(5).items() if not k.startswith(('severity', 'ctype'))}
    path = write_schedule_bag(tmp_path / 'bag', batch, StepSchedule(), rate_hz=10.0, seed=3,
                              class_names=CLASSES)
    got = read_bag(path).batch
    np.testing.assert_array_equal(got['severity_rgb'], np.float32([0, 0, 0.6, 0.6, 0.6]))
    np.testing.assert_array_equal(got['ctype_rgb'], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(got['severity_audio'], np.zeros(5, np.float32))
    np.testing.assert_array_equal(got['rgb'][:2], batch['rgb'][:2])       # clean frames intact
    assert all(not np.array_equal(got['rgb'][i], batch['rgb'][i]) for i in range(2, 5))
    again = apply_schedule(batch, StepSchedule(), rate_hz=10.0, seed=3)   # same seed, same noise
    np.testing.assert_array_equal(again['rgb'], got['rgb'])


def test_real_schedule_object(tmp_path):
    schedules = pytest.importorskip('admn_ros.datasets.schedules')
    schedule = schedules.Schedule.scripted([(0.15, 'audio', 'muted', 1.0)])
    batch = {k: v for k, v in make_batch(3).items() if not k.startswith(('severity', 'ctype'))}
    got = read_bag(write_schedule_bag(tmp_path / 'bag', batch, schedule, rate_hz=10.0,
                                      class_names=CLASSES)).batch
    np.testing.assert_array_equal(got['ctype_audio'], [0, 0, 6])
    assert np.all(got['audio'][2] == 0) and np.any(got['audio'][1] != 0)


def test_image_audio_wins_over_audio_common_and_partial_frames_fail(tmp_path):
    from admn_ros.datasets.ros_messages.audio_codec import audio_to_image_fields

    store = make_typestore()
    wave = np.linspace(-0.5, 0.5, 320, dtype=np.float32)
    f = audio_to_image_fields(wave)
    f['data'] = np.frombuffer(f['data'], np.uint8)
    t = 10**9
    img = store.types[T.IMAGE_TYPE](header=header(store, t), **f)
    info_msg = store.types[T.AUDIO_INFO_TYPE](channels=1, sample_rate=16000, sample_format='S16LE',
                                              bitrate=0, coding_format='wave')

    def stamped(nbytes):
        data = store.types[T.AUDIO_DATA_TYPE](data=np.zeros(nbytes, np.uint8))
        return store.types[T.AUDIO_STAMPED_TYPE](header=header(store, t), audio=data)

    both = [(T.AUDIO_INFO_TOPIC, T.AUDIO_INFO_TYPE, 0, info_msg),
            (T.AUDIO_TOPIC, T.IMAGE_TYPE, t, img),
            (T.AUDIO_STAMPED_TOPIC, T.AUDIO_STAMPED_TYPE, t, stamped(640))]
    got = read_bag(write_raw_bag(tmp_path / 'both', both)).batch['audio'][0]
    assert np.max(np.abs(got - wave)) <= 1 / 32768

    partial = [both[0], (T.AUDIO_STAMPED_TOPIC, T.AUDIO_STAMPED_TYPE, t, stamped(641))]
    with pytest.raises(BagError, match='whole number'):
        read_bag(write_raw_bag(tmp_path / 'partial', partial))
