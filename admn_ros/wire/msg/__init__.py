"""ROS 2 message definitions that have no pip package, as ``.msg`` text.

Only the ros-drivers ``audio_common_msgs`` flavour lives here: ``AudioData``,
``AudioDataStamped`` and ``AudioInfo``. :func:`admn_ros.wire.typestore.make_typestore` registers
them with ``rosbags`` so bags recorded by ``audio_capture`` can be read and such bags can be
written for tests. This is a package (not a plain folder) so the ``.msg`` files install with it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

MSG_DIR = Path(__file__).resolve().parent

# full type name -> file name in this folder
AUDIO_COMMON_FILES = {
    'audio_common_msgs/msg/AudioData': 'AudioData.msg',
    'audio_common_msgs/msg/AudioDataStamped': 'AudioDataStamped.msg',
    'audio_common_msgs/msg/AudioInfo': 'AudioInfo.msg',
}


def audio_common_definitions() -> Dict[str, str]:
    """Map each audio_common_msgs type name to its ``.msg`` text."""
    return {name: (MSG_DIR / fname).read_text(encoding='utf8')
            for name, fname in AUDIO_COMMON_FILES.items()}
