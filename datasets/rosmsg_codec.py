"""numpy <-> ``sensor_msgs/Image`` / ``audio_common_msgs`` fields, without ROS.

Everything is duck-typed on attribute names, so the same code decodes rclpy messages (``data``
is an ``array.array``), rosbags messages (``data`` is a numpy array) or any object with the
fields. Encoding builders return plain dicts of field values, which callers splat into whichever
message class they use: ``Image(**image_fields(arr, 'rgb8'), header=...)``.

Array conventions (what :func:`image_to_array` returns and :func:`image_fields` expects):

=============================  ===================================================
encoding                       array
=============================  ===================================================
``rgb8`` ``bgr8``              uint8 ``[H, W, 3]`` in **RGB** order (bgr8 is swapped)
``rgba8`` ``bgra8`` (read)     uint8 ``[H, W, 3]`` RGB, alpha dropped
``mono8`` / ``mono16``         uint8 / uint16 ``[H, W]``
``16UC1``                      float32 ``[H, W]`` metres, 0 mm -> NaN (REP 118);
                               writing also accepts raw uint16 millimetres
``32FC1``                      float32 ``[H, W]`` (depth in metres, or audio rows)
``16SC1``                      int16 ``[H, W]`` (audio rows: one per channel)
=============================  ===================================================

Audio in an Image: one row per channel, width = samples, ``header.stamp`` = capture time of the
first sample; :func:`audio_to_image_fields` / :func:`audio_from_image` convert float32 waves in
[-1, 1] (``16SC1`` uses the full-scale factor 32768).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

INT16_SCALE = 32768.0

# encoding -> (numpy dtype, channels)
_READ_ENCODINGS: Dict[str, Tuple[np.dtype, int]] = {
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    'rgba8': (np.dtype(np.uint8), 4),
    'bgra8': (np.dtype(np.uint8), 4),
    'mono8': (np.dtype(np.uint8), 1),
    'mono16': (np.dtype(np.uint16), 1),
    '16UC1': (np.dtype(np.uint16), 1),
    '16SC1': (np.dtype(np.int16), 1),
    '32FC1': (np.dtype(np.float32), 1),
}
WRITE_ENCODINGS = ('rgb8', 'bgr8', 'mono8', 'mono16', '16UC1', '16SC1', '32FC1')
READ_ENCODINGS = tuple(_READ_ENCODINGS)


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` as integer nanoseconds; ValueError for a headerless message."""
    header = getattr(msg, 'header', None)
    stamp = getattr(header, 'stamp', None)
    if stamp is None:
        raise ValueError(f'{type(msg).__name__} has no header.stamp')
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def split_stamp(stamp_ns: int) -> Tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) as in ``builtin_interfaces/Time``."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f'negative stamp {stamp_ns} ns cannot be a builtin_interfaces/Time')
    return stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000


def _as_bytes_array(data: Any) -> np.ndarray:
    """View any ``uint8[]`` field (bytes, array.array, numpy, list) as a flat uint8 array."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ValueError(f'uint8[] field holds dtype {data.dtype}')
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_to_array(msg: Any) -> np.ndarray:
    """Decode an Image-like message into a fresh numpy array (see the module table)."""
    encoding = str(msg.encoding)
    if encoding not in _READ_ENCODINGS:
        raise ValueError(f'unsupported image encoding {encoding!r}; '
                         f'supported: {", ".join(READ_ENCODINGS)}')
    dtype, channels = _READ_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(f'{encoding} image: step {step} < width {width} x {channels} channel(s) '
                         f'x {dtype.itemsize} byte(s) = {row_bytes}')
    buf = _as_bytes_array(msg.data)
    if buf.size != height * step:
        raise ValueError(f'{encoding} image: data holds {buf.size} bytes, expected '
                         f'height {height} x step {step} = {height * step}')
    rows = np.ascontiguousarray(buf.reshape(height, step)[:, :row_bytes])
    wire = dtype.newbyteorder('>' if int(msg.is_bigendian) else '<')
    arr = rows.view(wire).reshape(height, width, channels).astype(dtype)  # native order, copy

    if encoding in ('rgb8', 'rgba8'):
        return np.ascontiguousarray(arr[..., :3])
    if encoding in ('bgr8', 'bgra8'):
        return np.ascontiguousarray(arr[..., 2::-1])
    arr = arr[..., 0]
    if encoding == '16UC1':
        metres = arr.astype(np.float32) * np.float32(0.001)
        metres[arr == 0] = np.nan
        return metres
    return arr


def image_fields(arr: np.ndarray, encoding: str) -> Dict[str, Any]:
    """Image fields (height, width, encoding, is_bigendian=0, step, data=bytes) for ``arr``."""
    if encoding not in WRITE_ENCODINGS:
        raise ValueError(f'cannot encode {encoding!r}; supported: {", ".join(WRITE_ENCODINGS)}')
    arr = np.asarray(arr)
    if encoding in ('rgb8', 'bgr8'):
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f'{encoding} needs uint8 [H, W, 3] RGB, got {arr.dtype} {arr.shape}')
        out = arr[..., ::-1] if encoding == 'bgr8' else arr
    else:
        if arr.ndim != 2:
            raise ValueError(f'{encoding} needs a 2-D array, got shape {arr.shape}')
        out = _single_channel(arr, encoding)
    little = out.dtype.newbyteorder('<')
    data = np.ascontiguousarray(out, dtype=little).tobytes()
    height, width = out.shape[:2]
    return {
        'height': int(height),
        'width': int(width),
        'encoding': encoding,
        'is_bigendian': 0,
        'step': int(width * (3 if out.ndim == 3 else 1) * out.dtype.itemsize),
        'data': data,
    }


def _single_channel(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Check / convert a 2-D array to the wire dtype of a single-channel encoding."""
    exact = {'mono8': np.uint8, 'mono16': np.uint16, '16SC1': np.int16}
    if encoding in exact:
        if arr.dtype != exact[encoding]:
            raise ValueError(f'{encoding} needs dtype {np.dtype(exact[encoding])}, got {arr.dtype} '
                             '(convert explicitly; silent casts would lose data)')
        return arr
    if encoding == '32FC1':
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f'32FC1 needs a float array, got {arr.dtype}')
        return arr.astype(np.float32)
    # 16UC1: raw millimetres pass through; metres are rounded as depth_image_proc does.
    if arr.dtype == np.uint16:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f'16UC1 needs float metres or uint16 millimetres, got {arr.dtype}')
    return depth_to_mm(arr)


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Float metres -> uint16 millimetres (``m*1000 + 0.5``), non-finite -> 0 (invalid).

    Raises ValueError for negative depth or depth beyond 65.535 m, which 16UC1 cannot hold.
    """
    depth_m = np.asarray(depth_m, dtype=np.float64)
    finite = np.isfinite(depth_m)
    if np.any(depth_m[finite] < 0):
        raise ValueError('negative depth cannot be stored as 16UC1 millimetres')
    mm = np.zeros(depth_m.shape, dtype=np.float64)
    mm[finite] = np.floor(depth_m[finite] * 1000.0 + 0.5)
    if np.any(mm > np.iinfo(np.uint16).max):
        raise ValueError(f'depth up to {np.nanmax(depth_m):.3f} m exceeds the 16UC1 range '
                         '(65.535 m); use 32FC1')
    return mm.astype(np.uint16)


def audio_to_image_fields(wave: np.ndarray, encoding: str = '16SC1') -> Dict[str, Any]:
    """Image fields carrying audio: float ``[T]`` or ``[C, T]`` in [-1, 1], one row per channel.

    ``16SC1`` quantises with full scale 32768 (+1.0 saturates to 32767); ``32FC1`` stores floats.
    int16 input is accepted as already-quantised samples for ``16SC1``.
    """
    if encoding not in ('16SC1', '32FC1'):
        raise ValueError(f'audio travels as 16SC1 or 32FC1, not {encoding!r}')
    wave = np.asarray(wave)
    if wave.ndim == 1:
        wave = wave[None, :]
    if wave.ndim != 2:
        raise ValueError(f'audio must be [T] or [C, T], got shape {wave.shape}')
    if encoding == '16SC1' and wave.dtype == np.int16:
        return image_fields(wave, '16SC1')
    if encoding == '32FC1':
        _check_wave(wave)
        return image_fields(wave.astype(np.float32), '32FC1')
    return image_fields(pcm16(wave), '16SC1')


def _check_wave(wave: np.ndarray) -> None:
    if not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f'audio must be float in [-1, 1] (or int16 for 16SC1), got {wave.dtype}')
    if not np.all(np.isfinite(wave)):
        raise ValueError('audio contains NaN or Inf')
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 1.0:
        raise ValueError(f'audio peak {peak:.4f} is outside [-1, 1]; scale it first')


def pcm16(wave: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] (any shape) -> int16 PCM, full scale 32768 (+1.0 saturates).

    ValueError for non-float input, NaN / Inf or a peak beyond 1."""
    wave = np.asarray(wave)
    _check_wave(wave)
    return np.clip(np.round(wave.astype(np.float64) * INT16_SCALE), -32768, 32767).astype(np.int16)


def audio_from_image(msg: Any) -> np.ndarray:
    """Audio carried in an Image (16SC1 or 32FC1) -> float32 ``[C, T]``."""
    encoding = str(msg.encoding)
    if encoding not in ('16SC1', '32FC1'):
        raise ValueError(f'audio image must be 16SC1 or 32FC1, got {encoding!r}')
    rows = image_to_array(msg)
    if encoding == '16SC1':
        return rows.astype(np.float32) / np.float32(INT16_SCALE)
    return rows.astype(np.float32)


# --- audio_common_msgs (ros-drivers flavour) -------------------------------------------------

# sample_format -> (wire dtype, offset, scale): value = (raw - offset) / scale
_PCM_FORMATS = {
    'S8': ('i1', 0.0, 128.0),
    'U8': ('u1', 128.0, 128.0),
    'S16LE': ('<i2', 0.0, 32768.0),
    'S16BE': ('>i2', 0.0, 32768.0),
    'S32LE': ('<i4', 0.0, 2147483648.0),
    'S32BE': ('>i4', 0.0, 2147483648.0),
    'F32LE': ('<f4', 0.0, 1.0),
    'F32BE': ('>f4', 0.0, 1.0),
    'F64LE': ('<f8', 0.0, 1.0),
    'F64BE': ('>f8', 0.0, 1.0),
}
PCM_FORMATS = tuple(_PCM_FORMATS)


def _pcm_layout(info: Any) -> Tuple[np.dtype, float, float, int]:
    """(dtype, offset, scale, channels) from an AudioInfo-like object; ValueError if unusable."""
    coding = str(getattr(info, 'coding_format', '') or '').strip().lower()
    if coding not in ('', 'wave', 'wav', 'pcm', 'raw'):
        raise ValueError(f'audio coding_format {info.coding_format!r} is not raw PCM '
                         '(only WAVE/PCM payloads can be decoded)')
    fmt = str(info.sample_format).strip().upper()
    if fmt not in _PCM_FORMATS:
        raise ValueError(f'unsupported audio sample_format {info.sample_format!r}; '
                         f'supported: {", ".join(PCM_FORMATS)}')
    channels = int(info.channels)
    if channels < 1:
        raise ValueError(f'AudioInfo.channels must be >= 1, got {channels}')
    if int(info.sample_rate) <= 0:
        raise ValueError(f'AudioInfo.sample_rate must be > 0, got {info.sample_rate}')
    code, offset, scale = _PCM_FORMATS[fmt]
    return np.dtype(code), offset, scale, channels


def pcm_frame_bytes(info: Any) -> int:
    """Bytes per frame (all channels of one sample instant) for an AudioInfo-like object."""
    dtype, _, _, channels = _pcm_layout(info)
    return dtype.itemsize * channels


def pcm_bytes_to_array(data: Any, info: Any) -> np.ndarray:
    """Interleaved PCM bytes -> float32 ``[C, T]``; the byte count must be whole frames."""
    dtype, offset, scale, channels = _pcm_layout(info)
    buf = _as_bytes_array(data)
    frame = dtype.itemsize * channels
    if buf.size % frame:
        raise ValueError(f'{buf.size} audio bytes are not a whole number of {frame}-byte frames '
                         f'({info.sample_format}, {channels} channel(s)); re-chunk the stream '
                         'with PcmReassembler')
    samples = np.ascontiguousarray(buf).view(dtype).astype(np.float64)
    wave = (samples - offset) / scale
    return wave.reshape(-1, channels).T.astype(np.float32)


def audio_common_to_array(msg: Any, info: Any) -> np.ndarray:
    """``AudioData`` / ``AudioDataStamped`` + ``AudioInfo`` -> float32 ``[C, T]`` (no resampling).

    The buffer must hold whole frames; streams whose buffers split frames (audio_common #1, #91)
    go through :class:`PcmReassembler` instead.
    """
    audio = getattr(msg, 'audio', msg)   # AudioDataStamped wraps an AudioData
    return pcm_bytes_to_array(audio.data, info)


class PcmReassembler:
    """Re-chunks a PCM byte stream whose buffers may end mid-frame.

    ``push(data)`` returns the whole frames available so far as float32 ``[C, n]`` and keeps the
    leftover bytes for the next buffer.
    """

    def __init__(self, info: Any):
        self.info = info
        self.frame_bytes = pcm_frame_bytes(info)
        self.channels = int(info.channels)
        self._pending = b''

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def push(self, data: Any) -> np.ndarray:
        buf = self._pending + _as_bytes_array(data).tobytes()
        whole = len(buf) - len(buf) % self.frame_bytes
        self._pending = buf[whole:]
        return pcm_bytes_to_array(buf[:whole], self.info)

