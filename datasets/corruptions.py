"""Sensor corruptions with quality labels, and the per-sample sampling policies built on them.

Every corruption maps a severity in ``[0, 1]`` to a physical effect; 0 is always the identity and
effects grow monotonically with severity.  The mappings (``s`` = severity, ``S`` = the image's
shorter side in pixels):

====================  =====================================================================
rgb
--------------------  ---------------------------------------------------------------------
``gaussian_noise``    additive Gaussian, std ``0.5 s`` on [0, 1] pixels, then clipped
``low_light``         gamma ``1 + 3 s``, gain ``1 - 0.8 s``, then sensor noise std ``0.05 s``
``gaussian_blur``     Gaussian kernel, sigma ``0.06 s S`` pixels
``motion_blur``       linear kernel of length ``1 + 0.2 s S`` pixels at a random angle
``occlusion``         3 random-coloured rectangles covering ``0.5 s`` of the frame together
``overexposure``      gain ``1 + 3 s`` and offset ``+0.2 s``, clipped at white
depth
--------------------  ---------------------------------------------------------------------
``gaussian_noise``    additive Gaussian in metres, std ``s (0.01 + 0.15 z)`` (grows with depth z)
``holes``             blob-shaped dropouts (NaN) over a fraction ``0.9 s`` of the pixels
``quantisation``      depth snapped to bins of ``0.5 s`` metres (bin centres)
``blocked``           an obstruction from one random edge covers a fraction ``s`` of the frame
                      (NaN); ``s = 1`` leaves no valid pixel
audio
--------------------  ---------------------------------------------------------------------
``white_noise``       additive white noise at SNR ``30 - 40 s`` dB (``s = 0``: no noise)
``pink_noise``        the same with 1/f noise
``babble``            the same with the sum of 3 other talkers (see :func:`apply_corruption`)
``clipping``          hard clipping at ``(1 - 0.9 s)`` of the clip's peak
``dropout``           zeroed 20 ms packets over a fraction ``0.75 s`` of the clip
``muted``             gain ``1 - s`` (``s = 1`` is silence)
====================  =====================================================================

SNRs are measured against the clean clip's power, floored at -50 dBFS so that silence still
receives noise.  Everything is vectorised over the batch except the OpenCV filters, which run
once per image.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import scipy.fft

from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE, RawBatch, batch_size, present_modalities

CORRUPTION_TYPES: Dict[str, Tuple[str, ...]] = {
    'rgb': ('clean', 'gaussian_noise', 'low_light', 'gaussian_blur', 'motion_blur', 'occlusion',
            'overexposure'),
    'depth': ('clean', 'gaussian_noise', 'holes', 'quantisation', 'blocked'),
    'audio': ('clean', 'white_noise', 'pink_noise', 'babble', 'clipping', 'dropout', 'muted'),
}

# Audio SNR mapping: severity (0, 1] -> [SNR_AT_ZERO_DB - SNR_SPAN_DB, SNR_AT_ZERO_DB) dB.
# Bump when a corruption's effect or the sampler's draws change: caches of corrupted sets
# (quality_estimators.evaluate.corrupted_test_set) key on it.
# 2: the sampler keeps samples' recorded tags (keep_recorded); untagged data is unchanged.
CORRUPTION_VERSION = 2
SNR_AT_ZERO_DB = 30.0
SNR_SPAN_DB = 40.0
# Reference power floor (-50 dBFS): a silent clip would otherwise get zero noise.
MIN_SIGNAL_POWER = 1e-5
BABBLE_TALKERS = 3
DROPOUT_PACKET_S = 0.02

Severity = Union[float, np.ndarray]
CType = Union[str, int, Sequence, np.ndarray]


def ctype_index(modality: str, name: str) -> int:
    """Index of corruption type ``name`` in ``CORRUPTION_TYPES[modality]``."""
    types = _types_of(modality)
    if name not in types:
        raise ValueError(f'unknown {modality} corruption {name!r}; known: {types}')
    return types.index(name)


def severity_to_snr_db(severity: Severity) -> np.ndarray:
    """Target SNR in dB for additive audio noise; severity 0 maps to +inf (no noise)."""
    s = np.asarray(severity, dtype=np.float64)
    return np.where(s > 0, SNR_AT_ZERO_DB - SNR_SPAN_DB * s, np.inf)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

@dataclass
class _Context:
    """What a corruption may need besides its own samples (only babble uses it)."""

    audio: Optional[np.ndarray]      # the whole batch's input audio [B, T]
    labels: Optional[np.ndarray]     # [B] or None
    index: np.ndarray                # rows of the batch being corrupted
    babble_bank: Optional[np.ndarray]


def _types_of(modality: str) -> Tuple[str, ...]:
    if modality not in CORRUPTION_TYPES:
        raise ValueError(f'unknown modality {modality!r}; known: {tuple(CORRUPTION_TYPES)}')
    return CORRUPTION_TYPES[modality]


def _per_image(s: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape severities [n] so they broadcast against an [n, ...] array of ``ndim`` dims."""
    return s.reshape((-1,) + (1,) * (ndim - 1))


def _randn(rng: np.random.Generator, shape) -> np.ndarray:
    # float32 draws are about twice as fast as float64 and precise enough for noise.
    return rng.standard_normal(shape, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# RGB: float32 [n, H, W, 3] in [0, 1] -> same
# --------------------------------------------------------------------------------------------

def _rgb_gaussian_noise(x, s, rng, ctx):
    return x + _randn(rng, x.shape) * _per_image(0.5 * s, 4)


def _rgb_low_light(x, s, rng, ctx):
    k = _per_image(s, 4)
    dark = np.power(x, 1.0 + 3.0 * k) * (1.0 - 0.8 * k)
    return dark + _randn(rng, x.shape) * (0.05 * k)


def _rgb_gaussian_blur(x, s, rng, ctx):
    side = min(x.shape[1:3])
    out = np.empty_like(x)
    for i, si in enumerate(s):
        sigma = 0.06 * float(si) * side
        out[i] = cv2.GaussianBlur(x[i], (0, 0), sigmaX=sigma, sigmaY=sigma,
                                  borderType=cv2.BORDER_REFLECT_101)
    return out


def _motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised line kernel; fractional lengths weight the two end taps partially."""
    size = int(np.ceil(length)) | 1  # odd so the line is centred
    row = np.zeros(size, np.float32)
    half = (length - 1.0) / 2.0
    offsets = np.arange(size, dtype=np.float32) - size // 2
    row[:] = np.clip(half + 1.0 - np.abs(offsets), 0.0, 1.0)
    kernel = np.zeros((size, size), np.float32)
    kernel[size // 2] = row
    centre = (size / 2.0 - 0.5, size / 2.0 - 0.5)
    rot = cv2.getRotationMatrix2D(centre, angle_deg, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (size, size), flags=cv2.INTER_LINEAR)
    return kernel / kernel.sum()


def _rgb_motion_blur(x, s, rng, ctx):
    side = min(x.shape[1:3])
    angles = rng.uniform(0.0, 180.0, size=len(s))
    out = np.empty_like(x)
    for i, si in enumerate(s):
        kernel = _motion_kernel(1.0 + 0.2 * float(si) * side, float(angles[i]))
        out[i] = cv2.filter2D(x[i], -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    return out


def _rgb_occlusion(x, s, rng, ctx):
    n, h, w = x.shape[:3]
    n_patches = 3
    # Each patch keeps the frame's aspect ratio; together they cover 0.5 s of it (if disjoint).
    scale = np.sqrt(0.5 * s / n_patches)[:, None]                      # [n, 1]
    ph = np.maximum(np.rint(scale * h), 1).astype(int)                 # [n, 1]
    pw = np.maximum(np.rint(scale * w), 1).astype(int)
    y0 = np.floor(rng.random((n, n_patches)) * (h - ph + 1)).astype(int)
    x0 = np.floor(rng.random((n, n_patches)) * (w - pw + 1)).astype(int)
    colours = rng.random((n, n_patches, 3)).astype(np.float32)
    ys = np.arange(h)[None, :]
    xs = np.arange(w)[None, :]
    out = x.copy()
    for p in range(n_patches):
        rows = (ys >= y0[:, p:p + 1]) & (ys < y0[:, p:p + 1] + ph)     # [n, H]
        cols = (xs >= x0[:, p:p + 1]) & (xs < x0[:, p:p + 1] + pw)     # [n, W]
        mask = rows[:, :, None] & cols[:, None, :]
        out = np.where(mask[..., None], colours[:, p, None, None, :], out)
    return out


def _rgb_overexposure(x, s, rng, ctx):
    k = _per_image(s, 4)
    return x * (1.0 + 3.0 * k) + 0.2 * k


# --------------------------------------------------------------------------------------------
# Depth: float32 [n, H, W] metres, NaN invalid -> same (NaN stays NaN)
# --------------------------------------------------------------------------------------------

def _depth_gaussian_noise(x, s, rng, ctx):
    k = _per_image(s, 3)
    # Non-finite readings (NaN, and REP 118's +-inf) keep their meaning: noise on inf would
    # turn some of them into NaN.
    finite = np.isfinite(x)
    z = np.where(finite, x, 0.0)
    noisy = z + _randn(rng, x.shape) * (k * (0.01 + 0.15 * z))
    # Reflect the (rare) negative readings: depth cannot be negative.
    return np.where(finite, np.abs(noisy), x)


def _ranked_fraction_mask(field: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Mask the ``fraction`` of each sample's elements with the lowest ``field`` values.

    Thresholding one fixed field by rank gives exact fractions, and a larger fraction always
    contains the mask of a smaller one (monotone in severity for a fixed random draw).  Any
    positive fraction masks at least one element, so a corruption is never a silent no-op.
    """
    n = len(field)
    flat = field.reshape(n, -1)
    count = np.rint(fraction * flat.shape[1]).astype(int)
    count = np.where(fraction > 0, np.maximum(count, 1), 0)
    ordered = np.sort(flat, axis=1)
    threshold = np.take_along_axis(ordered, np.maximum(count - 1, 0)[:, None], axis=1)
    return ((flat <= threshold) & (count[:, None] > 0)).reshape(field.shape)


def _depth_holes(x, s, rng, ctx):
    n, h, w = x.shape
    # Blobs, as real depth sensors lose whole regions (specular or dark surfaces), not pixels.
    gh, gw = max(2, h // 8), max(2, w // 8)
    coarse = rng.random((n, gh, gw)).astype(np.float32)
    field = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in coarse])
    holes = _ranked_fraction_mask(field, 0.9 * s)
    return np.where(holes, np.float32(np.nan), x)


def _depth_quantisation(x, s, rng, ctx):
    step = _per_image(0.5 * s, 3).astype(np.float64)
    return ((np.floor(x / step) + 0.5) * step).astype(np.float32)


def _depth_blocked(x, s, rng, ctx):
    n, h, w = x.shape
    edge = rng.integers(0, 4, size=n)  # 0 top, 1 bottom, 2 left, 3 right
    ys = np.arange(h)[None, :, None]
    xs = np.arange(w)[None, None, :]
    rows = np.rint(s * h).astype(int)[:, None, None]
    cols = np.rint(s * w).astype(int)[:, None, None]
    e = edge[:, None, None]
    blocked = (((e == 0) & (ys < rows)) | ((e == 1) & (ys >= h - rows))
               | ((e == 2) & (xs < cols)) | ((e == 3) & (xs >= w - cols)))
    return np.where(blocked, np.float32(np.nan), x)


# --------------------------------------------------------------------------------------------
# Audio: float32 [n, T] -> same, clipped to [-1, 1]
# --------------------------------------------------------------------------------------------

def _unit_power(noise: np.ndarray) -> np.ndarray:
    power = np.mean(noise.astype(np.float64) ** 2, axis=1, keepdims=True)
    return (noise / np.sqrt(np.maximum(power, 1e-12))).astype(np.float32)


def _add_at_snr(x: np.ndarray, noise: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Scale unit-power ``noise`` to the SNR that severity ``s`` maps to, and add it."""
    signal_power = np.maximum(np.mean(x.astype(np.float64) ** 2, axis=1), MIN_SIGNAL_POWER)
    noise_power = signal_power / 10.0 ** (severity_to_snr_db(s) / 10.0)
    return x + noise * np.sqrt(noise_power).astype(np.float32)[:, None]


def _white(n: int, t: int, rng) -> np.ndarray:
    return _randn(rng, (n, t))


def _pink(n: int, t: int, rng) -> np.ndarray:
    # scipy.fft keeps float32 (numpy's upcasts to float64 and is ~3x slower here).
    spectrum = scipy.fft.rfft(_randn(rng, (n, t)), axis=1)
    freqs = np.fft.rfftfreq(t).astype(np.float32)
    shaping = np.zeros_like(freqs)
    shaping[1:] = 1.0 / np.sqrt(freqs[1:])  # power ~ 1/f; DC removed
    return _unit_power(scipy.fft.irfft(spectrum * shaping, n=t, axis=1).astype(np.float32))


def _audio_white_noise(x, s, rng, ctx):
    return _add_at_snr(x, _white(*x.shape, rng), s)


def _audio_pink_noise(x, s, rng, ctx):
    return _add_at_snr(x, _pink(*x.shape, rng), s)


def _bank_crops(bank: np.ndarray, count: int, t: int, rng) -> np.ndarray:
    """``count`` random length-``t`` crops from a bank of clips [N, T'] (tiled when short)."""
    rows = rng.integers(0, len(bank), size=count)
    reps = int(np.ceil(t / bank.shape[1]))
    tiled = np.tile(bank, (1, reps + 1))
    starts = rng.integers(0, bank.shape[1], size=count)
    idx = starts[:, None] + np.arange(t)[None, :]
    return tiled[rows[:, None], idx]


def _babble_noise(ctx: _Context, t: int, rng) -> np.ndarray:
    """Sum of up to BABBLE_TALKERS other talkers for each corrupted row, at unit power.

    Talkers come from other samples of the batch whose label differs (any other sample when
    the batch has no labels); rows with no such sample draw from ``babble_bank``.
    """
    audio, index = ctx.audio, ctx.index
    b, k = len(audio), BABBLE_TALKERS
    noise = np.zeros((len(index), t), np.float32)
    lonely = np.zeros(len(index), bool)
    # Rows in chunks: the candidate matrix is [rows, B], and B can be a whole test set.
    for lo in range(0, len(index), 256):
        rows = index[lo:lo + 256]
        candidates = np.ones((len(rows), b), bool)
        candidates[np.arange(len(rows)), rows] = False
        if ctx.labels is not None:
            candidates &= ctx.labels[None, :] != ctx.labels[rows][:, None]
        # Random choice without replacement per row: the k smallest random keys among the
        # candidates (non-candidates get +inf and are flagged unusable if picked).
        keys = np.where(candidates, rng.random(candidates.shape, dtype=np.float32), np.inf)
        picks = (np.argpartition(keys, k - 1, axis=1)[:, :k] if b > k
                 else np.argsort(keys, axis=1))
        usable = np.take_along_axis(candidates, picks, axis=1)          # [rows, <=k]
        talkers = _unit_power(audio[picks.reshape(-1)]).reshape(len(rows), -1, t)
        noise[lo:lo + 256] = np.sum(talkers * usable[..., None], axis=1)
        lonely[lo:lo + 256] = ~usable.any(axis=1)
    if lonely.any():
        if ctx.babble_bank is None:
            raise ValueError(
                f'babble: {int(lonely.sum())} sample(s) have no other sample with a different '
                'label in the batch; pass babble_bank (clips [N, T] of speech) to corrupt them')
        crops = _bank_crops(ctx.babble_bank, int(lonely.sum()) * BABBLE_TALKERS, t, rng)
        noise[lonely] = _unit_power(crops).reshape(-1, BABBLE_TALKERS, t).sum(axis=1)
    return _unit_power(noise)


def _audio_babble(x, s, rng, ctx):
    return _add_at_snr(x, _babble_noise(ctx, x.shape[1], rng), s)


def _audio_clipping(x, s, rng, ctx):
    level = (np.max(np.abs(x), axis=1) * (1.0 - 0.9 * s))[:, None]
    return np.clip(x, -level, level)


def _audio_dropout(x, s, rng, ctx):
    n, t = x.shape
    packet = max(1, int(round(DROPOUT_PACKET_S * SAMPLE_RATE)))
    n_packets = int(np.ceil(t / packet))
    lost = _ranked_fraction_mask(rng.random((n, n_packets)), 0.75 * s)
    return np.where(np.repeat(lost, packet, axis=1)[:, :t], np.float32(0.0), x)


def _audio_muted(x, s, rng, ctx):
    return x * (1.0 - s)[:, None]


_Fn = Callable[[np.ndarray, np.ndarray, np.random.Generator, _Context], np.ndarray]
_CORRUPTIONS: Dict[str, Dict[str, _Fn]] = {
    'rgb': {'gaussian_noise': _rgb_gaussian_noise, 'low_light': _rgb_low_light,
            'gaussian_blur': _rgb_gaussian_blur, 'motion_blur': _rgb_motion_blur,
            'occlusion': _rgb_occlusion, 'overexposure': _rgb_overexposure},
    'depth': {'gaussian_noise': _depth_gaussian_noise, 'holes': _depth_holes,
              'quantisation': _depth_quantisation, 'blocked': _depth_blocked},
    'audio': {'white_noise': _audio_white_noise, 'pink_noise': _audio_pink_noise,
              'babble': _audio_babble, 'clipping': _audio_clipping,
              'dropout': _audio_dropout, 'muted': _audio_muted},
}
assert all(set(_CORRUPTIONS[m]) == set(CORRUPTION_TYPES[m][1:]) for m in MODALITIES)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------

_EXPECTED = {'rgb': (np.uint8, 4), 'depth': (np.float32, 3), 'audio': (np.float32, 2)}


def _check_array(modality: str, x: np.ndarray) -> None:
    dtype, ndim = _EXPECTED[modality]
    if x.dtype != dtype or x.ndim != ndim or (modality == 'rgb' and x.shape[-1] != 3):
        raise ValueError(f'{modality} must be {np.dtype(dtype).name} with {ndim} dims'
                         f'{" [B, H, W, 3]" if modality == "rgb" else ""}; '
                         f'got {x.dtype} {x.shape}')


def _as_severity(severity: Severity, n: int) -> np.ndarray:
    s = np.asarray(severity, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(n, float(s))
    if s.shape != (n,):
        raise ValueError(f'severity must be a scalar or shape ({n},); got {s.shape}')
    if not np.all(np.isfinite(s)) or np.any(s < 0) or np.any(s > 1):
        raise ValueError(f'severity must lie in [0, 1]; got min {s.min()}, max {s.max()}')
    return s.astype(np.float32)


def _as_codes(modality: str, ctype: CType, n: int) -> np.ndarray:
    types = _types_of(modality)
    if isinstance(ctype, (str, int, np.integer)):
        ctype = [ctype] * n
    values = list(ctype)
    if len(values) != n:
        raise ValueError(f'ctype must be one type or {n} per-sample types; got {len(values)}')
    codes = np.empty(n, np.int64)
    for i, v in enumerate(values):
        if isinstance(v, (int, np.integer)):
            if not 0 <= v < len(types):
                raise ValueError(f'{modality} corruption index {v} out of range '
                                 f'0..{len(types) - 1}')
            codes[i] = v
        else:
            codes[i] = ctype_index(modality, str(v))
    return codes


def apply_corruption(batch: RawBatch, modality: str, ctype: CType, severity: Severity,
                     rng: np.random.Generator, *,
                     babble_bank: Optional[np.ndarray] = None) -> RawBatch:
    """Corrupt one modality of a raw batch; returns a new batch and never mutates ``batch``.

    ``ctype`` is a type name or index (see ``CORRUPTION_TYPES``), or one per sample;
    ``severity`` a scalar or one per sample, in [0, 1].  Labels ``severity_<m>`` (float32)
    and ``ctype_<m>`` (int64) are set for every sample; a sample whose severity is 0 is left
    untouched and labelled clean (ctype 0), since its data is exactly the clean data.
    'clean' with a positive severity is rejected.  Arrays of the other modalities are shared
    with ``batch``, not copied.

    ``babble`` mixes other samples' audio from this batch (different labels only, when the
    batch has labels); ``babble_bank`` (float32 clips [N, T'] or one clip [T']) serves samples
    that have no such partner, e.g. a batch of one.
    """
    types = _types_of(modality)
    if modality not in batch:
        raise ValueError(f'batch has no {modality!r}; present: {present_modalities(batch)}')
    x = batch[modality]
    _check_array(modality, x)
    n = len(x)
    sev = _as_severity(severity, n)
    codes = _as_codes(modality, ctype, n)
    if np.any((codes == 0) & (sev > 0)):
        raise ValueError(f"{modality}: type 'clean' needs severity 0")
    bank = None
    if babble_bank is not None:
        bank = np.atleast_2d(np.asarray(babble_bank, dtype=np.float32))
        if bank.ndim != 2 or bank.shape[1] == 0 or len(bank) == 0:
            raise ValueError(f'babble_bank must be clips [N, T]; got {np.shape(babble_bank)}')

    active = sev > 0
    out = x.copy()
    for code in np.unique(codes[active]):
        index = np.flatnonzero(active & (codes == code))
        ctx = _Context(audio=batch.get('audio'), labels=batch.get('label'), index=index,
                       babble_bank=bank)
        fn = _CORRUPTIONS[modality][types[code]]
        if modality == 'rgb':
            y = fn(x[index].astype(np.float32) / np.float32(255.0), sev[index], rng, ctx)
            out[index] = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
        elif modality == 'audio':
            out[index] = np.clip(fn(x[index], sev[index], rng, ctx), -1.0, 1.0)
        else:
            out[index] = fn(x[index], sev[index], rng, ctx)

    result = dict(batch)
    result[modality] = out
    result[f'severity_{modality}'] = np.where(active, sev, 0).astype(np.float32)
    result[f'ctype_{modality}'] = np.where(active, codes, 0).astype(np.int64)
    return result


# --------------------------------------------------------------------------------------------
# Sampling policies
# --------------------------------------------------------------------------------------------

SAMPLER_POLICIES = ('independent', 'one_at_a_time', 'up_to_two', 'clean')


@dataclass
class CorruptionSampler:
    """Draws a corruption for every (sample, modality) and applies it; a training augmentation.

    Policies:

    * ``independent`` (ADMN's setting): each present modality of each sample is clean with
      probability ``p_clean``, else corrupted with a uniformly chosen allowed type;
    * ``one_at_a_time``: a sample is fully clean with probability ``p_clean``, else exactly one
      present modality (chosen uniformly among those with allowed types) is corrupted;
    * ``up_to_two``: as ``one_at_a_time``, but half the corrupted samples get a second, different
      modality corrupted too (independently drawn type and severity), so a controller sees pairs of
      failing sensors and must read each sensor's own state, not "one is bad, so the others are not";
    * ``clean``: nothing is corrupted (labels still written).

    ``keep_recorded`` (default): a (sample, modality) that the batch already tags as degraded
    (``severity_<m>`` > 0, e.g. a recording's own condition from a folder dataset or a bag) is
    real data about a real condition: it is left as it is, tag included, and any corruption
    drawn for it is dropped. Untagged data is corrupted exactly as without the option.

    Severities are drawn uniformly from ``severity_levels`` when given, else ~U[severity_range].
    ``types`` restricts the allowed types per modality (None = all; an empty tuple keeps that
    modality clean).  Labels are written for every present modality, 0 when untouched.
    Batches of one sample (streams) need ``babble_bank`` whenever babble may be drawn.
    """

    policy: str = 'independent'
    p_clean: float = 0.5
    severity_range: Tuple[float, float] = (0.1, 1.0)
    severity_levels: Optional[Tuple[float, ...]] = None
    types: Optional[Mapping[str, Tuple[str, ...]]] = None
    babble_bank: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
    keep_recorded: bool = True

    def __post_init__(self):
        if self.policy not in SAMPLER_POLICIES:
            raise ValueError(f'unknown policy {self.policy!r}; known: {SAMPLER_POLICIES}')
        if not 0.0 <= self.p_clean <= 1.0:
            raise ValueError(f'p_clean must lie in [0, 1]; got {self.p_clean}')
        lo, hi = self.severity_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f'severity_range must satisfy 0 <= min <= max <= 1; got {(lo, hi)}')
        if self.severity_levels is not None:
            levels = tuple(float(v) for v in self.severity_levels)
            if not levels or any(not 0.0 < v <= 1.0 for v in levels):
                raise ValueError(f'severity_levels must be non-empty, in (0, 1]; got {levels}')
            self.severity_levels = levels
        allowed = {}
        for m, names in (self.types or {}).items():
            names = (names,) if isinstance(names, str) else tuple(names)
            if 'clean' in names:
                raise ValueError(f"types[{m!r}] lists 'clean'; use p_clean for clean samples")
            for name in names:
                ctype_index(m, name)  # raises on unknown modality or type
            allowed[m] = names
        self.types = None if self.types is None else allowed

    @classmethod
    def standard(cls, **overrides) -> 'CorruptionSampler':
        """The standard evaluation mix.

        Independent per modality, clean with probability 0.4, otherwise any of the
        modality's types at one of four severities (0.25, 0.5, 0.75, 1.0), chosen uniformly.
        Every test table in this project uses this mix unless it says otherwise.
        """
        params = dict(policy='independent', p_clean=0.4, severity_levels=(0.25, 0.5, 0.75, 1.0))
        params.update(overrides)
        return cls(**params)

    def allowed_types(self, modality: str) -> Tuple[str, ...]:
        """Corruption types this sampler may draw for ``modality``."""
        if self.types is None:
            return CORRUPTION_TYPES[modality][1:]
        return self.types.get(modality, ())

    def _severities(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.severity_levels is not None:
            return np.asarray(self.severity_levels)[rng.integers(0, len(self.severity_levels), n)]
        return rng.uniform(*self.severity_range, size=n)

    def __call__(self, batch: RawBatch, rng: np.random.Generator) -> RawBatch:
        present = present_modalities(batch)
        n = batch_size(batch)
        eligible = np.array([bool(self.allowed_types(m)) for m in present], bool)
        corrupt = np.zeros((n, len(present)), bool)
        if self.policy == 'independent':
            corrupt = (rng.random((n, len(present))) >= self.p_clean) & eligible[None, :]
        elif self.policy in ('one_at_a_time', 'up_to_two') and eligible.any():
            hit = rng.random(n) >= self.p_clean
            choices = np.flatnonzero(eligible)
            which = choices[rng.integers(0, len(choices), size=n)]
            corrupt[np.arange(n), which] = hit
            if self.policy == 'up_to_two' and len(choices) > 1:
                # A second, different modality: shift the first by 1..len-1 places among the choices.
                first = np.searchsorted(choices, which)
                step = rng.integers(1, len(choices), size=n)
                second = choices[(first + step) % len(choices)]
                corrupt[np.arange(n), second] |= hit & (rng.random(n) < 0.5)

        out = dict(batch)
        for j, m in enumerate(present):
            allowed = self.allowed_types(m)
            codes = np.zeros(n, np.int64)
            sev = np.zeros(n, np.float32)
            # Masked after the draws: untagged data gets exactly what it got before the option.
            recorded = self._recorded(batch, m, n)
            if allowed:
                picks = np.array([ctype_index(m, t) for t in allowed])[
                    rng.integers(0, len(allowed), size=n)]
                codes = np.where(corrupt[:, j] & ~recorded, picks, 0)
                sev = np.where(corrupt[:, j] & ~recorded, self._severities(n, rng), 0.0)
            out = apply_corruption(out, m, codes, sev, rng, babble_bank=self.babble_bank)
            if recorded.any():   # untouched rows were labelled clean: put the recorded tags back
                for key in (f'severity_{m}', f'ctype_{m}'):
                    out[key] = np.where(recorded, batch[key], out[key]).astype(out[key].dtype)
        return out

    def _recorded(self, batch: RawBatch, modality: str, n: int) -> np.ndarray:
        """Samples whose ``modality`` the batch already tags as degraded (kept when asked)."""
        key = f'severity_{modality}'
        if not self.keep_recorded or key not in batch or f'ctype_{modality}' not in batch:
            return np.zeros(n, bool)
        return np.asarray(batch[key]) > 0


def corruption_labels(batch: RawBatch) -> Dict[str, Tuple[List[str], np.ndarray]]:
    """``{modality: (type names, severities)}`` from a batch's ``ctype_<m>`` / ``severity_<m>`` labels."""
    out = {}
    for m in MODALITIES:
        has_type, has_severity = f'ctype_{m}' in batch, f'severity_{m}' in batch
        if not (has_type or has_severity):
            continue
        if not (has_type and has_severity):
            raise ValueError(f'batch has only one of ctype_{m} / severity_{m}')
        types = CORRUPTION_TYPES[m]
        codes = np.asarray(batch[f'ctype_{m}'])
        if np.any(codes < 0) or np.any(codes >= len(types)):
            raise ValueError(f'ctype_{m} holds indices outside 0..{len(types) - 1}')
        out[m] = ([types[int(c)] for c in codes], np.asarray(batch[f'severity_{m}'], np.float64))
    return out
