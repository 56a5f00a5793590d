"""The single preprocessing path: shapes, value ranges, batch/single consistency, audio behaviour."""
import numpy as np
import pytest
import torch

from admn_ros.datasets.preprocess import DB_FLOOR, DB_MEAN, DB_STD, RGB_MEAN, RGB_STD, PreprocessConfig, Preprocessor
from admn_ros.datasets.sample import SAMPLE_RATE

FLOOR = (DB_FLOOR - DB_MEAN) / DB_STD


def _raw(n=5, size=64, seed=0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.2, 6.0, (n, size, size)).astype(np.float32)
    depth[:, :3] = np.nan
    depth[:, 3, :4] = np.inf
    return {
        'rgb': rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        'depth': depth,
        'audio': (0.3 * rng.standard_normal((n, SAMPLE_RATE))).clip(-1, 1).astype(np.float32),
        'label': np.arange(n, dtype=np.int64),
    }


def _tone(freq, amplitude, seconds=1.0):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope='module')
def pre():
    return Preprocessor()


def test_shapes_dtypes_and_only_present_modalities(pre):
    out = pre(_raw())
    assert set(out) == {'rgb', 'depth', 'audio'}
    assert out['rgb'].shape == (5, 3, 64, 64) and out['depth'].shape == (5, 1, 64, 64)
    assert out['audio'].shape == (5, 1, 64, 64)
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in out.values())
    views = pre.controller_views(_raw())
    assert views['rgb'].shape == (5, 3, 32, 32) and views['depth'].shape == (5, 1, 32, 32)
    assert views['audio'].shape == (5, 1, 32, 32)
    only_audio = pre({'audio': _raw()['audio']})
    assert set(only_audio) == {'audio'}


def test_controller_views_reuse_the_model_log_mel(pre):
    raw = _raw()
    fresh = pre.controller_views(raw)
    reused = pre.controller_views(raw, log_mel=pre(raw)['audio'])
    assert set(reused) == set(fresh)
    for m in fresh:
        assert torch.equal(reused[m], fresh[m]), m
    # The reused log-mel is really used (not recomputed from the waveform).
    other = pre.controller_views(raw, log_mel=torch.zeros_like(pre(raw)['audio']))
    assert torch.count_nonzero(other['audio']) == 0


def test_rgb_normalisation_and_resize(pre):
    white = np.full((2, 96, 128, 3), 255, np.uint8)       # non-square input: centre crop, then resize
    white[0, :, :16] = 0                                   # left band falls outside the centre crop
    out = pre({'rgb': white})['rgb']
    expected = (1 - torch.tensor(RGB_MEAN)) / torch.tensor(RGB_STD)
    assert out.shape == (2, 3, 64, 64)
    assert torch.allclose(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-5)
    black = pre({'rgb': np.zeros((1, 64, 64, 3), np.uint8)})['rgb']
    assert torch.allclose(black[0, :, 0, 0], -torch.tensor(RGB_MEAN) / torch.tensor(RGB_STD), atol=1e-6)


def test_depth_invalid_is_zero_and_range_is_clipped(pre):
    raw = _raw()
    out = pre({'depth': raw['depth']})['depth']
    assert out.min() >= 0 and out.max() <= 1
    assert (out[:, 0, :3] == 0).all()                      # NaN rows
    assert (out[:, 0, 3, :4] == 0).all()                   # inf
    beyond = np.isfinite(raw['depth']) & (raw['depth'] > PreprocessConfig().depth_max_m)
    assert (out[:, 0][torch.from_numpy(beyond)] == 1).all()
    inside = np.isfinite(raw['depth']) & ~beyond
    expected = raw['depth'][inside] / PreprocessConfig().depth_max_m
    assert np.allclose(out[:, 0].numpy()[inside], expected, atol=1e-6)
    # Nearest resizing never invents depths between an object and the background.
    big = np.full((1, 128, 128), 3.0, np.float32)
    big[0, :64] = 1.0
    values = set(np.round(pre({'depth': big})['depth'].numpy().ravel(), 5))
    assert values == {0.25, 0.75}


def test_batch_equals_single_samples(pre):
    raw = _raw(n=4, size=80, seed=3)                       # 80 -> 64 exercises the resize path
    batched, views = pre(raw), pre.controller_views(raw)
    for i in range(4):
        one = pre.sample_to_batch(rgb=raw['rgb'][i], depth=raw['depth'][i], audio=raw['audio'][i])
        single, single_views = pre(one), pre.controller_views(one)
        for m in ('rgb', 'depth', 'audio'):
            assert torch.allclose(batched[m][i], single[m][0], atol=1e-4), m
            assert torch.allclose(views[m][i], single_views[m][0], atol=1e-4), m


def test_log_mel_tracks_loudness(pre):
    quiet, loud = _tone(1000, 0.1), _tone(1000, 0.4)
    mel = pre({'audio': np.stack([quiet, loud])})['audio'][:, 0]
    peak = mel[:, :, 10:50].mean(-1).argmax(-1)
    assert peak[0] == peak[1]
    # 4x amplitude = +12.04 dB at every frame of the tone's band.
    gain_db = (mel[1, peak[1], 5:60] - mel[0, peak[0], 5:60]) * DB_STD
    assert torch.allclose(gain_db, torch.full_like(gain_db, 12.04), atol=0.3)
    # A full-scale sine peaks near 0 dB (normalised value (0 - DB_MEAN) / DB_STD).
    full = pre({'audio': _tone(1000, 1.0)[None]})['audio'][0, 0]
    assert -2.0 < float(full.max()) * DB_STD + DB_MEAN <= 0.5


def test_log_mel_tracks_pitch_and_silence_is_the_floor(pre):
    rising = np.stack([_tone(f, 0.5) for f in (300, 1200, 4000)])
    bins = pre({'audio': rising})['audio'][:, 0, :, 20:40].mean(-1).argmax(-1)
    assert bins[0] < bins[1] < bins[2]
    silence = pre({'audio': np.zeros((1, SAMPLE_RATE), np.float32)})['audio']
    assert torch.allclose(silence, torch.full_like(silence, FLOOR))


def _reference_log_mel(wave: np.ndarray, cfg: PreprocessConfig, dtype) -> np.ndarray:
    """The log-mel as the docstring defines it, written independently: torch.stft in float32
    (the formulation training used before the numpy front-end) or a float64 numpy DFT."""
    from admn_ros.datasets.preprocess import mel_filterbank
    bank = mel_filterbank(cfg.n_fft, cfg.n_mels)
    length = cfg.clip_samples
    wave = np.pad(wave[:, :length], ((0, 0), (0, max(0, length - wave.shape[1]))))
    if dtype == torch.float32:
        window = torch.hann_window(cfg.n_fft, periodic=True)
        spec = torch.stft(torch.from_numpy(wave), cfg.n_fft, cfg.hop_length, window=window,
                          center=True, pad_mode='constant', return_complex=True)
        power = (spec.abs() ** 2 / (float(window.sum()) / 2) ** 2).numpy()      # [B, bins, F]
        mel = np.einsum('mk,bkf->bmf', bank, power)
    else:
        n = np.arange(cfg.n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.n_fft)
        padded = np.pad(wave.astype(np.float64), ((0, 0), (cfg.n_fft // 2, cfg.n_fft // 2)))
        starts = range(0, padded.shape[1] - cfg.n_fft + 1, cfg.hop_length)
        frames = np.stack([padded[:, s:s + cfg.n_fft] for s in starts], axis=1) * window
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2 / (window.sum() / 2) ** 2
        mel = np.einsum('mk,bfk->bmf', bank.astype(np.float64), power)
    db = 10 * np.log10(np.maximum(mel, 10 ** (DB_FLOOR / 10)))
    db = np.pad(db, ((0, 0), (0, 0), (0, max(0, cfg.n_frames - db.shape[-1]))),
                constant_values=DB_FLOOR)[..., :cfg.n_frames]
    return ((db - DB_MEAN) / DB_STD)[:, None]


@pytest.mark.parametrize('cfg', [PreprocessConfig(),
                                 PreprocessConfig(n_fft=400, hop_length=160, n_mels=40,
                                                  n_frames=120, clip_seconds=0.7)],
                         ids=['default', 'other-geometry'])
def test_log_mel_equals_the_reference_formulation(cfg):
    rng = np.random.default_rng(3)
    noise = (0.3 * rng.standard_normal((3, SAMPLE_RATE + 500))).clip(-1, 1).astype(np.float32)
    noise[1, 4000:] *= 1e-4                                     # quiet tail, near the floor
    short = np.zeros_like(noise[:1])
    short[0, :5000] = noise[0, :5000]                          # zero padded clip
    waves = np.concatenate([noise, short])
    out = Preprocessor(cfg).log_mel(waves)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert out.shape == (4, 1, cfg.n_mels, cfg.n_frames)
    assert np.abs(out.numpy() - _reference_log_mel(waves, cfg, torch.float32)).max() < 1e-5
    # A pure full-scale tone spans ~80 dB within one frame, where float32 FFTs round
    # differently: there the float64 reference is the arbiter.
    tone = _tone(440, 0.999)[None]
    exact = _reference_log_mel(tone, cfg, np.float64)
    assert np.abs(Preprocessor(cfg).log_mel(tone).numpy() - exact).max() < 1e-5


def test_audio_is_padded_and_cropped_to_the_clip(pre):
    tone = _tone(800, 0.5, seconds=2.0)
    cropped = pre({'audio': tone[None]})['audio']
    assert torch.allclose(cropped, pre({'audio': tone[None, :SAMPLE_RATE]})['audio'])
    half = pre({'audio': tone[None, :SAMPLE_RATE // 2]})['audio'][0, 0]
    assert torch.allclose(half[:, -20:], torch.full_like(half[:, -20:], FLOOR))   # padded end is silent
    assert half[:, 5:25].max() > 0


def test_sample_to_batch_converts_and_validates(pre):
    pcm = (np.full(SAMPLE_RATE, 16384, np.int16))
    batch = pre.sample_to_batch(audio=pcm, label=3)
    assert batch['audio'].shape == (1, SAMPLE_RATE) and batch['audio'].dtype == np.float32
    assert np.allclose(batch['audio'], 0.5) and batch['label'].tolist() == [3]
    with pytest.raises(ValueError):
        pre.sample_to_batch(rgb=np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError):
        pre.sample_to_batch(depth=np.zeros((8, 8, 1), np.float32))
    with pytest.raises(ValueError):
        pre.sample_to_batch()


def test_bad_batches_raise_clear_errors(pre):
    raw = _raw(n=2)
    with pytest.raises(ValueError, match='rgb'):
        pre({'rgb': raw['rgb'].astype(np.float32)})
    with pytest.raises(ValueError, match='depth'):
        pre({'depth': raw['depth'][..., None]})
    with pytest.raises(ValueError, match='batch size'):
        pre({'rgb': raw['rgb'], 'audio': raw['audio'][:1]})
    with pytest.raises(ValueError, match='modalities'):
        pre({'label': raw['label']})
    with pytest.raises(ValueError):
        PreprocessConfig(n_mels=400)
