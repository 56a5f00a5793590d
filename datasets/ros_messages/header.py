"""Stamps and headers: ``builtin_interfaces/Time`` <-> integer nanoseconds, ``std_msgs/Header``."""
from __future__ import annotations

from typing import Any, Tuple

from admn_ros.datasets.ros_messages.flavours import ROS, Flavour

TIME_TYPE = 'builtin_interfaces/msg/Time'
HEADER_TYPE = 'std_msgs/msg/Header'


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (rclpy or rosbags object) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` as integer nanoseconds; ValueError for a headerless message."""
    stamp = getattr(getattr(msg, 'header', None), 'stamp', None)
    if stamp is None:
        raise ValueError(f'{type(msg).__name__} has no header.stamp')
    return stamp_to_ns(stamp)


def split_stamp(stamp_ns: int) -> Tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) as in ``builtin_interfaces/Time``."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f'negative stamp {stamp_ns} ns cannot be a builtin_interfaces/Time')
    return stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000


def ns_to_stamp(stamp_ns: int, flavour: Flavour = ROS):
    """Integer nanoseconds -> ``builtin_interfaces/Time`` (ValueError when negative)."""
    sec, nanosec = split_stamp(stamp_ns)
    return flavour.cls(TIME_TYPE)(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str = '', flavour: Flavour = ROS):
    """A ``std_msgs/Header``."""
    return flavour.cls(HEADER_TYPE)(stamp=ns_to_stamp(stamp_ns, flavour), frame_id=frame_id)
