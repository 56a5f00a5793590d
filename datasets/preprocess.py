"""The one preprocessing path from raw batches to model tensors (training, evaluation, ROS nodes).

=========  ==========================================  =========================================
modality   model input                                 steps
=========  ==========================================  =========================================
rgb        float32 [B, 3, S, S], normalised            centre-crop to square, OpenCV resize
                                                       (area down / linear up), /255, fixed
                                                       ImageNet mean / std
depth      float32 [B, 1, S, S] in [0, 1]              NaN / inf / negative -> 0 (invalid), crop,
                                                       nearest resize (never blends an invalid
                                                       pixel into a valid one), clip to
                                                       ``depth_max_m``, / ``depth_max_m``
audio      float32 [B, 1, n_mels, n_frames] log-mel    pad / crop the waveform to the clip length
                                                       (keeps the start), centred STFT with a
                                                       periodic Hann window (zero padded, as
                                                       ``torch.stft(center=True,
                                                       pad_mode='constant')``), power scaled so a
                                                       full-scale sine is 0 dB, librosa mel
                                                       filterbank (cached), dB with an -80 dB
                                                       floor, fixed (dB + 40) / 20
=========  ==========================================  =========================================

The log-mel runs in numpy (pocketfft) with the filterbank as a sparse matrix, not in torch: for one
clip the filterbank product is a tiny GEMM that torch hands to its OpenMP/BLAS pool, and on a busy
machine that pool stalls for tens of milliseconds waiting for a descheduled thread (measured: p50
0.07 ms alone, 20 ms next to one busy process). The numbers agree with the torch formulation to
~1e-5 (``tests/test_preprocess.py`` keeps that reference).

``controller_views`` gives the controller's cheap inputs: the same normalisation at
``controller_size`` (rgb area-resized, depth nearest-resized, log-mel 2x2 average-pooled).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Dict, Optional

import cv2
import librosa
import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE, RawBatch, present_modalities
from admn_ros.datasets.validate import at_least, positive

RGB_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics: fixed, dataset-independent
RGB_STD = (0.229, 0.224, 0.225)
DB_FLOOR = -80.0                  # log-mel floor (dB re a full-scale sine)
DB_MEAN, DB_STD = -40.0, 20.0     # maps [-80, 0] dB to [-2, 2]


@dataclass(frozen=True)
class PreprocessConfig:
    """Model input geometry and audio front-end settings."""

    image_size: int = 64
    depth_max_m: float = 4.0
    clip_seconds: float = 1.0
    n_fft: int = 512
    hop_length: int = 250
    n_mels: int = 64
    n_frames: int = 64
    controller_size: int = 32

    LIMITS: ClassVar[dict] = {'image_size': at_least(1), 'depth_max_m': positive(),
                              'clip_seconds': positive(), 'n_fft': at_least(2),
                              'hop_length': at_least(1), 'n_mels': at_least(1),
                              'n_frames': at_least(1), 'controller_size': at_least(1)}

    def __post_init__(self):
        for name in ('image_size', 'n_fft', 'hop_length', 'n_mels', 'n_frames', 'controller_size'):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f'{name} must be a positive integer, got {getattr(self, name)!r}')
        if self.depth_max_m <= 0:
            raise ValueError(f'depth_max_m must be positive, got {self.depth_max_m}')
        if self.clip_seconds <= 0:
            raise ValueError(f'clip_seconds must be positive, got {self.clip_seconds}')
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f'n_mels={self.n_mels} exceeds the {self.n_fft // 2 + 1} STFT bins')

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * SAMPLE_RATE))


@lru_cache(maxsize=8)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mel filterbank float32 [n_mels, n_fft // 2 + 1] (unit-peak triangles, cached, read-only)."""
    bank = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0,
                               fmax=sample_rate / 2, norm=None).astype(np.float32)
    bank.flags.writeable = False
    return bank


@lru_cache(maxsize=8)
def _mel_projection(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE):
    """The filterbank transposed, as a sparse CSR matrix [bins, n_mels]: each bin feeds at most two
    triangles, so the product is ~100x fewer multiply-adds and never touches a BLAS thread pool."""
    return sparse.csr_matrix(mel_filterbank(n_fft, n_mels, sample_rate).T)


@lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window float32 [n_fft] (``torch.hann_window(periodic=True)``), read-only."""
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    window.flags.writeable = False
    return window


class Preprocessor:
    """``pre(raw_batch) -> {modality: FloatTensor}`` for the modalities present, vectorised over B."""

    def __init__(self, cfg: Optional[PreprocessConfig] = None):
        self.cfg = cfg or PreprocessConfig()

    # ---------------------------------------------------------------- public API
    def __call__(self, batch: RawBatch) -> Dict[str, 'torch.Tensor']:
        present = _check_batch(batch)
        size = self.cfg.image_size
        out = {}
        if 'rgb' in present:
            out['rgb'] = self.rgb(batch['rgb'], size)
        if 'depth' in present:
            out['depth'] = self.depth(batch['depth'], size)
        if 'audio' in present:
            out['audio'] = self.log_mel(batch['audio'])
        return out

    def controller_views(self, batch: RawBatch, log_mel: Optional['torch.Tensor'] = None
                         ) -> Dict[str, 'torch.Tensor']:
        """Cheap low-resolution views for the allocation controller (same normalisation).

        ``log_mel``: this batch's audio model input (``self(batch)['audio']``) when the caller has
        it already; it is pooled instead of recomputed (same result)."""
        present = _check_batch(batch)
        size = self.cfg.controller_size
        out = {}
        if 'rgb' in present:
            out['rgb'] = self.rgb(batch['rgb'], size)
        if 'depth' in present:
            out['depth'] = self.depth(batch['depth'], size)
        if 'audio' in present:
            mel = self.log_mel(batch['audio']) if log_mel is None else log_mel
            out['audio'] = F.adaptive_avg_pool2d(mel, (size, size))
        return out

    @staticmethod
    def sample_to_batch(rgb=None, depth=None, audio=None, label: Optional[int] = None) -> RawBatch:
        """One sample (rgb HxWx3 uint8, depth HxW metres, audio [T] float or int16 PCM) -> raw batch of 1."""
        batch: RawBatch = {}
        if rgb is not None:
            rgb = np.asarray(rgb)
            if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f'rgb must be uint8 HxWx3, got {rgb.dtype} {rgb.shape}')
            batch['rgb'] = rgb[None]
        if depth is not None:
            depth = np.asarray(depth)
            if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
                raise ValueError(f'depth must be float metres HxW, got {depth.dtype} {depth.shape}')
            batch['depth'] = depth.astype(np.float32)[None]
        if audio is not None:
            audio = np.asarray(audio)
            if audio.ndim != 1:
                raise ValueError(f'audio must be a 1-D waveform, got shape {audio.shape}')
            if audio.dtype == np.int16:
                audio = audio.astype(np.float32) / 32768.0
            elif not np.issubdtype(audio.dtype, np.floating):
                raise ValueError(f'audio must be float in [-1, 1] or int16 PCM, got {audio.dtype}')
            batch['audio'] = audio.astype(np.float32)[None]
        if not batch:
            raise ValueError('sample_to_batch needs at least one of rgb, depth, audio')
        if label is not None:
            batch['label'] = np.array([label], np.int64)
        return batch

    # ---------------------------------------------------------------- per modality
    def rgb(self, images: np.ndarray, size: int):
        resized = _resize_each(images, size, cv2.INTER_AREA, cv2.INTER_LINEAR)
        # numpy, not torch: these small element-wise ops are single-threaded and never wait on a
        # busy OpenMP pool.
        scale = (1.0 / (255.0 * np.asarray(RGB_STD, np.float32)))
        offset = np.asarray(RGB_MEAN, np.float32) / np.asarray(RGB_STD, np.float32)
        normalised = resized.astype(np.float32) * scale - offset
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))

    def depth(self, depth: np.ndarray, size: int):
        metres = np.asarray(depth, np.float32)
        valid = np.isfinite(metres) & (metres > 0)
        metres = np.where(valid, metres, 0.0).astype(np.float32)
        resized = _resize_each(metres[..., None], size, cv2.INTER_NEAREST, cv2.INTER_NEAREST)[..., 0]
        scaled = np.clip(resized, 0.0, self.cfg.depth_max_m) / self.cfg.depth_max_m
        return torch.from_numpy(np.ascontiguousarray(scaled, np.float32)).unsqueeze(1)

    def log_mel(self, audio: np.ndarray):
        """Waveforms [B, T] -> normalised log-mel [B, 1, n_mels, n_frames]."""
        cfg = self.cfg
        wave = np.asarray(audio, np.float32)
        # Crop / zero-pad to the clip length and add the n_fft // 2 zeros on either side that
        # centre the frames, in one buffer (np.pad alone costs more than the FFT here).
        length, half = cfg.clip_samples, cfg.n_fft // 2
        kept = min(wave.shape[1], length)
        padded = np.zeros((wave.shape[0], length + 2 * half), np.float32)
        padded[:, half:half + kept] = wave[:, :kept]
        window = hann_window(cfg.n_fft)
        frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft, axis=1)
        frames = frames[:, ::cfg.hop_length] * window           # [B, frames, n_fft], a copy
        spec = np.fft.rfft(frames, axis=-1)                     # complex64: numpy keeps float32
        # Scale so a full-scale sine's peak bin has power 1 (0 dB): |X| = A * sum(w) / 2.
        power = spec.real ** 2 + spec.imag ** 2
        power /= np.float32((float(window.sum(dtype=np.float64)) / 2) ** 2)
        batch, n_frames, bins = power.shape
        mel = power.reshape(batch * n_frames, bins) @ _mel_projection(cfg.n_fft, cfg.n_mels)
        mel = np.asarray(mel, np.float32).reshape(batch, n_frames, cfg.n_mels).transpose(0, 2, 1)
        db = np.float32(10.0) * np.log10(np.maximum(mel, np.float32(10 ** (DB_FLOOR / 10))))
        if n_frames >= cfg.n_frames:
            db = db[..., :cfg.n_frames]
        else:
            db = np.pad(db, ((0, 0), (0, 0), (0, cfg.n_frames - n_frames)),
                        constant_values=DB_FLOOR)
        normalised = (db - np.float32(DB_MEAN)) / np.float32(DB_STD)
        return torch.from_numpy(np.ascontiguousarray(normalised[:, None], np.float32))


# ------------------------------------------------------------------------------- helpers

def _check_batch(batch: RawBatch) -> tuple:
    """Validate dtypes / shapes of the modalities present; returns them in canonical order."""
    if not isinstance(batch, dict):
        raise ValueError(f'expected a raw batch (dict of numpy arrays), got {type(batch).__name__}')
    present = present_modalities(batch)
    if not present:
        raise ValueError(f'raw batch has none of the modalities {MODALITIES}; keys: {sorted(batch)}')
    sizes = {m: len(batch[m]) for m in present}
    if len(set(sizes.values())) > 1:
        raise ValueError(f'modalities disagree on batch size: {sizes}')
    if 'rgb' in batch:
        rgb = batch['rgb']
        if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f'rgb must be uint8 [B, H, W, 3], got {rgb.dtype} {rgb.shape}')
    if 'depth' in batch:
        depth = batch['depth']
        if depth.ndim != 3 or not np.issubdtype(depth.dtype, np.floating):
            raise ValueError(f'depth must be float metres [B, H, W], got {depth.dtype} {depth.shape}')
    if 'audio' in batch:
        audio = batch['audio']
        if audio.ndim != 2 or not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f'audio must be float [B, T] in [-1, 1], got {audio.dtype} {audio.shape}')
    return present


def _resize_each(images: np.ndarray, size: int, shrink: int, grow: int) -> np.ndarray:
    """Centre-crop [B, H, W, C] images to square and resize each to ``size`` x ``size``.

    One OpenCV call per image: stacking the batch into channels is not bit-identical to single
    images in OpenCV, and batch / single consistency matters more here than a few microseconds.
    """
    _, height, width, channels = images.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    images = images[:, top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(images)
    interpolation = shrink if side > size else grow
    out = np.empty((len(images), size, size, channels), images.dtype)
    for i, image in enumerate(images):
        resized = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interpolation)
        out[i] = resized.reshape(size, size, channels)
    return out


def shrink_to_input(image: np.ndarray, size: int, modality: str) -> np.ndarray:
    """One ``rgb`` (HxWx3) or ``depth`` (HxW) image larger than ``size`` centre-cropped and shrunk
    to ``size`` x ``size`` exactly as :class:`Preprocessor` does it (same crop, same interpolation),
    which then has nothing left to do: the model inputs are the same as from the full image.
    Resize on load (folder datasets, the bag importer) uses it so large recordings cost no more per
    epoch than small ones. Images not larger than ``size`` are returned unchanged."""
    if min(image.shape[:2]) <= size:
        return image
    if modality == 'rgb':
        return _resize_each(image[None], size, cv2.INTER_AREA, cv2.INTER_LINEAR)[0]
    if modality == 'depth':
        return _resize_each(image[None, ..., None], size, cv2.INTER_NEAREST, cv2.INTER_NEAREST)[0, ..., 0]
    raise ValueError(f'shrink_to_input takes rgb or depth images, not {modality!r}')
