"""``diagnostic_msgs/DiagnosticArray`` as a carrier of named key/value records.

Ground truth and the fusion node's bookkeeping ride in this standard type (no custom messages):
each record is one ``DiagnosticStatus`` whose ``values`` are string key/value pairs.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

from admn_ros.datasets.ros_messages import topics as T
from admn_ros.datasets.ros_messages.flavours import ROS, Flavour
from admn_ros.datasets.ros_messages.header import header

# DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3


def diag_status(name: str, message: str, values: Dict[str, Any], level: int = OK,
                flavour: Flavour = ROS):
    """A ``DiagnosticStatus`` carrying ``values`` as key/value strings."""
    kv = flavour.cls(T.KEY_VALUE_TYPE)
    return flavour.cls(T.DIAGNOSTIC_STATUS_TYPE)(
        level=flavour.byte(level), name=name, message=message, hardware_id='',
        values=[kv(key=str(k), value=str(v)) for k, v in values.items()])


def diagnostic_array(stamp_ns: int, status: Sequence[Any], frame_id: str = '',
                     flavour: Flavour = ROS):
    """A ``DiagnosticArray`` of ``status`` (built with the same flavour)."""
    return flavour.cls(T.DIAGNOSTIC_ARRAY_TYPE)(header=header(stamp_ns, frame_id, flavour),
                                               status=list(status))


def status_level(status) -> int:
    """The level as an int (rclpy gives a one-byte ``bytes``, rosbags an int)."""
    level = status.level
    return level[0] if isinstance(level, (bytes, bytearray)) else int(level)


def status_values(status) -> Dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def find_status(msg, name: str):
    """The status called ``name`` in a DiagnosticArray; ValueError when there is none."""
    for status in msg.status:
        if status.name == name:
            return status
    raise ValueError(f'DiagnosticArray has no {name!r} status')
