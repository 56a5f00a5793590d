"""``admn bag``: record -> info -> offline eval; a robot-style bag (other topic names, no labels,
continuous audio_common microphone) gives a prediction-only report; record -> offline and -> ROS
eval agree frame by frame, for a recorded bag and for a foreign-named one replayed with remapping.
"""
import itertools
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from admn_ros import wire
from admn_ros.cli import main as admn
from admn_ros.datasets.bags import read_bag
from admn_ros.wire import topics as T
from admn_ros.datasets.ros_messages.typestore import bag_messages, make_typestore

START = 1_700_000_000_000_000_000
_ids = itertools.count()


def write_raw_bag(path, items, storage='mcap'):
    """``items``: (topic, type, log time ns, rosbags message); written in log-time order."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    store = make_typestore()
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    conns = {}
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        for topic, msgtype, t, msg in sorted(items, key=lambda x: x[2]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], t, store.serialize_cdr(msg, msgtype))
    return path


def robot_bag(path, *, seconds=2.0, fps=15.0, mic_rate=44100, chunk=1024, seed=0):
    """What a robot records: a bgr8 camera and a 16UC1 depth camera under its own names, a
    continuous audio_common microphone in 1024-sample chunks at 44.1 kHz, an unrelated topic,
    no label topic. Depth frames lag the colour ones by 3 ms."""
    bag, rng = bag_messages(), np.random.default_rng(seed)
    items = []
    for k in range(int(seconds * fps)):
        t = START + int(round(k * 1e9 / fps))
        bgr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        items.append(('/cam/image_raw', T.IMAGE_TYPE, t, wire.image_msg(bgr, 'bgr8', t, 'cam', bag)))
        depth = rng.uniform(0.4, 3.5, (48, 64)).astype(np.float32)
        items.append(('/cam/depth/image_rect_raw', T.IMAGE_TYPE, t + 3_000_000,
                      wire.depth_msg(depth, t + 3_000_000, encoding='16UC1', flavour=bag)))
        text = bag.cls('std_msgs/msg/String')(data=f'status {k}')
        items.append(('/robot/status', 'std_msgs/msg/String', t, text))
    info = SimpleNamespace(channels=1, sample_rate=mic_rate, sample_format='S16LE',
                           coding_format='wave', bitrate=0)
    items.append(('/mic/audio_info', T.AUDIO_INFO_TYPE, START, wire.audio_info_msg(info, bag)))
    wave = (0.3 * np.sin(np.arange(int(seconds * mic_rate)) * 0.05)).astype(np.float32)
    for a in range(0, len(wave) - chunk + 1, chunk):
        t = START + int(round(a * 1e9 / mic_rate))
        items.append(('/mic/audio_stamped', T.AUDIO_STAMPED_TYPE, t,
                      wire.audio_stamped_msg(wave[a:a + chunk], t, flavour=bag)))
    return write_raw_bag(path, items)


def assert_png(path):
    from matplotlib.image import imread
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', path
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0.01   # something was drawn


SCHEDULE = 'tracks:\n  rgb: {kind: step, t: 1.0, before: [clean, 0.0], after: [low_light, 1.0]}\n'


def record(tmp_path, name='bag', duration='2', schedule=SCHEDULE):
    sched = tmp_path / 'schedule.yaml'
    sched.write_text(schedule)
    bag = tmp_path / name
    assert admn(['bag', 'record', '--dataset', 'synthetic', '--schedule', str(sched),
                 '--duration', duration, '--rate', '10', '--out', str(bag)]) == 0
    return bag


def test_record_with_outputs_stores_the_typed_messages_and_rosbags_reads_them(tmp_path):
    """``--outputs``: admn_fusion's four admn_msgs outputs per sample, stamped like it, with their
    definitions in the bag; rosbags decodes them from the .msg text (no admn_msgs build used),
    and the allocation moves layers off the camera once it goes dark (schedule: t >= 1 s)."""
    from rosbags.rosbag2 import Reader
    from admn_ros.datasets.ros_messages.typestore import make_typestore
    sched = tmp_path / 'schedule.yaml'
    sched.write_text(SCHEDULE)
    bag = tmp_path / 'bag'
    assert admn(['bag', 'record', '--dataset', 'synthetic', '--schedule', str(sched),
                 '--duration', '2', '--rate', '10', '--out', str(bag), '--outputs',
                 '--budget', '0.33', '--storage', 'sqlite3']) == 0
    store = make_typestore()
    got = {topic: [] for topic in T.OUTPUT_TYPES}
    labels = []
    with Reader(bag) as reader:
        types = {c.topic: (c.msgtype, c.msgdef.data, c.digest) for c in reader.connections}
        for topic, msgtype in T.OUTPUT_TYPES.items():
            recorded, definition, digest = types['/' + topic]
            assert recorded == msgtype and digest == store.hash_rihs01(msgtype)
        assert 'uint16[] layers' in types['/' + T.ALLOCATION][1]
        for conn, t, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == T.LABEL_TOPIC:
                labels.append(wire.read_label(msg)[0])
            elif conn.topic.lstrip('/') in got:
                assert wire.header_stamp_ns(msg) == t
                got[conn.topic.lstrip('/')].append(msg)
    assert all(len(msgs) == 20 for msgs in got.values())
    allocs = [wire.read_allocation(m) for m in got[T.ALLOCATION]]
    assert all(a['spent'] <= 0.33 + 1e-6 and a['fraction'] == 0.33 for a in allocs)
    rgb = [a['layers']['rgb'] for a in allocs]
    assert np.mean(rgb[10:]) < np.mean(rgb[:10])          # dark camera: fewer layers
    dark_quality = [wire.read_quality(m)['rgb'] for m in got[T.QUALITY]]
    assert np.mean(dark_quality[10:]) < np.mean(dark_quality[:10])
    right = [int(m.class_id) == c for m, c in zip(got[T.PREDICTION], labels)]
    assert sum(right) >= 14                               # the shipped model, 20 samples
    assert all(wire.read_inference(m)['gflops'] > 0 for m in got[T.INFERENCE])


@pytest.mark.slow
def test_record_info_and_offline_eval(tmp_path, capsys):
    from admn_ros.bag_report import summary_figure
    from admn_ros.bag_tools import info
    bag = record(tmp_path)
    data = info(bag)
    counts = {t['topic']: t['count'] for t in data['topics']}
    assert counts == {T.RGB_TOPIC: 20, T.DEPTH_TOPIC: 20, T.AUDIO_TOPIC: 20, T.LABEL_TOPIC: 20,
                      T.CORRUPTION_TOPIC: 20}
    assert data['storage'] == 'mcap' and data['duration_s'] == pytest.approx(1.9)
    assert data['custom_data']['admn_ros.dataset'] == 'synthetic'
    assert 'low_light' in data['custom_data']['admn_ros.schedule']
    capsys.readouterr()
    assert admn(['bag', 'info', str(bag)]) == 0
    printed = capsys.readouterr().out
    assert '/ground_truth/label' in printed and 'sensor_msgs/msg/Image' in printed

    out = tmp_path / 'eval'
    assert admn(['bag', 'eval', str(bag), '--policies', 'admn,full', '--budgets', '0.5,1',
                 '--out', str(out)]) == 0
    report = json.loads((out / 'offline.json').read_text())
    assert report['labelled'] and report['frames'] == 20 and report['dataset'] == 'synthetic'
    assert report['checkpoint'].endswith('synthetic.pt')   # the shipped default of the bag
    cells = {(c['policy'], c['budget']): c for c in report['cells']}
    assert set(cells) == {('admn', 0.5), ('admn', 1.0), ('full', 0.5), ('full', 1.0)}
    for c in cells.values():
        frames = c['frames']
        assert len(frames) == 20 and c['matched'] == 20
        assert c['accuracy'] == np.mean([f['correct'] for f in frames])
        # The recorded corruption came back per frame: clean for 1 s, then a dark camera.
        assert [f['levels']['rgb'][0] for f in frames] == ['clean'] * 10 + ['low_light'] * 10
        assert [p['label'] for p in c['analysis']['phases']] == ['clean', 'rgb low_light 1.0']
    assert cells['full', 0.5]['mean_layers'] == {'rgb': 12.0, 'depth': 12.0, 'audio': 12.0}
    half = cells['admn', 0.5]
    assert sum(half['mean_layers'].values()) <= 18.0 + 1e-9   # half of 3 x 12 layers
    assert half['mean_gflops'] < cells['full', 0.5]['mean_gflops']
    md = (out / 'offline_report.md').read_text()
    assert '| admn | 0.5 | 20 |' in md and 'While rgb was degraded' in md
    for png in ['offline_summary.png', 'offline_timeline_admn_0.5.png', 'offline_timeline_full_1.png']:
        assert_png(out / png)
    lines = summary_figure(report).axes[0].get_lines()
    assert [line.get_label() for line in lines] == ['admn', 'full']
    assert list(lines[0].get_ydata()) == [cells['admn', 0.5]['accuracy'], cells['admn', 1.0]['accuracy']]


def test_recording_refuses_what_a_bag_cannot_hold(tmp_path, capsys):
    (tmp_path / 'taken').mkdir()
    assert admn(['bag', 'record', '--dataset', 'synthetic', '--out', str(tmp_path / 'taken')]) == 2
    assert 'exists' in capsys.readouterr().err
    (tmp_path / 'silent.yaml').write_text('events:\n  - [0.5, depth, silent, 1]\n')
    assert admn(['bag', 'record', '--dataset', 'synthetic', '--schedule', str(tmp_path / 'silent.yaml'),
                 '--duration', '1', '--out', str(tmp_path / 'silent')]) == 2
    assert 'silences depth at 0.5 s' in capsys.readouterr().err
    assert not (tmp_path / 'silent').exists()


def test_audio_window_cuts_a_continuous_stream_per_frame(tmp_path):
    """read_bag(audio_window=n): each frame gets the last n samples up to the audio chunk matched
    with it, as the fusion node's rolling window would hand it over."""
    bag, rng = bag_messages(), np.random.default_rng(2)
    wave = np.round(rng.uniform(-0.5, 0.5, 16000 * 2) * 32767) / 32768   # exact in 16-bit PCM
    items = []
    for a in range(0, len(wave), 1600):          # 0.1 s chunks, back to back
        t = START + a * 62_500
        items.append((T.AUDIO_TOPIC, T.IMAGE_TYPE, t, wire.audio_msg(wave[a:a + 1600], t, flavour=bag)))
    for k in range(20):                           # frames 30 ms after each chunk starts
        t = START + k * 100_000_000 + 30_000_000
        items.append(('/cam', T.IMAGE_TYPE, t, wire.rgb_msg(np.full((8, 8, 3), k, np.uint8), t,
                                                             flavour=bag)))
    path = write_raw_bag(tmp_path / 'stream', items)
    whole = read_bag(path, topics={'rgb': '/cam'})
    assert len(whole.stamps_ns) == 1            # one long clip: only one frame finds audio
    got = read_bag(path, topics={'rgb': '/cam'}, audio_window=8000)
    assert len(got.stamps_ns) == 20 and got.batch['audio'].shape == (20, 8000)
    for k in range(20):
        end = (k + 1) * 1600
        want = wave[max(0, end - 8000):end]
        np.testing.assert_array_equal(got.batch['audio'][k, :len(want)], want.astype(np.float32))
        assert not got.batch['audio'][k, len(want):].any()     # short windows padded at the end
        assert got.batch['rgb'][k, 0, 0, 0] == k


@pytest.mark.slow
def test_robot_bag_without_labels_gives_a_prediction_only_report(tmp_path, capsys):
    bag = robot_bag(tmp_path / 'robot')
    out = tmp_path / 'eval'
    # Under its own names the bag holds nothing this model reads: a clear one-line error.
    assert admn(['bag', 'eval', str(bag), '--dataset', 'synthetic', '--out', str(out)]) == 2
    assert 'has no' in capsys.readouterr().err
    assert admn(['bag', 'eval', str(bag), '--rgb', '/cam/image_raw', '--out', str(out)]) == 2
    assert 'does not say which dataset' in capsys.readouterr().err
    assert admn(['bag', 'eval', str(bag), '--dataset', 'synthetic', '--rgb', '/cam/missing',
                 '--out', str(out)]) == 2
    assert '/cam/missing is not in the bag' in capsys.readouterr().err

    assert admn(['bag', 'eval', str(bag), '--dataset', 'synthetic', '--policies', 'admn,heuristic',
                 '--budgets', '0.5', '--rgb', '/cam/image_raw', '--depth', '/cam/depth/image_rect_raw',
                 '--audio', '/mic/audio_stamped', '--audio-info', '/mic/audio_info',
                 '--out', str(out)]) == 0
    report = json.loads((out / 'offline.json').read_text())
    assert not report['labelled'] and not report['corruption_recorded']
    assert report['modalities'] == ['rgb', 'depth', 'audio']
    assert report['frames'] == 30                # every camera frame found depth and a mic window
    names = report['class_names']
    for cell in report['cells']:
        assert cell['accuracy'] is None and cell['matched'] == 0
        assert cell['timing']['frames_per_s'] > 0 and cell['timing']['model_ms_per_frame'] > 0
        assert len(cell['frames']) == 30
        for f in cell['frames']:
            assert f['correct'] is None and f['label'] is None
            assert names[f['predicted']] == f['class_name'] and 0 < f['score'] <= 1
            assert set(f['layers']) == {'rgb', 'depth', 'audio'}
            assert sum(f['layers'].values()) <= 18 and f['gflops'] > 0
    md = (out / 'offline_report.md').read_text()
    assert 'no label topic: predictions, allocations and timings only' in md
    # Through ROS: bag_player plays the named topics under the nodes' names, nothing else.
    from admn_ros.bag_tools import replay_plan
    topics = {'rgb': '/cam/image_raw', 'depth': '/cam/depth/image_rect_raw',
              'audio': '/mic/audio_stamped', 'audio_info': '/mic/audio_info'}
    # AudioDataStamped goes with its stream's AudioInfo (bag_player offers it latched).
    plan = replay_plan(bag, ('rgb', 'depth', 'audio'), topics, audio_common=True)
    assert plan['play'] == ['/cam/image_raw', '/cam/depth/image_rect_raw', '/mic/audio_stamped',
                            '/mic/audio_info']
    assert sorted(plan['remappings']) == ['/cam/depth/image_rect_raw:=/camera/depth/image',
                                          '/cam/image_raw:=/camera/color/image_raw',
                                          '/mic/audio_info:=/audio/audio_info',
                                          '/mic/audio_stamped:=/audio/audio_stamped']
    assert plan['audio_input'] == 'audio_common' and plan['expected_frames'] == 30
    assert plan['modalities'] == ['rgb', 'depth', 'audio'] and plan['notes'] == []
    assert not plan['labelled']
    without = replay_plan(bag, ('rgb', 'depth', 'audio'), topics, audio_common=False)
    assert without['modalities'] == ['rgb', 'depth'] and 'audio_common_msgs' in without['notes'][0]
    assert '/mic/audio_info' not in without['play']
    # Without its AudioInfo the stream cannot be decoded: not replayed, and the note says why.
    no_info = replay_plan(bag, ('rgb', 'depth', 'audio'),
                          {k: v for k, v in topics.items() if k != 'audio_info'}, audio_common=True)
    assert no_info['modalities'] == ['rgb', 'depth'] and no_info['audio_input'] == 'image'
    assert no_info['play'] == ['/cam/image_raw', '/cam/depth/image_rect_raw']
    assert 'AudioInfo topic (name it with --audio-info)' in no_info['notes'][0]
    assert 'Predicted most often:' in md and '| - |' in md     # no accuracy in the table
    assert_png(out / 'offline_summary.png')
    assert_png(out / 'offline_timeline_heuristic_0.5.png')


# --------------------------------------------------------------------------- through ROS
@pytest.fixture
def own_domain(monkeypatch):
    """A ROS domain of this process's own for the graph's child processes (their /clock is
    global), clear of conftest's per-worker ones."""
    pytest.importorskip('rclpy')
    monkeypatch.setenv('ROS_DOMAIN_ID', str(110 + os.getpid() % 50))
    return f'bagtest_{os.getpid()}_{next(_ids)}'


def check_agreement(out, frames):
    agreement = json.loads((out / 'agreement.json').read_text())
    (cell,) = agreement['cells']
    assert cell['offline_frames'] == cell['ros_frames'] == cell['common_frames'] == frames, cell
    assert cell['same_class'] == cell['same_layers'] == frames, cell
    assert agreement['exact'], agreement
    return cell


@pytest.mark.ros
def test_recorded_bag_offline_and_through_ros_agree_exactly(tmp_path, own_domain):
    bag = record(tmp_path, duration='1.5')
    out = tmp_path / 'eval'
    assert admn(['bag', 'eval', str(bag), '--policies', 'admn', '--budgets', '0.5', '--through-ros',
                 '--compare', '--namespace', own_domain, '--out', str(out)]) == 0
    cell = check_agreement(out, 15)
    assert cell['offline_accuracy'] == cell['ros_accuracy'] is not None
    ros = json.loads((out / 'ros.json').read_text())
    (rc,) = ros['cells']
    assert rc['counts']['drops'] == 0 and rc['counts']['unmatched_predictions'] == 0
    assert rc['timing']['model_ms_p50'] > 0 and rc['timing']['wall_s'] > 0
    assert [p['label'] for p in rc['analysis']['phases']] == ['clean', 'rgb low_light 1.0']
    assert 'through ROS' in (out / 'ros_report.md').read_text()
    assert_png(out / 'ros_timeline_admn_0.5.png')


@pytest.mark.ros
def test_foreign_topic_names_are_remapped_for_the_graph(tmp_path, own_domain):
    """A bag under a robot's names, without labels, whole 1 s clips on an Image audio topic:
    bag_player republishes the mapped topics under the names admn_fusion reads."""
    from admn_ros.datasets.registry import load_dataset
    bag, data = bag_messages(), load_dataset('synthetic', 'test', size=8).arrays
    items = [('/robot/status', 'std_msgs/msg/String', START, bag.cls('std_msgs/msg/String')(data='x'))]
    for k in range(8):
        t = START + k * 200_000_000
        items += [('/front/rgb', T.IMAGE_TYPE, t, wire.rgb_msg(data['rgb'][k], t, flavour=bag)),
                  ('/front/depth', T.IMAGE_TYPE, t,
                   wire.depth_msg(data['depth'][k], t, encoding='16UC1', flavour=bag)),
                  ('/mic/pcm', T.IMAGE_TYPE, t, wire.audio_msg(data['audio'][k], t, flavour=bag))]
    path = write_raw_bag(tmp_path / 'foreign', items)
    out = tmp_path / 'eval'
    assert admn(['bag', 'eval', str(path), '--dataset', 'synthetic', '--policies', 'heuristic',
                 '--budgets', '0.33', '--rgb', '/front/rgb', '--depth', '/front/depth',
                 '--audio', '/mic/pcm', '--through-ros', '--compare', '--namespace', own_domain,
                 '--out', str(out)]) == 0
    cell = check_agreement(out, 8)
    assert cell['offline_accuracy'] is None and cell['ros_accuracy'] is None
    ros = json.loads((out / 'ros.json').read_text())
    assert not ros['labelled'] and ros['modalities'] == ['rgb', 'depth', 'audio']
    assert 'no label topic' in (out / 'ros_report.md').read_text()
