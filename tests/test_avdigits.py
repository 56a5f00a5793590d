"""AV-digits: label pairing, determinism, speaker-held-out splits, shapes, data-root handling."""
import numpy as np
import pytest

from admn_ros.datasets import avdigits as av
from admn_ros.paths import checkout_root

ROOT = av.resolve_data_root()
pytestmark = pytest.mark.skipif(not (ROOT / 'fsdd').is_dir(),
                                reason=f'AV-digits data not found at {ROOT}')


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('ADMN_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def test_pairs_agree_on_labels_and_split_sizes():
    sizes = {}
    for split in av.SPLITS:
        pairs = av.pair_avdigits(split, seed=0)
        np.testing.assert_array_equal(pairs.image_labels, pairs.audio_labels)
        assert len(np.unique(pairs.image_index)) == len(pairs.image_index)   # distinct images
        assert np.bincount(pairs.audio_labels, minlength=10).min() > 0
        sizes[split] = len(pairs.recordings)
    assert sizes == {'train': 2000, 'val': 500, 'test': 500}


def test_speakers_are_held_out():
    speakers = {s: set(av.pair_avdigits(s).speakers) for s in av.SPLITS}
    assert speakers['train'].isdisjoint(speakers['val'])
    assert speakers['train'].isdisjoint(speakers['test'])
    assert speakers['val'].isdisjoint(speakers['test'])
    assert speakers['test'] == set(av.SPEAKER_SPLITS['test'])
    all_fsdd = {p.stem.split('_')[1] for p in (ROOT / 'fsdd' / 'recordings').glob('*.wav')}
    assert set().union(*speakers.values()) == all_fsdd            # every speaker used once


def test_val_and_test_images_are_disjoint_halves_of_t10k():
    val = av.pair_avdigits('val').image_index
    test = av.pair_avdigits('test').image_index
    assert val.max() < 5000 <= test.min()


def test_pairing_is_deterministic_by_seed():
    a, b, c = (av.pair_avdigits('train', seed=s) for s in (0, 0, 1))
    assert a.recordings == b.recordings
    np.testing.assert_array_equal(a.image_index, b.image_index)
    assert a.recordings != c.recordings
    assert not np.array_equal(a.image_index, c.image_index)


def test_loaded_samples_match_their_sources(cache):
    batch, names = av.load_avdigits('test', seed=4)
    pairs = av.pair_avdigits('test', seed=4)
    assert names == av.CLASS_NAMES and len(names) == 10
    assert sorted(batch) == ['audio', 'label', 'rgb']             # no depth
    n = len(pairs.recordings)
    assert batch['rgb'].shape == (n, 28, 28, 3) and batch['rgb'].dtype == np.uint8
    assert batch['audio'].shape == (n, 16000) and batch['audio'].dtype == np.float32
    assert batch['label'].dtype == np.int64
    np.testing.assert_array_equal(batch['label'], pairs.audio_labels)
    assert np.all(batch['rgb'][..., 0] == batch['rgb'][..., 2])    # grey replicated
    assert np.abs(batch['audio']).max() <= 1.0

    images, labels = av.load_mnist(ROOT, 't10k')
    for i in (0, 17, n - 1):
        np.testing.assert_array_equal(batch['rgb'][i, ..., 1], images[pairs.image_index[i]])
        assert labels[pairs.image_index[i]] == batch['label'][i]
        rec = pairs.recordings[i]
        assert rec.digit == batch['label'][i] and rec.speaker in av.SPEAKER_SPLITS['test']
        np.testing.assert_array_equal(batch['audio'][i], av.decode_clip(rec.path))


def test_cache_hit_gives_identical_arrays(cache, monkeypatch):
    first, _ = av.load_avdigits('val', seed=2)
    assert len(list(cache.glob('avdigits_audio_*.npy'))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError('audio decoded despite a cache hit')

    monkeypatch.setattr(av, 'decode_clip', no_decoding)
    second, _ = av.load_avdigits('val', seed=2)
    np.testing.assert_array_equal(first['audio'], second['audio'])
    other, _ = av.load_avdigits('val', seed=3)       # same clips in another order: same cache
    assert len(list(cache.glob('avdigits_audio_*.npy'))) == 1
    rows = sorted(map(bytes, first['audio'][:, ::97]))
    assert sorted(map(bytes, other['audio'][:, ::97])) == rows


def test_fit_clip_centres():
    np.testing.assert_array_equal(av.fit_clip(np.arange(1, 5, dtype=np.float32), 8),
                                  [0, 0, 1, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(av.fit_clip(np.arange(10, dtype=np.float32), 4), [3, 4, 5, 6])


def test_data_root_resolution_and_missing_data(tmp_path, monkeypatch):
    monkeypatch.delenv('ADMN_DATA_ROOT', raising=False)
    monkeypatch.chdir(tmp_path)                       # not relative to the working directory
    assert av.resolve_data_root() == (checkout_root().parent / 'shared' / 'data').resolve()
    monkeypatch.setenv('ADMN_DATA_ROOT', str(tmp_path / 'nowhere'))
    with pytest.raises(FileNotFoundError, match='nowhere'):
        av.load_avdigits('val')
    with pytest.raises(ValueError, match='split'):
        av.load_avdigits('dev', data_root=ROOT)
