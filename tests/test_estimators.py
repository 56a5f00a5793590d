"""Classical quality estimators: calibrated statistics and scores that fall as corruptions worsen."""
import numpy as np
import pytest

from admn_ros.datasets.corruptions import CORRUPTION_TYPES, apply_corruption
from admn_ros.datasets.synthetic import generate
from admn_ros.quality_estimators.estimators import (QualityConfig, audio_clipped_fraction, audio_dropout_fraction,
                                           audio_level_stats, component_scores, depth_noise_sigma,
                                           depth_valid_fraction, image_noise_sigma, image_sharpness,
                                           modality_quality)

SEVERITIES = (0.0, 0.25, 0.5, 1.0)
# The component each corruption should hit hardest.
TARGET = {
    ('rgb', 'gaussian_noise'): 'noise', ('rgb', 'low_light'): 'exposure',
    ('rgb', 'gaussian_blur'): 'blur', ('rgb', 'motion_blur'): 'blur',
    ('rgb', 'occlusion'): 'occlusion', ('rgb', 'overexposure'): 'exposure',
    ('depth', 'gaussian_noise'): 'noise', ('depth', 'holes'): 'valid',
    ('depth', 'quantisation'): 'quantisation', ('depth', 'blocked'): 'valid',
    ('audio', 'white_noise'): 'snr', ('audio', 'pink_noise'): 'snr', ('audio', 'babble'): 'snr',
    ('audio', 'clipping'): 'clipping', ('audio', 'dropout'): 'dropout', ('audio', 'muted'): 'level',
}


@pytest.fixture(scope='module')
def scenes():
    return generate(8, seed=11)


def test_every_corruption_type_has_a_target_component():
    assert set(TARGET) == {(m, t) for m, types in CORRUPTION_TYPES.items() for t in types[1:]}


@pytest.mark.parametrize('modality, ctype', sorted(TARGET))
def test_quality_falls_with_corruption_severity(scenes, modality, ctype):
    quality, target = [], []
    for s in SEVERITIES:
        corrupted = apply_corruption(scenes, modality, ctype if s > 0 else 'clean', s,
                                     np.random.default_rng(0))
        quality.append(modality_quality(corrupted)[modality].mean())
        target.append(component_scores(corrupted)[modality][TARGET[modality, ctype]].mean())
    # Non-increasing (a little slack for the random draws), clearly lower at full severity.
    assert np.all(np.diff(quality) <= 0.02), quality
    assert np.all(np.diff(target) <= 0.02), target
    assert quality[-1] < quality[0] - 0.1, quality
    assert target[-1] < target[0] - 0.1, target


def test_scores_are_in_unit_interval_for_every_present_modality(scenes):
    rng = np.random.default_rng(1)
    batch = apply_corruption(scenes, 'rgb', 'gaussian_noise', rng.random(8), rng)
    batch = apply_corruption(batch, 'audio', 'clipping', rng.random(8), rng)
    quality = modality_quality(batch)
    assert set(quality) == {'rgb', 'depth', 'audio'}
    for m, q in quality.items():
        assert q.shape == (8,) and np.all((q >= 0) & (q <= 1)), m
    assert set(modality_quality({'audio': batch['audio']})) == {'audio'}


def test_image_noise_sigma_recovers_added_noise():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:64, 0:64]
    base = 100 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0)                # smooth, well inside 0..255
    for sigma in (2.0, 5.0, 10.0):
        grey = base[None] + rng.normal(0, sigma, (4, 64, 64))
        rgb = np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
        assert np.all(np.abs(image_noise_sigma(rgb) - sigma) < 0.15 * sigma + 0.5)


def test_sharpness_falls_with_blur_but_not_with_brightness():
    import cv2
    rng = np.random.default_rng(3)
    img = np.zeros((64, 64), np.float32)
    for _ in range(12):
        x, y, w, h = rng.integers(0, 50, 4)
        img[y:y + h // 2 + 4, x:x + w // 2 + 4] = rng.uniform(40, 220)
    sharp = [img] + [cv2.GaussianBlur(img, (0, 0), s) for s in (1.0, 2.0, 4.0)]
    rgb = np.repeat(np.rint(np.stack(sharp)).astype(np.uint8)[..., None], 3, axis=-1)
    values = image_sharpness(rgb)
    assert np.all(np.diff(values) < 0), values
    # Contrast-normalised: halving the brightness keeps it (until 8-bit rounding dominates).
    dim = np.rint(rgb * 0.5).astype(np.uint8)
    np.testing.assert_allclose(image_sharpness(dim)[:3], values[:3], rtol=0.1)


def test_depth_statistics_are_calibrated():
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:48, 0:48]
    plane = (2.0 + 0.01 * xx + 0.02 * yy).astype(np.float32)
    depth = np.stack([plane] * 4)
    assert np.all(depth_noise_sigma(depth) < 1e-5)                         # a plane has no residual
    noisy = depth + rng.normal(0, 0.03, depth.shape).astype(np.float32)
    np.testing.assert_allclose(depth_noise_sigma(noisy), 0.03, rtol=0.15)
    holes = depth.copy()
    for i, frac in enumerate((0.0, 0.1, 0.5, 1.0)):
        holes[i].flat[:int(frac * holes[i].size)] = np.nan
    np.testing.assert_allclose(depth_valid_fraction(holes), [1.0, 0.9, 0.5, 0.0], atol=1e-3)
    assert np.isnan(depth_noise_sigma(holes)[3])                          # nothing left to judge
    assert modality_quality({'depth': holes})['depth'][3] == 0.0


def test_audio_statistics_are_calibrated():
    t = np.arange(16000) / 16000.0
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    # Clipping at half the peak keeps |sin| >= 0.5 for 2/3 of the time.
    clipped = np.clip(tone, -0.25, 0.25)[None]
    assert audio_clipped_fraction(clipped)[0] == pytest.approx(2 / 3, abs=0.01)
    assert audio_clipped_fraction(tone[None])[0] == 0.0                  # a pure tone is not clipped
    # Zero padding at the ends is not loss; a 100 ms gap inside a 0.5 s sound is 20 % of it.
    padded = np.zeros((1, 16000), np.float32)
    padded[0, 4000:12000] = tone[4000:12000] + 0.01
    gap = padded.copy()
    gap[0, 6000:7600] = 0.0
    assert audio_dropout_fraction(padded)[0] == 0.0
    assert audio_dropout_fraction(gap)[0] == pytest.approx(1600 / 8000, abs=1e-3)
    # A sound over a noise floor 20 dB down reads about 20 dB SNR; more noise, less SNR.
    rng = np.random.default_rng(5)
    bursts = np.where((t * 4) % 1 < 0.5, tone, 0.0)
    snr = [audio_level_stats((bursts + rng.normal(0, n, 16000))[None].astype(np.float32))['snr_db'][0]
           for n in (0.005, 0.02, 0.08)]
    assert np.all(np.diff(snr) < -3), snr
    silent = audio_level_stats(np.zeros((1, 16000), np.float32))
    assert silent['snr_db'][0] == 0.0 and silent['level_db'][0] == -np.inf


@pytest.mark.parametrize('batch, match', [
    ({'rgb': np.zeros((2, 8, 8, 3), np.float32)}, 'uint8'),
    ({'depth': np.zeros((2, 8), np.float32)}, 'depth'),
    ({'audio': np.full((2, 16000), np.nan, np.float32)}, 'NaN'),
    ({'audio': np.zeros((2, 100), np.float32)}, 'at least'),
    ({'label': np.zeros(2, np.int64)}, 'none of the modalities'),
])
def test_bad_inputs_are_rejected(batch, match):
    with pytest.raises(ValueError, match=match):
        modality_quality(batch)


def test_config_is_validated():
    with pytest.raises(ValueError):
        QualityConfig(rgb_noise_sigma=0.0)
    with pytest.raises(ValueError):
        QualityConfig(audio_frame=400, audio_hop=300)
    with pytest.raises(ValueError):
        QualityConfig(depth_valid_zero=0.9, depth_valid_full=0.5)


def test_non_physical_depth_counts_as_invalid_without_numpy_warnings():
    """A garbage 3e38 (finite, but no sensor reads it) used to overflow the plane fit with
    numpy warnings; beyond MAX_DEPTH_M a reading is invalid like NaN and inf."""
    import warnings

    from admn_ros.quality_estimators.estimators import MAX_DEPTH_M, depth_scores, depth_valid_fraction
    depth = np.full((2, 32, 32), 2.0, np.float32)
    depth[0, :16] = 3e38                                        # half the first image garbage
    depth[1, :16] = np.inf
    depth[1, 16, :8] = (np.nan, -np.inf, 0.0, MAX_DEPTH_M * 2, np.float32(3.4e38), 5.0, 5.0, 5.0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        valid = depth_valid_fraction(depth)
        scores = depth_scores(depth)
    assert valid[0] == 0.5 and valid[1] == pytest.approx((16 * 32 - 5) / 1024)
    assert all(np.all(np.isfinite(v)) and np.all((v >= 0) & (v <= 1)) for v in scores.values())
    assert scores['noise'][0] == pytest.approx(1.0)     # the flat valid half is judged, not the garbage


def test_batches_larger_than_one_opencv_image_score_like_their_parts(scenes):
    # OpenCV filters at most 128 channels per call; a batch of 300 goes through in chunks and each
    # image scores exactly as it does alone.
    batch = {k: np.concatenate([v] * 38)[:300] for k, v in scenes.items()}
    rgb = apply_corruption(batch, 'rgb', 'gaussian_blur', 0.5, np.random.default_rng(0))['rgb']
    whole = image_sharpness(rgb)
    assert whole.shape == (300,)
    parts = np.concatenate([image_sharpness(rgb[i:i + 7]) for i in range(0, 300, 7)])
    np.testing.assert_allclose(whole, parts, rtol=1e-5)
