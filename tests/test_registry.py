"""Dataset registry, on-disk cache and the preview command."""
import json

import numpy as np
import pytest

from admn_ros.datasets import cache as cache_mod
from admn_ros.datasets.cache import ArrayCache, dequantise_audio, quantise_audio
from admn_ros.datasets.registry import LoadedDataset, load_dataset, split_seed


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own cache root: nothing touches the user's ~/.cache."""
    root = tmp_path / 'cache'
    monkeypatch.setenv(cache_mod.CACHE_ENV, str(root))
    return root


def test_tensors_dataset_contract_and_determinism():
    ds = load_dataset('tensors', 'train', seed=1)
    assert isinstance(ds, LoadedDataset) and ds.name == 'tensors'
    assert ds.modalities == ('rgb', 'depth', 'audio') and len(ds) == 64
    a = ds.arrays
    assert a['rgb'].dtype == np.uint8 and a['rgb'].shape[1:] == (64, 64, 3)
    assert a['depth'].dtype == np.float32 and np.isnan(a['depth']).any()
    assert a['audio'].dtype == np.float32 and np.abs(a['audio']).max() <= 1
    assert set(a['label']) == set(range(ds.num_classes))
    assert _equal(a, load_dataset('tensors', 'train', seed=1).arrays)
    assert not np.array_equal(a['rgb'][:8], load_dataset('tensors', 'val', seed=1).arrays['rgb'][:8])
    assert len(load_dataset('tensors', 'test', size=5)) == 5


def test_unknown_names_and_bad_arguments_raise():
    with pytest.raises(ValueError, match='unknown dataset'):
        load_dataset('imagenet', 'train')
    with pytest.raises(ValueError, match='split'):
        load_dataset('tensors', 'training')
    with pytest.raises(ValueError, match='needs a path'):
        load_dataset('folder:', 'train')
    with pytest.raises(ValueError, match='size'):
        load_dataset('tensors', 'train', size=0)
    with pytest.raises(ValueError, match='seed'):
        load_dataset('tensors', 'train', seed=-1)


def test_synthetic_splits_use_disjoint_seeds(cache_dir):
    seeds = {split_seed(s, split) for s in range(3) for split in ('train', 'val', 'test')}
    assert len(seeds) == 9
    train = load_dataset('synthetic', 'train', size=6, cache=False)
    val = load_dataset('synthetic', 'val', size=6, cache=False)
    assert train.class_names == val.class_names and len(train.class_names) == 12
    assert not np.array_equal(train.arrays['rgb'], val.arrays['rgb'])
    # A smaller size is a prefix of a larger one.
    longer = load_dataset('synthetic', 'train', size=9, cache=False)
    assert _equal(train.arrays, {k: v[:6] for k, v in longer.arrays.items()})
    assert not cache_dir.exists()                           # cache=False writes nothing


def test_cache_hit_equals_miss_and_skips_generation(cache_dir, monkeypatch):
    miss = load_dataset('synthetic', 'val', seed=4, size=10).arrays
    entries = [p for p in cache_dir.iterdir() if not p.name.startswith('.')]
    assert len(entries) == 1 and (entries[0] / 'manifest.json').is_file()
    assert not [p for p in cache_dir.iterdir() if p.name.startswith('.')]     # no temp folders left
    # The audio was quantised to 16-bit PCM on the miss as well.
    assert np.array_equal(miss['audio'], dequantise_audio(quantise_audio(miss['audio'])))

    from admn_ros.datasets import synthetic
    monkeypatch.setattr(synthetic, 'generate', lambda *a, **k: pytest.fail('cache hit regenerated'))
    hit = load_dataset('synthetic', 'val', seed=4, size=10).arrays
    assert _equal(miss, hit)
    assert all(hit[k].dtype == miss[k].dtype for k in miss)


def test_cache_key_covers_config_and_split():
    store = ArrayCache()
    base = {'dataset': 'synthetic', 'config': {'image_size': 64}, 'split': 'train', 'seed': 0, 'size': 10}
    changed = [dict(base, split='val'), dict(base, seed=1), dict(base, size=11),
               dict(base, config={'image_size': 32})]
    dirs = {store.entry_dir(p) for p in [base] + changed}
    assert len(dirs) == 5
    assert store.entry_dir(dict(reversed(list(base.items())))) == store.entry_dir(base)   # order-free


def test_cache_shards_round_trip_and_damaged_entries_are_rebuilt(cache_dir):
    store = ArrayCache(shard_size=3)
    rng = np.random.default_rng(0)
    batch = {'audio': rng.uniform(-1, 1, (7, 50)).astype(np.float32),
             'depth': np.where(rng.random((7, 4, 4)) < 0.2, np.nan, 1.5).astype(np.float32),
             'label': np.arange(7, dtype=np.int64)}
    parts = {'dataset': 'unit', 'n': 7}
    entry = store.save(parts, batch)
    manifest = json.loads((entry / 'manifest.json').read_text())
    assert len(manifest['shards']) == 3 and manifest['n'] == 7
    loaded = store.load(parts)
    assert np.array_equal(loaded['depth'], batch['depth'], equal_nan=True)
    assert np.abs(loaded['audio'] - batch['audio']).max() <= 0.5 / 32767 + 1e-7
    assert loaded['audio'].dtype == np.float32

    (entry / manifest['shards'][1]).write_bytes(b'not an npz file')
    with pytest.warns(RuntimeWarning, match='unreadable'):
        assert store.load(parts) is None
    calls = []
    with pytest.warns(RuntimeWarning, match='unreadable'):
        rebuilt = store.get_or_create(parts, lambda: calls.append(1) or batch)
    assert calls == [1] and np.array_equal(rebuilt['label'], batch['label'])
    assert store.load(parts) is not None


def test_audio_outside_full_scale_is_refused():
    with pytest.raises(ValueError, match='within'):
        quantise_audio(np.array([0.5, 1.5], np.float32))
    with pytest.raises(ValueError):
        quantise_audio(np.array([np.nan], np.float32))


def test_external_loaders_are_wired_with_subsets_and_validation(monkeypatch):
    from admn_ros.datasets import avdigits, folder
    rng = np.random.default_rng(1)
    fake = {'rgb': rng.integers(0, 256, (20, 28, 28, 3), dtype=np.uint8),
            'audio': np.zeros((20, 100), np.float32), 'label': np.arange(20, dtype=np.int64) % 10}
    seen = {}

    def fake_avdigits(split, data_root=None, seed=0):
        seen.update(split=split, data_root=data_root, seed=seed)
        return dict(fake), [str(d) for d in range(10)]

    monkeypatch.setattr(avdigits, 'load_avdigits', fake_avdigits)
    ds = load_dataset('avdigits', 'test', seed=3, size=8, data_root='/somewhere')
    assert seen == {'split': 'test', 'data_root': '/somewhere', 'seed': 3}
    assert ds.modalities == ('rgb', 'audio') and len(ds) == 8
    rows = [int(np.flatnonzero((fake['rgb'] == r).all((1, 2, 3)))[0]) for r in ds.arrays['rgb']]
    assert rows == sorted(rows) and len(set(rows)) == 8        # a subset, in the loader's order
    with pytest.raises(ValueError, match='cannot take'):
        load_dataset('avdigits', 'test', size=50)

    monkeypatch.setattr(folder, 'load_folder',
                        lambda path, split, **kw: ({'audio': fake['audio'], 'label': fake['label'] + 5}, ['a', 'b']))
    with pytest.raises(ValueError, match='labels'):
        load_dataset('folder:/data/x', 'train')


def test_preview_writes_clean_and_corrupted_grids(tmp_path):
    import matplotlib.image
    from admn_ros.datasets.preview import write_preview
    paths = write_preview('tensors', tmp_path / 'preview', n=3, seed=2)
    assert [p.name for p in paths] == ['tensors_clean.png', 'tensors_corrupted.png']
    clean, corrupted = (matplotlib.image.imread(p) for p in paths)
    assert clean.shape[0] > clean.shape[1] * 0.8                # 3 rows of 3 panels
    assert clean.std() > 0.05 and not np.array_equal(clean, corrupted)
    with pytest.raises(ValueError):
        write_preview('tensors', tmp_path, n=0)
