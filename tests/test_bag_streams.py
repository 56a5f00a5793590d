"""`read_streams`: a bag's decoded streams before synchronisation, the one way into a bag's
contents for `read_bag` and `admn data from-bag`."""
import ast
import inspect

import numpy as np

from admn_ros import wire
from admn_ros.datasets import from_bag
from admn_ros.datasets.bags import (CUSTOM_RATE_HZ, DEFAULT_START_NS, read_streams, write_bag)
from admn_ros.datasets.corruptions import CORRUPTION_TYPES
from admn_ros.wire import topics as T
from admn_ros.datasets.ros_messages.typestore import bag_messages
from tests.test_bags import CLASSES, make_batch, write_raw_bag


def test_every_written_stream_comes_back_with_its_counts_stamps_and_class_names(tmp_path):
    n, period = 5, 50_000_000
    batch = make_batch(n, t=800)                      # 0.05 s clips fit a 20 Hz period
    path = write_bag(tmp_path / 'bag', batch, class_names=CLASSES, rate_hz=20.0, audio_chunk=200)
    got = read_streams(path)

    assert sorted(got.streams) == ['audio', 'corruption', 'depth', 'label', 'rgb']
    stamps = [DEFAULT_START_NS + i * period for i in range(n)]
    for key, items in got.streams.items():
        assert [s for _, s, _ in items] == stamps, key     # chunks joined: one clip per sample
        assert [t for t, _, _ in items] == stamps, key     # log time == stamp as written
    np.testing.assert_array_equal(np.stack([v for _, _, v in got.streams['rgb']]), batch['rgb'])
    np.testing.assert_array_equal(np.stack([v for _, _, v in got.streams['depth']]), batch['depth'])
    assert [v for _, _, v in got.streams['label']] == batch['label'].tolist()
    audio = np.stack([v for _, _, v in got.streams['audio']])
    assert audio.shape == batch['audio'].shape
    assert np.max(np.abs(audio - batch['audio'])) <= 1 / 32768 + 1e-7
    rgb_types = [v['rgb'][0] for _, _, v in got.streams['corruption']]
    assert rgb_types == [CORRUPTION_TYPES['rgb'][c] for c in batch['ctype_rgb']]
    assert got.class_names() == CLASSES == got.class_names(every_label_id=True)
    assert got.start_ns == DEFAULT_START_NS and got.custom_data[CUSTOM_RATE_HZ] == '20.0'
    assert got.undecodable == {}

    # A rolling window gives one window per audio message, each at most the window long.
    windows = read_streams(path, audio_window=300).streams['audio']
    assert len(windows) == n * 4
    assert [len(v) for _, _, v in windows[:4]] == [200, 300, 300, 300]
    np.testing.assert_array_equal(windows[3][2], audio[0][-300:])


def test_class_names_from_label_messages_when_the_metadata_has_none(tmp_path):
    flavour = bag_messages()
    labels = [(1, 'idle'), (3, ''), (1, 'idle')]      # class 3 is never named
    items = [(T.LABEL_TOPIC, T.DIAGNOSTIC_ARRAY_TYPE, 10**9 * (k + 1),
              wire.label_msg(10**9 * (k + 1), c, name, flavour=flavour))
             for k, (c, name) in enumerate(labels)]
    got = read_streams(write_raw_bag(tmp_path / 'bag', items))
    assert [v for _, _, v in got.streams['label']] == [1, 3, 1]
    assert got.label_names == {1: 'idle'}
    assert got.class_names() == ['0', 'idle']                          # what read_bag reports
    assert got.class_names(every_label_id=True) == ['0', 'idle', '2', '3']   # what from-bag needs


def test_from_bag_reads_bags_only_through_public_names():
    tree = ast.parse(inspect.getsource(from_bag))
    bags_module = 'admn_ros.datasets.bags'
    imported = [a.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == bags_module
                for a in node.names]
    assert 'read_streams' in imported
    assert [name for name in imported if name.startswith('_')] == []
    # No module import either, which would let `bags._helper` in by attribute.
    assert not any(a.name == bags_module for node in ast.walk(tree)
                   if isinstance(node, ast.Import) for a in node.names)
