"""Where message classes come from: a ROS install (rclpy) or a ``rosbags`` typestore.

Every encoder in :mod:`admn_ros.wire` builds its message through a :class:`Flavour`, so a live node
and the bag tools write the same fields the same way. Both kinds of class take the message's
fields as keywords; they differ only in how a ``uint8[]`` and a ``byte`` field are given (rclpy
takes ``bytes`` - a thousand times faster than a list - and rosbags a numpy ``uint8`` array and an
``int``) and any other numeric or bool array (rclpy: a list of Python numbers; rosbags: a numpy
array of the field's dtype). Readers need no flavour: both kinds of message have the same attribute names.

:data:`ROS` imports the rclpy message package on first use (never at module load), so the bag
tools work where ROS is not installed.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@functools.lru_cache(maxsize=None)
def message_class(msgtype: str):
    """``'sensor_msgs/msg/Image'`` -> the rclpy class (importlib; rosidl_runtime_py has no wheel).

    Raises ImportError when the package is not built here, ValueError for a malformed name.
    """
    parts = msgtype.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"message type must look like 'pkg/msg/Name', got {msgtype!r}")
    module = importlib.import_module(f'{parts[0]}.{parts[1]}')
    try:
        return getattr(module, parts[2])
    except AttributeError:
        raise ImportError(f'{parts[0]}.{parts[1]} has no type {parts[2]!r}') from None


@dataclass(frozen=True)
class Flavour:
    """How to build messages of one kind (see the module docstring)."""

    name: str
    cls: Callable[[str], type]          # full type name -> message class
    uint8s: Callable[[bytes], Any]      # value of a uint8[] field
    byte: Callable[[int], Any]          # value of a byte field
    array: Callable[[Any, str], Any]    # (values, numpy dtype) -> value of a numeric/bool array


ROS = Flavour('rclpy', message_class, bytes, lambda n: bytes([int(n)]),
              lambda values, dtype: np.asarray(values, dtype=dtype).tolist())


def bag_flavour(store) -> Flavour:
    """Messages of a ``rosbags`` typestore (see :func:`.typestore.make_typestore`)."""
    return Flavour('rosbags', lambda msgtype: store.types[msgtype],
                   lambda data: np.frombuffer(data, dtype=np.uint8), int,
                   lambda values, dtype: np.asarray(values, dtype=dtype))
