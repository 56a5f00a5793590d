"""Corruption library: monotone effects, identity at 0, labels, purity, sampling policies."""
import copy

import cv2
import numpy as np
import pytest

from admn_ros.datasets.corruptions import (CORRUPTION_TYPES, CorruptionSampler, apply_corruption,
                                  ctype_index, severity_to_snr_db)

B, H, W, T = 8, 32, 32, 4000
ALL_TYPES = [(m, c) for m, types in CORRUPTION_TYPES.items() for c in types[1:]]
LEVELS = (0.25, 0.5, 1.0)


def make_batch(n=B, h=H, w=W, t=T, seed=0):
    """Textured images, depth with a few invalid pixels, quiet tones of distinct pitch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    phase = rng.uniform(0, 6, (n, 1, 1))
    base = 120 + 60 * np.sin(xx[None] / 2.0 + phase) * np.cos(yy[None] / 3.0)
    rgb = np.clip(base[..., None] + rng.normal(0, 20, (n, h, w, 3)), 0, 255).astype(np.uint8)
    depth = rng.uniform(0.5, 4.0, (n, h, w)).astype(np.float32)
    depth[:, 0, :4] = np.nan
    time = np.arange(t) / 16000.0
    freqs = 300.0 + 125.0 * np.arange(n)
    audio = (0.05 * np.sin(2 * np.pi * freqs[:, None] * time)).astype(np.float32)
    return {'rgb': rgb, 'depth': depth, 'audio': audio, 'label': np.arange(n, dtype=np.int64) % 10}


@pytest.fixture(scope='module')
def batch():
    return make_batch()


def corrupt(batch, modality, ctype, severity, seed=1, **kw):
    return apply_corruption(batch, modality, ctype, severity, np.random.default_rng(seed), **kw)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def snr_db(clean, noisy):
    """True SNR of each clip against its clean version."""
    err = np.sum((noisy.astype(np.float64) - clean) ** 2, axis=1)
    return 10 * np.log10(np.sum(clean.astype(np.float64) ** 2, axis=1) / np.maximum(err, 1e-20))


def laplacian_var(rgb):
    return np.mean([cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
                    for im in rgb])


def valid_fraction(depth):
    return float(np.mean(np.isfinite(depth)))


def strictly_decreasing(values):
    return all(a > b for a, b in zip(values, values[1:]))


# ---- identity, dtypes, labels, purity --------------------------------------------------------

@pytest.mark.parametrize('modality,ctype', ALL_TYPES)
def test_severity_zero_is_identity_and_labelled_clean(batch, modality, ctype):
    out = corrupt(batch, modality, ctype, 0.0)
    np.testing.assert_array_equal(out[modality], batch[modality])
    assert np.all(out[f'ctype_{modality}'] == 0)
    assert np.all(out[f'severity_{modality}'] == 0)


@pytest.mark.parametrize('modality,ctype', ALL_TYPES)
def test_corruption_changes_data_keeps_dtype_sets_labels_and_never_mutates(batch, modality, ctype):
    before = copy.deepcopy(batch)
    out = corrupt(batch, modality, ctype, 0.6)
    for key in before:
        np.testing.assert_array_equal(batch[key], before[key])  # input untouched
    assert out is not batch
    assert out[modality].dtype == batch[modality].dtype
    assert out[modality].shape == batch[modality].shape
    assert not np.array_equal(out[modality], batch[modality], equal_nan=True)
    assert out[f'ctype_{modality}'].dtype == np.int64
    assert out[f'severity_{modality}'].dtype == np.float32
    assert np.all(out[f'ctype_{modality}'] == CORRUPTION_TYPES[modality].index(ctype))
    np.testing.assert_allclose(out[f'severity_{modality}'], 0.6)
    for other in set(CORRUPTION_TYPES) - {modality}:
        np.testing.assert_array_equal(out[other], batch[other])
        assert f'ctype_{other}' not in out
    if modality == 'depth':  # invalid stays invalid; no new non-finite values but NaN
        assert np.all(np.isnan(out['depth'][~np.isfinite(batch['depth'])]))
        assert not np.any(np.isinf(out['depth']))
        assert np.nanmin(out['depth']) >= 0
    if modality == 'audio':
        assert np.all(np.abs(out['audio']) <= 1.0)


def test_per_sample_types_and_severities(batch):
    ctypes = ['muted', 'clean', 'muted', 'clipping'] * 2
    sev = np.array([1.0, 0.0, 0.25, 0.5, 0.0, 0.0, 0.75, 0.3])
    out = corrupt(batch, 'audio', ctypes, sev)
    a, clean = out['audio'], batch['audio']
    np.testing.assert_array_equal(a[0], 0)                             # fully muted
    np.testing.assert_array_equal(a[[1, 4, 5]], clean[[1, 4, 5]])      # severity 0 untouched
    np.testing.assert_allclose(a[2], 0.75 * clean[2], rtol=1e-6)       # gain 1 - s
    np.testing.assert_allclose(a[6], 0.25 * clean[6], rtol=1e-6)
    assert np.abs(a[3]).max() < 0.9 * np.abs(clean[3]).max()           # clipped
    expected = [ctype_index('audio', c) if s > 0 else 0 for c, s in zip(ctypes, sev)]
    np.testing.assert_array_equal(out['ctype_audio'], expected)
    np.testing.assert_allclose(out['severity_audio'], sev.astype(np.float32))


def test_integer_type_codes_match_names(batch):
    by_name = corrupt(batch, 'rgb', 'overexposure', 0.5)
    by_code = corrupt(batch, 'rgb', ctype_index('rgb', 'overexposure'), 0.5)
    np.testing.assert_array_equal(by_name['rgb'], by_code['rgb'])


@pytest.mark.parametrize('args,match', [
    (('rgb', 'gaussian_noise', 1.5), 'severity'),
    (('rgb', 'gaussian_noise', -0.1), 'severity'),
    (('rgb', 'gaussian_noise', np.nan), 'severity'),
    (('rgb', 'gaussian_noise', np.ones(3) * 0.5), 'shape'),
    (('rgb', 'fog', 0.5), 'unknown rgb corruption'),
    (('lidar', 'gaussian_noise', 0.5), 'unknown modality'),
    (('depth', 'clean', 0.3), 'clean'),
    (('audio', ['muted'] * 3, 0.3), 'per-sample'),
    (('audio', 99, 0.3), 'out of range'),
])
def test_bad_arguments_raise(batch, args, match):
    with pytest.raises(ValueError, match=match):
        corrupt(batch, *args)


def test_bad_batches_raise(batch):
    with pytest.raises(ValueError, match='no'):
        corrupt({'rgb': batch['rgb']}, 'audio', 'muted', 0.5)
    with pytest.raises(ValueError, match='uint8'):
        corrupt({'rgb': batch['rgb'].astype(np.float32)}, 'rgb', 'gaussian_noise', 0.5)
    with pytest.raises(ValueError, match='float32'):
        corrupt({'audio': batch['audio'].astype(np.float64)}, 'audio', 'muted', 0.5)


# ---- monotone effects ---------------------------------------------------------------------

@pytest.mark.parametrize('ctype', CORRUPTION_TYPES['rgb'][1:])
def test_rgb_psnr_falls_with_severity(batch, ctype):
    values = [psnr(corrupt(batch, 'rgb', ctype, s)['rgb'], batch['rgb']) for s in LEVELS]
    assert strictly_decreasing(values), values


@pytest.mark.parametrize('ctype', ['gaussian_blur', 'motion_blur'])
def test_blur_lowers_laplacian_variance(batch, ctype):
    values = [laplacian_var(batch['rgb'])]
    values += [laplacian_var(corrupt(batch, 'rgb', ctype, s)['rgb']) for s in LEVELS]
    assert strictly_decreasing(values), values


def test_low_light_darkens_and_overexposure_brightens(batch):
    dark = [corrupt(batch, 'rgb', 'low_light', s)['rgb'].mean() for s in (0.0,) + LEVELS]
    bright = [corrupt(batch, 'rgb', 'overexposure', s)['rgb'].mean() for s in (0.0,) + LEVELS]
    assert strictly_decreasing(dark), dark
    assert strictly_decreasing([-v for v in bright]), bright


def test_occlusion_covers_a_growing_area(batch):
    changed = [np.mean(np.any(corrupt(batch, 'rgb', 'occlusion', s)['rgb'] != batch['rgb'], -1))
               for s in LEVELS]
    assert strictly_decreasing([-c for c in changed]), changed
    assert changed[-1] <= 0.5 + 1e-9  # three patches cover at most half the frame at s = 1


def test_depth_noise_keeps_rep118_infinities(batch):
    depth = batch['depth'].copy()
    depth[:, 1, :3] = [np.inf, -np.inf, np.nan]
    out = corrupt({'depth': depth}, 'depth', 'gaussian_noise', 1.0)['depth']
    np.testing.assert_array_equal(out[:, 1, :3], depth[:, 1, :3])


def test_depth_noise_grows_with_severity_and_with_depth(batch):
    valid = np.isfinite(batch['depth'])
    errs = [np.abs(corrupt(batch, 'depth', 'gaussian_noise', s)['depth'] - batch['depth'])[valid]
            for s in LEVELS]
    rmse = [float(np.sqrt(np.mean(e ** 2))) for e in errs]
    assert strictly_decreasing([-r for r in rmse]), rmse
    near, far = batch['depth'][valid] < 1.5, batch['depth'][valid] > 3.0
    assert errs[-1][far].mean() > 2 * errs[-1][near].mean()


@pytest.mark.parametrize('ctype', ['holes', 'blocked'])
def test_depth_valid_fraction_falls(batch, ctype):
    values = [valid_fraction(batch['depth'])]
    values += [valid_fraction(corrupt(batch, 'depth', ctype, s)['depth']) for s in LEVELS]
    assert strictly_decreasing(values), values


def test_depth_holes_fraction_and_blocked_extremes(batch):
    n_pix = H * W
    holes = ~np.isfinite(corrupt(batch, 'depth', 'holes', 0.5)['depth'])
    already = (~np.isfinite(batch['depth'])).reshape(B, -1).sum(1)
    target = round(0.9 * 0.5 * n_pix)  # exactly this many holes, some on already-invalid pixels
    counts = holes.reshape(B, -1).sum(1)
    assert np.all(counts >= target) and np.all(counts <= target + already)
    assert valid_fraction(corrupt(batch, 'depth', 'blocked', 1.0)['depth']) == 0.0
    half = ~np.isfinite(corrupt(batch, 'depth', 'blocked', 0.5)['depth'])
    # Half the frame from one edge: a contiguous band of full rows or full columns.
    for m in half:
        rows, cols = m.all(1).sum(), m.all(0).sum()
        assert max(rows, cols) == H // 2


def test_depth_quantisation_error_grows_and_is_bounded(batch):
    valid = np.isfinite(batch['depth'])
    errs = []
    for s in LEVELS:
        err = np.abs(corrupt(batch, 'depth', 'quantisation', s)['depth'] - batch['depth'])[valid]
        assert err.max() <= 0.5 * 0.5 * s + 1e-5  # half a bin of 0.5 s metres
        errs.append(err.mean())
    assert strictly_decreasing([-e for e in errs]), errs


@pytest.mark.parametrize('ctype', CORRUPTION_TYPES['audio'][1:])
def test_audio_true_snr_falls_with_severity(batch, ctype):
    clean = batch['audio']
    values = [snr_db(clean, corrupt(batch, 'audio', ctype, s)['audio']).mean() for s in LEVELS]
    assert strictly_decreasing(values), values


@pytest.mark.parametrize('ctype', ['white_noise', 'pink_noise', 'babble'])
def test_additive_noise_hits_the_target_snr(batch, ctype):
    sev = np.linspace(0.1, 1.0, B)
    measured = snr_db(batch['audio'], corrupt(batch, 'audio', ctype, sev)['audio'])
    np.testing.assert_allclose(measured, severity_to_snr_db(sev), atol=0.5)


def test_snr_mapping_endpoints():
    assert np.isinf(severity_to_snr_db(0.0))
    assert severity_to_snr_db(1.0) == pytest.approx(-10.0)
    assert strictly_decreasing(list(severity_to_snr_db([0.1, 0.5, 0.9])))


def band_power(x, lo, hi):
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return spec[(f >= lo) & (f < hi)].sum()


def test_pink_noise_has_more_low_than_high_frequency_power(batch):
    noise = (corrupt(batch, 'audio', 'pink_noise', 0.5)['audio'] - batch['audio'])[0]
    white = (corrupt(batch, 'audio', 'white_noise', 0.5)['audio'] - batch['audio'])[0]
    # Equal-width bands: pink falls ~1/f, white is flat.
    assert band_power(noise, 100, 1100) > 5 * band_power(noise, 6000, 7000)
    assert band_power(white, 100, 1100) < 2 * band_power(white, 6000, 7000)


def tone_power(x, freq):
    return band_power(x, freq - 20, freq + 20)


def test_babble_mixes_only_talkers_with_other_labels():
    batch = make_batch(n=6, t=16000)
    batch['label'] = np.array([0, 0, 1, 1, 2, 2])
    freqs = 300.0 + 125.0 * np.arange(6)
    out = corrupt(batch, 'audio', 'babble', np.array([0.5, 0, 0, 0, 0, 0]))
    noise = out['audio'][0] - batch['audio'][0]
    same_label = tone_power(noise, freqs[1])
    other_labels = [tone_power(noise, f) for f in freqs[2:]]
    assert sum(p > 1e3 * same_label for p in other_labels) == 3  # BABBLE_TALKERS of the 4


def test_babble_without_partners_needs_a_bank(batch):
    single = {'audio': batch['audio'][:1], 'label': batch['label'][:1]}
    with pytest.raises(ValueError, match='babble_bank'):
        corrupt(single, 'audio', 'babble', 0.5)
    bank = (0.1 * np.sin(2 * np.pi * 2000 * np.arange(1000) / 16000)).astype(np.float32)
    out = corrupt(single, 'audio', 'babble', 0.5, babble_bank=bank[None])
    noise = out['audio'][0] - single['audio'][0]
    assert tone_power(noise, 2000) > 0.5 * band_power(noise, 0, 8000)  # short bank clip tiled
    assert snr_db(single['audio'], out['audio'])[0] == pytest.approx(
        float(severity_to_snr_db(0.5)), abs=0.5)


def test_same_seed_same_output_other_seed_differs(batch):
    for m, c in [('rgb', 'occlusion'), ('depth', 'holes'), ('audio', 'babble')]:
        a = corrupt(batch, m, c, 0.5, seed=3)[m]
        b = corrupt(batch, m, c, 0.5, seed=3)[m]
        d = corrupt(batch, m, c, 0.5, seed=4)[m]
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, d, equal_nan=True)


# ---- sampler ------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def big_batch():
    return make_batch(n=1500, h=8, w=8, t=400, seed=5)


def changed_rows(a, b):
    """Which samples differ (NaN equals NaN)."""
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == 'f' else a == b
    return ~same.reshape(len(a), -1).all(1)


def corrupted_mask(out):
    return np.stack([out[f'severity_{m}'] > 0 for m in ('rgb', 'depth', 'audio')], axis=1)


def test_independent_frequencies_match_p_clean(big_batch):
    out = CorruptionSampler(policy='independent', p_clean=0.3)(big_batch, np.random.default_rng(0))
    hit = corrupted_mask(out)
    np.testing.assert_allclose(hit.mean(0), 0.7, atol=0.05)
    # Independence: both-corrupted frequency is the product of the marginals.
    assert np.mean(hit[:, 0] & hit[:, 2]) == pytest.approx(0.49, abs=0.05)
    for m in ('rgb', 'depth', 'audio'):  # every allowed type is drawn, severity in range
        assert set(np.unique(out[f'ctype_{m}'])) == set(range(len(CORRUPTION_TYPES[m])))
        sev = out[f'severity_{m}'][out[f'severity_{m}'] > 0]
        assert sev.min() >= 0.1 and sev.max() <= 1.0
        changed = changed_rows(out[m], big_batch[m])
        assert not np.any(changed[out[f'severity_{m}'] == 0])  # labelled clean = untouched


def test_one_at_a_time_never_corrupts_two(big_batch):
    out = CorruptionSampler(policy='one_at_a_time', p_clean=0.2)(big_batch,
                                                                np.random.default_rng(1))
    per_sample = corrupted_mask(out).sum(1)
    assert per_sample.max() == 1
    assert np.mean(per_sample == 0) == pytest.approx(0.2, abs=0.04)
    np.testing.assert_allclose(corrupted_mask(out).mean(0), 0.8 / 3, atol=0.04)


def test_up_to_two_corrupts_one_or_two_distinct_sensors_every_pair_included(big_batch):
    out = CorruptionSampler(policy='up_to_two', p_clean=0.2)(big_batch, np.random.default_rng(1))
    hit = corrupted_mask(out)
    per_sample = hit.sum(1)
    assert per_sample.max() == 2
    assert np.mean(per_sample == 0) == pytest.approx(0.2, abs=0.04)
    assert np.mean(per_sample == 2) == pytest.approx(0.4, abs=0.05)
    pairs = {tuple(np.flatnonzero(row)) for row in hit[per_sample == 2]}
    assert pairs == {(0, 1), (0, 2), (1, 2)}
    np.testing.assert_allclose(hit.mean(0), 0.8 * 1.5 / 3, atol=0.05)


def test_clean_policy_and_missing_modalities(big_batch):
    audio_only = {'audio': big_batch['audio'][:20], 'label': big_batch['label'][:20]}
    out = CorruptionSampler(policy='clean')(audio_only, np.random.default_rng(0))
    np.testing.assert_array_equal(out['audio'], audio_only['audio'])
    assert np.all(out['ctype_audio'] == 0) and np.all(out['severity_audio'] == 0)
    assert not any(k.endswith(('rgb', 'depth')) for k in out)


def test_allowed_types_and_levels_are_honoured(big_batch):
    sampler = CorruptionSampler(p_clean=0.0, severity_levels=(0.5, 1.0),
                                types={'rgb': ('gaussian_blur',), 'audio': ('muted', 'dropout'),
                                       'depth': ()})
    out = sampler(big_batch, np.random.default_rng(2))
    assert set(np.unique(out['ctype_rgb'])) == {ctype_index('rgb', 'gaussian_blur')}
    assert set(np.unique(out['ctype_audio'])) == {ctype_index('audio', 'muted'),
                                                  ctype_index('audio', 'dropout')}
    assert np.all(out['ctype_depth'] == 0)
    np.testing.assert_array_equal(out['depth'], big_batch['depth'])
    assert set(np.unique(out['severity_rgb'])) == {0.5, 1.0}


@pytest.mark.parametrize('policy', ['one_at_a_time', 'up_to_two'])
def test_one_at_a_time_skips_modalities_without_types(big_batch, policy):
    sampler = CorruptionSampler(policy=policy, p_clean=0.0, types={'audio': ('muted',)})
    hit = corrupted_mask(sampler(big_batch, np.random.default_rng(3)))
    assert hit[:, 2].all() and not hit[:, :2].any()


def test_sampler_is_deterministic_and_pure(big_batch):
    small = {k: v[:64] for k, v in big_batch.items()}
    before = copy.deepcopy(small)
    sampler = CorruptionSampler.standard()
    a = sampler(small, np.random.default_rng(7))
    b = sampler(small, np.random.default_rng(7))
    c = sampler(small, np.random.default_rng(8))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a['ctype_rgb'], c['ctype_rgb'])
    for key in before:
        np.testing.assert_array_equal(small[key], before[key])


def test_standard_mix():
    s = CorruptionSampler.standard()
    assert (s.policy, s.p_clean, s.severity_levels) == ('independent', 0.4, (0.25, 0.5, 0.75, 1.0))
    assert s.allowed_types('audio') == CORRUPTION_TYPES['audio'][1:]
    assert CorruptionSampler.standard(p_clean=0.1).p_clean == 0.1


@pytest.mark.parametrize('kwargs,match', [
    (dict(policy='sometimes'), 'policy'),
    (dict(p_clean=1.5), 'p_clean'),
    (dict(severity_range=(0.8, 0.2)), 'severity_range'),
    (dict(severity_levels=(0.0, 0.5)), 'severity_levels'),
    (dict(types={'rgb': ('fog',)}), 'unknown rgb'),
    (dict(types={'lidar': ('gaussian_noise',)}), 'unknown modality'),
    (dict(types={'rgb': ('clean',)}), 'p_clean'),
])
def test_sampler_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CorruptionSampler(**kwargs)
