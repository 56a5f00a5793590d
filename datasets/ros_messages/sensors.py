"""Sensor messages: numpy arrays -> ``sensor_msgs/Image`` / ``AudioDataStamped`` and back.

Images go through :mod:`.image_codec` (pure numpy), so a frame published live and a
frame written to or read from a bag encode and decode the same way; ``flavour`` picks rclpy or
rosbags message classes (:mod:`.flavours`).

Audio convention (docs/nodes.md): mono or multi-channel PCM in a ``sensor_msgs/Image`` with encoding
``16SC1`` (S16, full scale 32768, one row per channel, width = samples), ``header.stamp`` = capture
time of the first sample, sample rate fixed at :data:`admn_ros.datasets.sample.SAMPLE_RATE`.
When the ros-drivers flavour of ``audio_common_msgs`` imports, :func:`audio_stamped_msg`
additionally builds ``AudioDataStamped`` (S16LE interleaved bytes at 16 kHz, the stream
:data:`AUDIO_INFO` describes). Such a stream is only decodable with its ``AudioInfo``, which
admn_fusion requires and honours (:mod:`admn_ros.runtime.audio_stream`).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict

import numpy as np

from admn_ros.datasets.sample import SAMPLE_RATE
from admn_ros.datasets.ros_messages import topics as T
from admn_ros.datasets.ros_messages.audio_codec import (audio_common_to_array, audio_from_image,
                                                        audio_to_image_fields)
from admn_ros.datasets.ros_messages.flavours import ROS, Flavour, message_class
from admn_ros.datasets.ros_messages.header import header
from admn_ros.datasets.ros_messages.image_codec import image_fields, image_to_array


def _image(fields: Dict[str, Any], stamp_ns: int, frame_id: str, flavour: Flavour):
    fields = dict(fields, data=flavour.uint8s(fields['data']))
    return flavour.cls(T.IMAGE_TYPE)(header=header(stamp_ns, frame_id, flavour), **fields)


def image_msg(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = '',
              flavour: Flavour = ROS):
    """numpy array -> ``sensor_msgs/Image`` in ``encoding`` (see the image codec's table)."""
    return _image(image_fields(np.ascontiguousarray(arr), encoding), stamp_ns, frame_id, flavour)


def read_image(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> numpy (RGB uint8 HxWx3, or float32 metres for depth)."""
    return image_to_array(msg)


def rgb_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = T.FRAME_IDS['rgb'],
            flavour: Flavour = ROS):
    """uint8 HxWx3 RGB -> ``rgb8`` Image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'rgb must be uint8 HxWx3, got {rgb.dtype} {rgb.shape}')
    return image_msg(rgb, T.RGB_ENCODING, stamp_ns, frame_id, flavour)


def depth_msg(depth: np.ndarray, stamp_ns: int, frame_id: str = T.FRAME_IDS['depth'],
              encoding: str = T.DEPTH_ENCODING, flavour: Flavour = ROS):
    """Depth in metres as REP 118 ``32FC1`` (NaN = invalid), or ``16UC1`` millimetres."""
    if depth.ndim != 2:
        raise ValueError(f'depth must be HxW, got shape {depth.shape}')
    if encoding not in T.DEPTH_ENCODINGS:
        raise ValueError(f'depth encoding must be one of {T.DEPTH_ENCODINGS}, got {encoding!r}')
    return image_msg(np.asarray(depth, np.float32), encoding, stamp_ns, frame_id, flavour)


# The format audio_stamped_msg writes (S16LE mono at our sample rate) and audio_info_msg's
# default; a stamped message carries no format, so a stream announces it in its AudioInfo.
AUDIO_INFO = SimpleNamespace(channels=1, sample_rate=SAMPLE_RATE, sample_format='S16LE',
                             coding_format='wave', bitrate=0)


def audio_msg(audio: np.ndarray, stamp_ns: int, frame_id: str = T.FRAME_IDS['audio'],
              encoding: str = T.AUDIO_ENCODING, flavour: Flavour = ROS):
    """Waveform [T] (mono) or [C, T] in [-1, 1] -> Image with one row per channel.

    The stamp must be the capture time of the chunk's first sample.
    """
    return _image(audio_to_image_fields(audio, encoding), stamp_ns, frame_id, flavour)


def read_audio(msg) -> np.ndarray:
    """Audio message -> float32 [C, T] (Image convention, or ``AudioDataStamped`` as
    :func:`audio_stamped_msg` writes it, :data:`AUDIO_INFO`; a foreign stream's buffers need
    their AudioInfo: :class:`admn_ros.runtime.audio_stream.AudioStreamDecoder`)."""
    if hasattr(msg, 'audio'):
        return audio_common_to_array(msg, AUDIO_INFO)
    return audio_from_image(msg)


def audio_common_available() -> bool:
    """Whether ros-drivers' ``audio_common_msgs`` (with ``AudioDataStamped``) is built here."""
    try:
        message_class(T.AUDIO_STAMPED_TYPE)   # an optional package
    except ImportError:
        return False
    return True


def audio_stamped_msg(audio: np.ndarray, stamp_ns: int, frame_id: str = T.FRAME_IDS['audio'],
                      flavour: Flavour = ROS):
    """``audio_common_msgs/AudioDataStamped``, S16LE interleaved (rclpy: only when the package
    imports; rosbags: always, from the bundled definitions)."""
    fields = audio_to_image_fields(audio, '16SC1')
    rows = np.frombuffer(fields['data'], '<i2').reshape(fields['height'], fields['width'])
    data = flavour.uint8s(np.ascontiguousarray(rows.T).tobytes())  # interleave channels
    return flavour.cls(T.AUDIO_STAMPED_TYPE)(header=header(stamp_ns, frame_id, flavour),
                                             audio=flavour.cls(T.AUDIO_DATA_TYPE)(data=data))


def audio_info_msg(info: Any = AUDIO_INFO, flavour: Flavour = ROS):
    """``audio_common_msgs/AudioInfo`` describing a stream (default: :data:`AUDIO_INFO`)."""
    return flavour.cls(T.AUDIO_INFO_TYPE)(
        channels=int(info.channels), sample_rate=int(info.sample_rate),
        sample_format=str(info.sample_format), bitrate=int(info.bitrate),
        coding_format=str(info.coding_format))
