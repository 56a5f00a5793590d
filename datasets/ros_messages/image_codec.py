"""numpy <-> ``sensor_msgs/Image`` fields, without ROS.

Everything is duck-typed on attribute names, so the same code decodes rclpy messages (``data``
is an ``array.array``), rosbags messages (``data`` is a numpy array) or any object with the
fields. :func:`image_fields` returns a plain dict of field values, which
:mod:`.sensors` turns into a message of either flavour.

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
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

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

def as_uint8(data: Any) -> np.ndarray:
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
    buf = as_uint8(msg.data)
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
