"""``admn data from-bag``: bags written by the project's tools -> the folder format, with the
expected samples, labels and condition tags (sample rate, trigger topic, label topic or CSV,
corruption topic or CSV, mapped topic names, resize on load)."""
import numpy as np
import pytest

from admn_ros import wire
from admn_ros.cli import main as admn
from admn_ros.datasets.bags import write_schedule_bag
from admn_ros.datasets.corruptions import CORRUPTION_TYPES
from admn_ros.datasets.folder import load_folder
from admn_ros.datasets.from_bag import import_bag, read_label_ranges
from admn_ros.datasets.preprocess import shrink_to_input
from admn_ros.datasets.registry import load_dataset
from admn_ros.datasets.schedules import Schedule

START = 1_700_000_000_000_000_000
SR = 16000


def test_a_project_bag_comes_back_with_its_samples_labels_and_injector_tags(tmp_path):
    data = load_dataset('tensors', 'test', size=12)
    schedule = Schedule.scripted([(6.0, 'depth', 'blocked', 1.0)])
    bag = write_schedule_bag(tmp_path / 'bag', data, schedule, rate_hz=1.0)
    code = admn(['data', 'from-bag', str(bag), '--out', str(tmp_path / 'ds'), '--depth-format', 'npy'])
    assert code == 0
    got, classes = load_folder(tmp_path / 'ds', 'train')
    assert classes == data.class_names
    np.testing.assert_array_equal(got['label'], data.arrays['label'])
    np.testing.assert_array_equal(got['rgb'], data.arrays['rgb'])
    np.testing.assert_allclose(got['audio'], data.arrays['audio'], atol=1 / 32767)   # 16-bit PCM
    # The injector-format corruption topic became the depth tags of the last six samples.
    assert got['ctype_depth'].tolist() == [0] * 6 + [CORRUPTION_TYPES['depth'].index('blocked')] * 6
    assert got['severity_depth'].tolist() == [0.0] * 6 + [1.0] * 6
    assert not got['severity_rgb'].any()          # recorded clean
    # Every second sample at 0.5 Hz; split in time order per class.
    report = import_bag(bag, tmp_path / 'half', rate_hz=0.5, splits={'train': 0.5, 'test': 0.5})
    halves = [load_folder(tmp_path / 'half', s)[0]['label'] for s in ('train', 'test')]
    assert sorted(np.concatenate(halves).tolist()) == sorted(data.arrays['label'][::2].tolist())
    assert report.samples == {'train': 3, 'test': 3}


def robot_bag(path, *, seconds=6.0, fps=4, chunk=1600, label_changes=None):
    """A robot-like bag written with the project's message encoders: other topic names, 640x480
    frames, a continuous microphone in 0.1 s chunks, a button (Joy) as trigger, and optionally a
    label topic published only when the label changes."""
    from rosbags.rosbag2 import Writer

    from admn_ros.datasets.ros_messages.typestore import bag_messages, make_typestore
    store, flavour = make_typestore(), bag_messages()
    rng = np.random.default_rng(0)
    n = int(seconds * fps)
    frames = rng.integers(0, 256, (n, 480, 640, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 3.0, (n, 480, 640)).astype(np.float32)
    wave = (0.5 * np.sin(np.arange(int(seconds * SR)) * 2 * np.pi * 220 / SR)
            * np.linspace(0.1, 1.0, int(seconds * SR))).astype(np.float32)
    records = []
    for i in range(n):
        t = START + i * 1_000_000_000 // fps
        records.append((t, '/robot/cam', 'sensor_msgs/msg/Image', wire.rgb_msg(frames[i], t, flavour=flavour)))
        records.append((t, '/robot/depth', 'sensor_msgs/msg/Image',
                        wire.depth_msg(depths[i], t, encoding='16UC1', flavour=flavour)))
    for k in range(0, len(wave), chunk):
        t = START + k * 1_000_000_000 // SR
        records.append((t, '/robot/mic', 'sensor_msgs/msg/Image',
                        wire.audio_msg(wave[k:k + chunk], t, flavour=flavour)))
    joy = store.types['sensor_msgs/msg/Joy']
    for s in (1.5, 2.5, 3.5, 4.5, 5.5):
        t = START + int(s * 1e9)
        records.append((t + 3_000_000, '/robot/button', 'sensor_msgs/msg/Joy',
                        joy(header=wire.header(t, '', flavour), axes=np.zeros(0, np.float32),
                            buttons=np.ones(1, np.int32))))
    for s, class_id, name in label_changes or ():
        t = START + int(s * 1e9)
        records.append((t, '/robot/activity', 'diagnostic_msgs/msg/DiagnosticArray',
                        wire.label_msg(t, class_id, name, flavour=flavour)))
    records.sort(key=lambda r: r[0])
    with Writer(path, version=9) as writer:
        conns = {}
        for t, topic, msgtype, msg in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], t, store.serialize_cdr(msg, msgtype))
    return frames, depths, wave


def test_a_robot_bag_with_a_trigger_csv_labels_and_tags_and_mapped_topics(tmp_path):
    frames, depths, wave = robot_bag(tmp_path / 'bag')
    (tmp_path / 'labels.csv').write_text('start,end,label\n0,3,door\n3,6.5,bell\n')
    (tmp_path / 'conditions.csv').write_text('start,end,modality,type,severity\n4,6,rgb,low_light,0.8\n')
    code = admn(['data', 'from-bag', str(tmp_path / 'bag'), '--out', str(tmp_path / 'ds'),
                 '--trigger', '/robot/button', '--labels-csv', str(tmp_path / 'labels.csv'),
                 '--conditions-csv', str(tmp_path / 'conditions.csv'), '--classes', 'door,bell',
                 '--rgb', '/robot/cam', '--depth', '/robot/depth', '--audio', '/robot/mic',
                 '--depth-format', 'npy'])
    assert code == 0
    got, classes = load_folder(tmp_path / 'ds', 'train')
    assert classes == ['door', 'bell']
    assert got['label'].tolist() == [0, 0, 1, 1, 1]                    # at 1.5, 2.5, 3.5, 4.5, 5.5 s
    dark = CORRUPTION_TYPES['rgb'].index('low_light')
    assert got['ctype_rgb'].tolist() == [0, 0, 0, dark, dark]
    assert got['severity_rgb'].tolist() == [0, 0, 0, pytest.approx(0.8), pytest.approx(0.8)]
    for j, s in enumerate((1.5, 2.5, 3.5, 4.5, 5.5)):
        i = int(s * 4)                                                   # the frame at the trigger
        np.testing.assert_array_equal(got['rgb'][j], shrink_to_input(frames[i], 64, 'rgb'))
        expected_depth = shrink_to_input(np.round(depths[i] * 1000) / 1000, 64, 'depth')
        np.testing.assert_allclose(got['depth'][j], expected_depth, atol=1e-6)
        # The second of sound up to the end of the 0.1 s chunk that starts at the trigger.
        end = int(round((s + 0.1) * SR))
        np.testing.assert_allclose(got['audio'][j], wave[end - SR:end], atol=2 / 32767)


def test_labels_from_a_topic_published_on_change_and_skips_are_counted(tmp_path):
    robot_bag(tmp_path / 'bag', seconds=4.0, label_changes=[(0.5, 0, 'idle'), (2.0, 1, 'knock')])
    report = import_bag(tmp_path / 'bag', tmp_path / 'ds', rate_hz=2.0,
                        topics={'rgb': '/robot/cam', 'audio': '/robot/mic', 'label': '/robot/activity'},
                        image_size=32)
    got, classes = load_folder(tmp_path / 'ds', 'train')
    # Samples at 0, 0.5, ..., 3.5 s: the first second has no full audio window; 0.5 s has its label.
    assert report.skipped == {'audio window shorter than a clip': 2}
    assert classes == ['idle', 'knock'] and got['label'].tolist() == [0, 0, 1, 1, 1, 1]
    assert got['rgb'].shape == (6, 32, 32, 3) and 'depth' not in got   # only the mapped streams
    assert report.modalities == ('rgb', 'audio')


def test_bad_inputs_are_refused_in_one_line(tmp_path):
    robot_bag(tmp_path / 'bag', seconds=2.0)
    (tmp_path / 'overlap.csv').write_text('0,2,a\n1,3,b\n')
    with pytest.raises(ValueError, match='overlap'):
        read_label_ranges(tmp_path / 'overlap.csv')
    (tmp_path / 'ok.csv').write_text('0,2,a\n')
    with pytest.raises(ValueError, match='trigger topic /nothing is not in the bag'):
        import_bag(tmp_path / 'bag', tmp_path / 'x', trigger='/nothing', labels_csv=tmp_path / 'ok.csv',
                   topics={'rgb': '/robot/cam'})
    with pytest.raises(ValueError, match='not in the bag'):
        import_bag(tmp_path / 'bag', tmp_path / 'y', labels_csv=tmp_path / 'ok.csv',
                   topics={'rgb': '/camera/other'})
    (tmp_path / 'bad.csv').write_text('0,2,rgb,sunburn,0.5\n')
    with pytest.raises(ValueError, match='unknown rgb type'):
        import_bag(tmp_path / 'bag', tmp_path / 'z', labels_csv=tmp_path / 'ok.csv',
                   conditions_csv=tmp_path / 'bad.csv', topics={'rgb': '/robot/cam'})
    code = admn(['data', 'from-bag', str(tmp_path / 'bag'), '--out', str(tmp_path / 'w'),
                 '--rgb', '/robot/cam', '--splits', 'train=0.5,val=0.6'])
    assert code == 2
