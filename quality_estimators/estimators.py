"""Classical, learning-free signal-quality estimators for raw batches (1 = good, 0 = useless).

Each modality gets a few cheap statistics, each mapped to a score in [0, 1]; the modality's quality
is their product, so any single defect pulls it down.  Everything works on the raw-batch contract of
:mod:`admn_ros.datasets.sample` and is vectorised over the batch (OpenCV runs the whole batch as channels).

========  ===========  =====================================================================
modality  component    statistic
========  ===========  =====================================================================
rgb       noise        Immerkaer residual (second difference in x and y), robust MAD sigma
rgb       blur         variance of the Laplacian over variance of the image, both with the
                       estimated noise removed (brightness cannot fake sharpness; noise only as
                       far as its estimate falls short, e.g. when clipped at black)
rgb       exposure     tonal range p99 - p1 and the fraction of clipped-white pixels
rgb       occlusion    fraction of pixels in exactly uniform 3x3 patches of a colour other
                       than the dominant flat one (the background)
depth     valid        fraction of physical readings: finite, in (0, MAX_DEPTH_M]
depth     noise        residual of a 3x3 least-squares plane at each pixel, robust MAD sigma
depth     quantisation fraction of neighbouring valid readings that are exactly equal
audio     snr          spread between loud and quiet 25 ms frames (dB); zero padding counts
                       as a clean floor, zero gaps inside the sound are ignored
audio     clipping     fraction of samples in runs (>= 3) stuck at the clip's peak
audio     dropout      fraction of the active span lost to runs of exact zeros (>= 5 ms)
audio     level        loudness of the loud frames (dBFS), catches muted microphones
========  ===========  =====================================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import cv2
import numpy as np

from admn_ros.datasets.sample import RawBatch, SAMPLE_RATE

# Gaussian MAD -> sigma: median(|N(0, s^2)|) = 0.6745 s.
_MAD_TO_SIGMA = 1.0 / 0.6745
# Immerkaer's kernel [1 -2 1] x [1 -2 1] has L2 norm 6: residual std = 6 sigma.
_IMMERKAER_NORM = 6.0
# OpenCV's ksize=1 Laplacian [0 1 0; 1 -4 1; 0 1 0] has squared L2 norm 20.
_LAPLACIAN_NORM2 = 20.0
# A 3x3 least-squares plane predicts the centre as the window mean, so the centre residual of
# white noise has std sigma * sqrt(1 - 1/9) = sigma * sqrt(8/9).
_PLANE_RESIDUAL_NORM = np.sqrt(8.0 / 9.0)
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma
#: Depth beyond this (metres) is no reading any sensor makes (a garbage 3e38, say): it counts as
#: invalid like NaN / inf (REP 117), and never enters arithmetic, where it would overflow.
MAX_DEPTH_M = 1.0e4


@dataclass(frozen=True)
class QualityConfig:
    """Reference levels that map each statistic to a score (all in the statistic's own unit)."""

    rgb_noise_sigma: float = 6.0          # grey levels (0-255) where the noise score is 0.5
    rgb_sharpness: float = 0.05           # noise-free var(Laplacian)/var(image) where blur score is 0.5
    rgb_range_full: float = 0.4           # tonal range (fraction of 255) that earns full exposure score
    rgb_saturated_free: float = 0.1       # clipped-white fraction tolerated (bright scenes) ...
    rgb_saturated_full: float = 0.8       # ... and the fraction that zeroes the exposure score
    rgb_occluded_full: float = 0.5        # foreign uniform-patch fraction that zeroes the score
    depth_noise_sigma_m: float = 0.05     # metres where the depth noise score is 0.5
    depth_valid_zero: float = 0.05        # valid fraction at (and below) which the score is 0 ...
    depth_valid_full: float = 0.8         # ... and from which it is 1 (open sky reads as invalid)
    depth_equal_free: float = 0.5         # equal-neighbour fraction tolerated before penalising
    audio_frame: int = 400                # 25 ms at 16 kHz; a whole number of hops
    audio_hop: int = 200                  # 12.5 ms
    audio_snr_low_db: float = 0.0         # SNR estimate mapped to score 0 ...
    audio_snr_high_db: float = 30.0       # ... and to score 1
    audio_clipped_full: float = 0.02      # fraction of samples at the peak that zeroes the score
    audio_gap_min: int = 80               # 5 ms: shorter runs of zeros occur in clean speech
    audio_level_low_db: float = -60.0     # loud-frame level (dBFS) mapped to score 0 ...
    audio_level_high_db: float = -40.0    # ... and to score 1

    def __post_init__(self):
        positive = ('rgb_noise_sigma', 'rgb_sharpness', 'rgb_range_full', 'rgb_occluded_full',
                    'depth_noise_sigma_m', 'audio_frame', 'audio_hop', 'audio_clipped_full',
                    'audio_gap_min')
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f'QualityConfig.{name} must be positive, got {getattr(self, name)!r}')
        if self.audio_frame % self.audio_hop:
            raise ValueError(f'audio_frame ({self.audio_frame}) must be a multiple of '
                             f'audio_hop ({self.audio_hop})')
        if not 0 <= self.depth_valid_zero < self.depth_valid_full <= 1:
            raise ValueError('need 0 <= depth_valid_zero < depth_valid_full <= 1')
        if not 0 <= self.rgb_saturated_free < self.rgb_saturated_full <= 1:
            raise ValueError('need 0 <= rgb_saturated_free < rgb_saturated_full <= 1')
        if not 0 <= self.depth_equal_free < 1:
            raise ValueError('depth_equal_free must lie in [0, 1)')
        if self.audio_snr_high_db <= self.audio_snr_low_db:
            raise ValueError('audio_snr_high_db must exceed audio_snr_low_db')
        if self.audio_level_high_db <= self.audio_level_low_db:
            raise ValueError('audio_level_high_db must exceed audio_level_low_db')


# ------------------------------------------------------------------------------- score mappings

def _falling(x: np.ndarray, half: float) -> np.ndarray:
    """1 at x = 0, 0.5 at x = half, -> 0 as x grows (for 'bad' statistics such as noise)."""
    return 1.0 / (1.0 + (np.asarray(x, np.float64) / half) ** 2)


def _rising(x: np.ndarray, half: float) -> np.ndarray:
    """0 at x = 0, 0.5 at x = half, -> 1 as x grows (for 'good' statistics such as sharpness)."""
    x = np.maximum(np.asarray(x, np.float64), 0.0)
    return x / (x + half)


def _ramp(x: np.ndarray, zero: float, one: float) -> np.ndarray:
    """Linear from 0 at ``zero`` to 1 at ``one``, clipped (``one`` < ``zero`` makes it falling)."""
    return np.clip((np.asarray(x, np.float64) - zero) / (one - zero), 0.0, 1.0)


# ------------------------------------------------------------------------------------------ rgb

def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3 or min(rgb.shape[1:3]) < 3:
        raise ValueError(f'rgb must be uint8 [B, H, W, 3] with H, W >= 3; got {rgb.dtype} {rgb.shape}')
    return rgb


def _grey(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ _GREY


# OpenCV takes at most this many channels in one image (5.0: 128), so batches go in chunks.
_CV_MAX_CHANNELS = 128


def _as_channels(stack: np.ndarray) -> np.ndarray:
    """[B, H, W] -> contiguous [H, W, B] so one OpenCV call filters a whole chunk of the batch."""
    return np.ascontiguousarray(np.moveaxis(stack, 0, -1))


def _laplacian_var(grey: np.ndarray) -> np.ndarray:
    """Variance of the 3x3 Laplacian of each grey image [B], in chunks OpenCV accepts."""
    parts = []
    for start in range(0, len(grey), _CV_MAX_CHANNELS):
        chunk = grey[start:start + _CV_MAX_CHANNELS]
        lap = cv2.Laplacian(_as_channels(chunk), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT_101)
        parts.append(lap.reshape(-1, len(chunk)).var(axis=0))
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _grey_noise_sigma(grey: np.ndarray) -> np.ndarray:
    residual = np.diff(np.diff(grey, n=2, axis=1), n=2, axis=2)
    return np.median(np.abs(residual.reshape(len(grey), -1)), axis=1) * (_MAD_TO_SIGMA / _IMMERKAER_NORM)


def _grey_sharpness(grey: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    sigma2 = np.asarray(sigma, np.float64) ** 2
    lap_var = _laplacian_var(grey)
    img_var = grey.reshape(len(grey), -1).var(axis=1).astype(np.float64)
    signal = np.maximum(lap_var - _LAPLACIAN_NORM2 * sigma2, 0.0)
    detail = np.maximum(img_var - sigma2, 0.0)
    return np.divide(signal, detail, out=np.zeros_like(signal), where=detail > 1e-6)


def _grey_percentiles(grey: np.ndarray, q) -> np.ndarray:
    """Percentiles [len(q), B] of each grey image, to one grey level, from 256-bin histograms.

    Much faster than np.percentile on float pixels, and one level is all the precision needed.
    """
    b = len(grey)
    levels = np.clip(np.rint(grey), 0, 255).astype(np.int64).reshape(b, -1)
    hist = np.bincount((levels + 256 * np.arange(b)[:, None]).ravel(), minlength=256 * b).reshape(b, 256)
    cdf = np.cumsum(hist, axis=1) / levels.shape[1]
    return np.stack([(cdf < qi / 100.0).sum(axis=1) for qi in q]).astype(np.float64)


def image_noise_sigma(rgb: np.ndarray) -> np.ndarray:
    """Noise std in grey levels [B] (Immerkaer's residual, median-based so edges do not count).

    Underestimates noise that was clipped at black or white, which is where it hides anyway.
    """
    return _grey_noise_sigma(_grey(_check_rgb(rgb)))


def image_sharpness(rgb: np.ndarray, noise_sigma: np.ndarray = None) -> np.ndarray:
    """High-frequency share [B]: var(Laplacian) / var(image), the noise's contribution removed.

    Dividing by the image variance makes it independent of brightness and contrast; subtracting
    the noise terms (20 sigma^2 and sigma^2) stops noise from passing for detail, as far as the
    noise estimate reaches.  Blank images score 0.
    """
    grey = _grey(_check_rgb(rgb))
    return _grey_sharpness(grey, _grey_noise_sigma(grey) if noise_sigma is None else noise_sigma)


def _exposure_stats(rgb: np.ndarray, grey: np.ndarray) -> Dict[str, np.ndarray]:
    lo, hi = _grey_percentiles(grey, (1, 99))
    saturated = (rgb.max(axis=-1) >= 254).reshape(len(rgb), -1).mean(axis=1)
    return {'range': (hi - lo) / 255.0, 'saturated': saturated}


def image_exposure_stats(rgb: np.ndarray) -> Dict[str, np.ndarray]:
    """Tonal range (p99 - p1 of grey, as a fraction of 255) and clipped-white pixel fraction [B].

    Low light compresses the range; over-exposure clips to white and lifts the black level.
    """
    rgb = _check_rgb(rgb)
    return _exposure_stats(rgb, _grey(rgb))


def image_occluded_fraction(rgb: np.ndarray) -> np.ndarray:
    """Fraction [B] of pixels inside exactly uniform 3x3 patches whose colour is not the background.

    Real scenes (and sensor noise) leave no perfectly flat area except a clean backdrop; the most
    common flat colour is taken as that backdrop, and any other flat region is treated as an
    occluder (a cap, dirt, an object against the lens).
    """
    rgb = _check_rgb(rgb)
    b = len(rgb)
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    centre = packed[:, 1:-1, 1:-1]
    flat = np.ones(centre.shape, bool)
    h, w = packed.shape[1:]
    for dy in range(3):
        for dx in range(3):
            flat &= packed[:, dy:dy + h - 2, dx:dx + w - 2] == centre
    out = np.zeros(b)
    for i in range(b):  # the dominant colour needs a per-image histogram
        colours = centre[i][flat[i]]
        if colours.size == 0:
            continue
        _, counts = np.unique(colours, return_counts=True)
        out[i] = (colours.size - counts.max()) / centre[i].size
    return out


def rgb_scores(rgb: np.ndarray, cfg: QualityConfig = QualityConfig()) -> Dict[str, np.ndarray]:
    """Component scores [B] in [0, 1] for a uint8 RGB batch."""
    rgb = _check_rgb(rgb)
    grey = _grey(rgb)
    sigma = _grey_noise_sigma(grey)
    exposure = _exposure_stats(rgb, grey)
    return {
        'noise': _falling(sigma, cfg.rgb_noise_sigma),
        'blur': _rising(_grey_sharpness(grey, sigma), cfg.rgb_sharpness),
        'exposure': (_ramp(exposure['range'], 0.0, cfg.rgb_range_full)
                     * _ramp(exposure['saturated'], cfg.rgb_saturated_full, cfg.rgb_saturated_free)),
        'occlusion': _ramp(image_occluded_fraction(rgb), cfg.rgb_occluded_full, 0.0),
    }


# ---------------------------------------------------------------------------------------- depth

def _check_depth(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.dtype.kind != 'f' or depth.ndim != 3 or min(depth.shape[1:]) < 3:
        raise ValueError(f'depth must be float [B, H, W] with H, W >= 3; got {depth.dtype} {depth.shape}')
    return depth


def _physical(depth: np.ndarray) -> np.ndarray:
    """Readings that are real distances: finite, in (0, MAX_DEPTH_M] (REP 118: NaN / 0 mean no
    return; REP 117: +-inf out of range)."""
    with np.errstate(invalid='ignore'):   # NaN compares False, as wanted
        return np.isfinite(depth) & (depth > 0) & (depth <= MAX_DEPTH_M)


def depth_valid_fraction(depth: np.ndarray) -> np.ndarray:
    """Fraction [B] of physical readings (:func:`_physical`)."""
    depth = _check_depth(depth)
    return _physical(depth).reshape(len(depth), -1).mean(axis=1)


def _depth_windows(depth: np.ndarray):
    """The nine shifted [B, H-2, W-2] views of each pixel's 3x3 neighbourhood and their validity."""
    depth = _check_depth(depth).astype(np.float32)
    ok = _physical(depth)
    depth = np.where(ok, depth, np.float32(0))   # invalid readings never enter the arithmetic
    h, w = depth.shape[1:]
    views = [depth[:, dy:dy + h - 2, dx:dx + w - 2] for dy in range(3) for dx in range(3)]
    valid = np.ones(views[0].shape, bool)
    for v in [ok[:, dy:dy + h - 2, dx:dx + w - 2] for dy in range(3) for dx in range(3)]:
        valid &= v
    return views, valid


def depth_noise_sigma(depth: np.ndarray) -> np.ndarray:
    """Noise std in metres [B] from 3x3 plane-fit residuals (robust MAD; fully valid windows only).

    A least-squares plane through a 3x3 window predicts its centre as the window mean, so the
    residual is ``z_centre - mean``: zero on any planar surface, noise elsewhere; depth edges are
    few enough for the median to ignore.  A sample with no complete window gets NaN.
    """
    views, valid = _depth_windows(depth)
    residual = np.abs(views[4] - sum(views) / 9.0)
    out = np.full(len(valid), np.nan)
    for i in range(len(valid)):  # np.nanmedian over the batch is several times slower
        r = residual[i][valid[i]]
        if r.size:
            out[i] = np.median(r) * (_MAD_TO_SIGMA / _PLANE_RESIDUAL_NORM)
    return out


def depth_equal_fraction(depth: np.ndarray) -> np.ndarray:
    """Fraction [B] of valid horizontal/vertical neighbour pairs with exactly equal depth.

    Smooth surfaces measured in float metres almost never repeat a value; a quantised sensor
    output (coarse disparity steps) makes most neighbours equal.  0 when no pair is valid.
    """
    depth = _check_depth(depth)
    ok = _physical(depth)
    equal = np.zeros(len(depth))
    total = np.zeros(len(depth))
    for axis in (1, 2):
        n = depth.shape[axis]
        head = [slice(None)] * 3
        tail = [slice(None)] * 3
        head[axis], tail[axis] = slice(1, n), slice(0, n - 1)
        both = ok[tuple(head)] & ok[tuple(tail)]
        same = both & (depth[tuple(head)] == depth[tuple(tail)])
        equal += same.reshape(len(depth), -1).sum(1)
        total += both.reshape(len(depth), -1).sum(1)
    return np.divide(equal, total, out=np.zeros(len(depth)), where=total > 0)


def depth_scores(depth: np.ndarray, cfg: QualityConfig = QualityConfig()) -> Dict[str, np.ndarray]:
    """Component scores [B] in [0, 1] for a float depth batch in metres."""
    sigma = depth_noise_sigma(depth)
    return {
        'valid': _ramp(depth_valid_fraction(depth), cfg.depth_valid_zero, cfg.depth_valid_full),
        # No complete window -> nothing to judge noise on; the valid score already says it is bad.
        'noise': np.where(np.isfinite(sigma), _falling(np.nan_to_num(sigma), cfg.depth_noise_sigma_m), 0.0),
        'quantisation': _ramp(depth_equal_fraction(depth), 1.0, cfg.depth_equal_free),
    }


# ---------------------------------------------------------------------------------------- audio

def _check_audio(audio: np.ndarray, min_samples: int = 1) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.dtype.kind != 'f' or audio.ndim != 2:
        raise ValueError(f'audio must be float [B, T]; got {audio.dtype} {audio.shape}')
    if audio.shape[1] < min_samples:
        raise ValueError(f'audio clips need at least {min_samples} samples '
                         f'({min_samples / SAMPLE_RATE * 1e3:.0f} ms at {SAMPLE_RATE} Hz); '
                         f'got {audio.shape[1]}')
    if not np.all(np.isfinite(audio)):
        raise ValueError('audio contains NaN or infinite samples')
    return audio


def _frame_sums(x: np.ndarray, cfg: QualityConfig) -> np.ndarray:
    """Sum of ``x`` [B, T] over each frame [B, F]: hop-sized block sums, then adjacent blocks added.

    Frames are a whole number of hops long, so no overlapping frame is ever materialised; a tail
    shorter than a frame is ignored.
    """
    per = cfg.audio_frame // cfg.audio_hop
    n_blocks = x.shape[1] // cfg.audio_hop
    blocks = x[:, :n_blocks * cfg.audio_hop].reshape(len(x), n_blocks, cfg.audio_hop)
    blocks = blocks.sum(-1, dtype=np.float64)
    run = np.concatenate([np.zeros((len(x), 1)), np.cumsum(blocks, axis=1)], axis=1)
    return run[:, per:] - run[:, :-per]


def _row_percentile(values: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated percentile of each row, ignoring NaN (rows need one finite value).

    Vectorised replacement for np.nanpercentile, which loops over rows in Python.
    """
    ordered = np.sort(values, axis=1)  # NaN sorts last
    count = np.sum(~np.isnan(values), axis=1)
    pos = q / 100.0 * (count - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, count - 1)
    rows = np.arange(len(values))
    frac = pos - lo
    return ordered[rows, lo] * (1.0 - frac) + ordered[rows, hi] * frac


def _active_span(audio: np.ndarray):
    """First and last non-zero sample of each clip [B] (0, -1 for an all-zero clip) and whether any."""
    nz = audio != 0
    any_nz = nz.any(axis=1)
    first = np.where(any_nz, nz.argmax(axis=1), 0)
    last = np.where(any_nz, audio.shape[1] - 1 - np.flip(nz, 1).argmax(axis=1), -1)
    return first, last, any_nz


def audio_level_stats(audio: np.ndarray, cfg: QualityConfig = QualityConfig()) -> Dict[str, np.ndarray]:
    """SNR estimate (p95 - p10 of frame power, dB) and loud-frame level (p95, dBFS) [B].

    Quiet frames stand for the noise floor.  Frames that are mostly exact zeros are digital
    silence: before the first or after the last sound it is padding, proof that the chain adds no
    noise, so it counts as a floor ``audio_snr_high_db`` below the loud frames; inside the sound it
    is packet loss, which says nothing about noise, so it is left out (and when there is loss
    inside, silence at the ends is treated as loss too).  A silent clip gets an SNR
    of 0 dB and a level of -inf.
    """
    audio = _check_audio(audio, cfg.audio_frame)
    return _level_stats(audio, cfg, audio_dropout_fraction(audio, cfg.audio_gap_min))


def _level_stats(audio: np.ndarray, cfg: QualityConfig, dropout: np.ndarray) -> Dict[str, np.ndarray]:
    energy = _frame_sums(np.square(audio, dtype=np.float64), cfg) / cfg.audio_frame
    silent = _frame_sums((audio == 0).view(np.uint8), cfg) >= 0.5 * cfg.audio_frame
    db = np.where(silent, np.nan, 10.0 * np.log10(np.maximum(energy, 1e-20)))
    first, last, _ = _active_span(audio)
    centre = np.arange(energy.shape[1]) * cfg.audio_hop + cfg.audio_frame // 2
    padding = silent & ((centre[None, :] < first[:, None]) | (centre[None, :] > last[:, None]))
    # With packet loss inside the sound, silence at the ends is more likely loss than padding.
    padding &= (dropout == 0)[:, None]
    snr = np.zeros(len(db))
    level = np.full(len(db), -np.inf)
    has = (~silent).any(axis=1)
    if has.any():
        level[has] = _row_percentile(db[has], 95)
        floor = np.where(padding, (level - cfg.audio_snr_high_db)[:, None], db)
        snr[has] = level[has] - _row_percentile(floor[has], 10)
    return {'snr_db': snr, 'level_db': level}


def audio_clipped_fraction(audio: np.ndarray, rel_tol: float = 1e-4, min_run: int = 3) -> np.ndarray:
    """Fraction [B] of samples in runs of >= ``min_run`` consecutive samples stuck at the peak.

    A clipped clip sits at its peak magnitude (within ``rel_tol``) for many samples in a row; clean
    audio, even a pure tone, passes through its peak and moves on.  Silent clips score 0.
    """
    audio = np.abs(_check_audio(audio))
    peak = audio.max(axis=1, keepdims=True)
    at_peak = (audio >= peak * (1.0 - rel_tol)) & (peak > 0)
    n = audio.shape[1] - min_run + 1
    if n <= 0:
        return np.zeros(len(audio))
    starts = np.ones((len(audio), n), bool)  # a run of min_run samples starts here
    for k in range(min_run):
        starts &= at_peak[:, k:k + n]
    stuck = np.zeros_like(at_peak)
    for k in range(min_run):
        stuck[:, k:k + n] |= starts
    return stuck.mean(axis=1)


def audio_dropout_fraction(audio: np.ndarray, min_run: int = 80) -> np.ndarray:
    """Fraction [B] of the active span (first to last non-zero sample) lost to zero runs >= ``min_run``.

    Zeros before the first and after the last sound are padding, not loss; recorded speech
    does not produce exact zeros for several milliseconds on its own.
    """
    audio = _check_audio(audio)
    zero = audio == 0
    b = len(audio)
    # Run-length encode the zeros: +1 where a run starts, -1 one past where it ends.
    edges = np.diff(np.pad(zero, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, stops = np.nonzero(edges == -1)  # same row-major order, so runs pair up
    first, last, any_nz = _active_span(audio)
    lengths = stops - starts
    inner = (starts > first[rows]) & (stops <= last[rows]) & (lengths >= min_run)
    lost = np.bincount(rows[inner], weights=lengths[inner], minlength=b)
    span = (last - first + 1).astype(np.float64)
    return np.divide(lost, span, out=np.zeros(b), where=any_nz)


def audio_scores(audio: np.ndarray, cfg: QualityConfig = QualityConfig()) -> Dict[str, np.ndarray]:
    """Component scores [B] in [0, 1] for a float waveform batch at 16 kHz."""
    audio = _check_audio(audio, cfg.audio_frame)
    dropout = audio_dropout_fraction(audio, cfg.audio_gap_min)
    stats = _level_stats(audio, cfg, dropout)
    return {
        'snr': _ramp(stats['snr_db'], cfg.audio_snr_low_db, cfg.audio_snr_high_db),
        'clipping': _ramp(audio_clipped_fraction(audio), cfg.audio_clipped_full, 0.0),
        'dropout': 1.0 - dropout,
        'level': _ramp(stats['level_db'], cfg.audio_level_low_db, cfg.audio_level_high_db),
    }


# ------------------------------------------------------------------------------------- combined

_SCORERS = {'rgb': rgb_scores, 'depth': depth_scores, 'audio': audio_scores}


def component_scores(batch: RawBatch,
                     cfg: QualityConfig = QualityConfig()) -> Dict[str, Dict[str, np.ndarray]]:
    """``{modality: {component: score [B]}}`` for every modality present in the batch."""
    return {m: fn(batch[m], cfg) for m, fn in _SCORERS.items() if m in batch}


def modality_quality(batch: RawBatch, cfg: QualityConfig = QualityConfig()) -> Dict[str, np.ndarray]:
    """Per-modality quality [B] in [0, 1]: the product of that modality's component scores."""
    if not any(m in batch for m in _SCORERS):
        raise ValueError(f'batch has none of the modalities {tuple(_SCORERS)}; keys: {sorted(batch)}')
    out = {}
    for m, parts in component_scores(batch, cfg).items():
        out[m] = np.clip(np.prod(np.stack(list(parts.values())), axis=0), 0.0, 1.0)
    return out
