"""Sensor messages -> arrays for the model, refusing what the model cannot use.

Decoding turns Image-like messages (rclpy or rosbags objects) into the raw-sample contract of
:mod:`admn_ros.datasets.sample` and refuses bad input with :class:`RejectedInput` (a ValueError
naming the problem): unsupported encodings, inconsistent buffers, absurd sizes, negative depth,
non-finite or out-of-range audio. Depth NaN/inf are valid "no reading" values (REP 117/118) and
pass. A payload over ``max_message_bytes`` is refused first, before anything is copied or
converted, so a flood of huge messages costs no memory beyond what the middleware received.

``AudioDataStamped`` carries no format: one message cannot be decoded alone. Its bytes are taken
here (:func:`audio_common_payload`) and decoded by the stream's decoder, which holds the stream's
``AudioInfo`` (:class:`admn_ros.runtime.audio_stream.AudioStreamDecoder`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Sequence

import numpy as np

from admn_ros.datasets.sample import SAMPLE_RATE
from admn_ros.datasets.ros_messages.image_codec import as_uint8, image_to_array
from admn_ros.datasets.ros_messages.sensors import read_audio
from admn_ros.datasets.ros_messages.topics import AUDIO_ENCODINGS, DEPTH_ENCODINGS, RGB_ENCODINGS


class RejectedInput(ValueError):
    """An input message that cannot be used (the message says why)."""


@dataclass(frozen=True)
class InputLimits:
    """Sizes outside these bounds are rejected rather than fed to the model."""

    min_side: int = 8            # pixels; quality estimators and resizing need a few
    max_side: int = 8192
    max_audio_s: float = 30.0
    max_message_bytes: int = 32 * 2**20   # 4K depth (32FC1) fits


def payload_bytes(msg: Any) -> int:
    """Bytes of the message's data array (Image, or AudioDataStamped's audio)."""
    data = getattr(getattr(msg, 'audio', msg), 'data', b'')
    nbytes = getattr(data, 'nbytes', None)       # numpy (rosbags), memoryview
    return int(nbytes) if nbytes is not None else len(data) * getattr(data, 'itemsize', 1)


def _check_payload(modality: str, msg: Any, limits: InputLimits) -> None:
    size = payload_bytes(msg)
    if size > limits.max_message_bytes:
        raise RejectedInput(f'{modality} message of {size} bytes exceeds max_message_bytes '
                            f'({limits.max_message_bytes}); refused before decoding')


def _check_image_size(modality: str, arr: np.ndarray, limits: InputLimits) -> None:
    h, w = arr.shape[:2]
    if min(h, w) < limits.min_side or max(h, w) > limits.max_side:
        raise RejectedInput(f'{modality} image {w}x{h} is outside the accepted '
                            f'{limits.min_side}..{limits.max_side} pixels per side')


def _decode(modality: str, msg: Any, encodings: Sequence[str], limits: InputLimits) -> np.ndarray:
    _check_payload(modality, msg, limits)
    encoding = str(getattr(msg, 'encoding', ''))
    if encoding not in encodings:
        raise RejectedInput(f'{modality} encoding {encoding!r} not accepted; use one of '
                            f'{", ".join(encodings)}')
    try:
        return image_to_array(msg)
    except ValueError as exc:  # inconsistent step / data length
        raise RejectedInput(str(exc)) from None


def decode_rgb(msg: Any, limits: InputLimits = InputLimits()) -> np.ndarray:
    """Image (rgb8/bgr8/rgba8/bgra8/mono8) -> uint8 [H, W, 3] RGB."""
    arr = _decode('rgb', msg, RGB_ENCODINGS, limits)
    if arr.ndim == 2:  # mono8: grey replicated, as the AV-digits loader does
        arr = np.repeat(arr[..., None], 3, axis=2)
    _check_image_size('rgb', arr, limits)
    return arr


def decode_depth(msg: Any, limits: InputLimits = InputLimits()) -> np.ndarray:
    """Image (32FC1 metres or 16UC1 millimetres) -> float32 [H, W] metres, NaN = invalid."""
    arr = _decode('depth', msg, DEPTH_ENCODINGS, limits).astype(np.float32, copy=False)
    _check_image_size('depth', arr, limits)
    # -inf ("too close", REP 117) is valid; NaN compares False. Mask only when something is < 0.
    negative = arr < 0
    if negative.any() and np.any(negative & np.isfinite(arr)):
        raise RejectedInput('depth holds negative distances (garbage, not a REP 118 image)')
    return arr


def check_audio_values(rows: np.ndarray) -> None:
    """RejectedInput when float audio holds NaN / Inf or exceeds full scale [-1, 1]."""
    if not np.all(np.isfinite(rows)):
        raise RejectedInput('audio holds NaN or infinite samples')
    if rows.size and float(np.max(np.abs(rows))) > 1.0 + 1e-6:
        raise RejectedInput('audio samples exceed full scale [-1, 1]')


def to_mono(rows: np.ndarray) -> np.ndarray:
    """float32 ``[C, T]`` -> float32 mono ``[T]``: channels averaged (one channel as it is)."""
    if len(rows) == 1:  # a mean over one channel only costs a copy
        return np.asarray(rows[0], np.float32)
    return rows.mean(axis=0).astype(np.float32)


def decode_audio(msg: Any, limits: InputLimits = InputLimits()) -> np.ndarray:
    """Audio as an Image (16SC1/32FC1, one row per channel, 16 kHz) -> float32 mono [T] in
    [-1, 1]; channels are averaged. ``AudioDataStamped`` is refused: it needs its stream's
    AudioInfo (see the module docstring)."""
    _check_payload('audio', msg, limits)
    if hasattr(msg, 'audio'):
        raise RejectedInput('AudioDataStamped carries no format: decode it with its stream\'s '
                            'AudioInfo (AudioStreamDecoder)')
    encoding = str(getattr(msg, 'encoding', ''))
    if encoding not in AUDIO_ENCODINGS:
        raise RejectedInput(f'audio encoding {encoding!r} not accepted; use one of '
                            f'{", ".join(AUDIO_ENCODINGS)}')
    try:
        rows = read_audio(msg)
    except ValueError as exc:
        raise RejectedInput(str(exc)) from None
    if rows.size == 0:
        raise RejectedInput('audio message holds no samples')
    if rows.shape[1] > limits.max_audio_s * SAMPLE_RATE:
        raise RejectedInput(f'audio chunk of {rows.shape[1] / SAMPLE_RATE:.1f} s exceeds '
                            f'{limits.max_audio_s} s')
    if encoding != '16SC1':  # integer PCM is finite and in range
        check_audio_values(rows)
    return to_mono(rows)


def audio_common_payload(msg: Any, limits: InputLimits = InputLimits()) -> bytes:
    """``AudioDataStamped`` -> its PCM bytes; refused when over ``max_message_bytes`` (before
    any copy) or empty."""
    _check_payload('audio', msg, limits)
    data = as_uint8(msg.audio.data).tobytes()
    if not data:
        raise RejectedInput('audio message holds no samples')
    return data


DECODERS: Dict[str, Callable[..., np.ndarray]] = {
    'rgb': decode_rgb, 'depth': decode_depth, 'audio': decode_audio}
