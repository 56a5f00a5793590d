"""The ``rosbags`` typestore the bag tools read and write with (no ROS install needed)."""
from __future__ import annotations

import functools

from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from admn_ros.datasets.ros_messages.flavours import Flavour, bag_flavour
from admn_ros.datasets.ros_messages.msg import admn_msgs_definitions, audio_common_definitions


@functools.lru_cache(maxsize=None)
def make_typestore():
    """The ROS 2 Kilted typestore plus the ros-drivers audio_common_msgs types and admn_msgs,
    registered from their ``.msg`` text (cached). Type hashes and fields are those of a build."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for name, text in {**audio_common_definitions(), **admn_msgs_definitions()}.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def bag_messages() -> Flavour:
    """Message classes of :func:`make_typestore`, for the encoders of :mod:`admn_ros.wire`."""
    return bag_flavour(make_typestore())
