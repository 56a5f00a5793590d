"""Audio <-> message fields, without ROS: audio carried in an Image, and ros-drivers
``audio_common_msgs`` PCM payloads.

Audio in an Image: one row per channel, width = samples, ``header.stamp`` = capture time of the
first sample; :func:`audio_to_image_fields` / :func:`audio_from_image` convert float32 waves in
[-1, 1] (``16SC1`` uses the full-scale factor 32768). ``AudioData`` payloads are interleaved PCM
in the format an ``AudioInfo`` names; a buffer may end mid-frame (:class:`PcmReassembler`).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from admn_ros.datasets.ros_messages.image_codec import as_uint8, image_fields, image_to_array

INT16_SCALE = 32768.0

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


def audio_info_key(info: Any) -> Tuple[int, int, str, str]:
    """(channels, sample_rate, sample_format, coding_format): what decoding a stream depends on
    (two AudioInfo with the same key describe the same stream format; bitrate does not count)."""
    return (int(info.channels), int(info.sample_rate), str(info.sample_format).strip().upper(),
            str(getattr(info, 'coding_format', '') or '').strip().lower())


def pcm_frame_bytes(info: Any) -> int:
    """Bytes per frame (all channels of one sample instant) for an AudioInfo-like object."""
    dtype, _, _, channels = _pcm_layout(info)
    return dtype.itemsize * channels


def pcm_bytes_to_array(data: Any, info: Any) -> np.ndarray:
    """Interleaved PCM bytes -> float32 ``[C, T]``; the byte count must be whole frames."""
    dtype, offset, scale, channels = _pcm_layout(info)
    buf = as_uint8(data)
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
        buf = self._pending + as_uint8(data).tobytes()
        whole = len(buf) - len(buf) % self.frame_bytes
        self._pending = buf[whole:]
        return pcm_bytes_to_array(buf[:whole], self.info)
