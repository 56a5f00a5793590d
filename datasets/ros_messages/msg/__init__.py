"""ROS 2 message definitions that have no pip package, as ``.msg`` text.

The ros-drivers ``audio_common_msgs`` flavour lives here: ``AudioData``, ``AudioDataStamped`` and
``AudioInfo``. :func:`..typestore.make_typestore` registers them with ``rosbags`` so
bags recorded by ``audio_capture`` can be read and such bags can be written for tests. This is a
package (not a plain folder) so the ``.msg`` files install with it.

The project's own ``admn_msgs`` types are read from that package's ``msg/`` folder
(:func:`admn_msgs_definitions`), so the bag tools need no build of it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, Optional

from admn_ros.datasets import package_paths as paths

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


ADMN_MSGS = 'admn_msgs'


def admn_msgs_dir() -> Optional[Path]:
    """The ``msg/`` folder of admn_msgs: the checkout's ``admn_msgs/msg``, else an installed
    ``share/admn_msgs/msg`` (``AMENT_PREFIX_PATH``, then this Python's prefix); None if none."""
    candidates = []
    root = paths.checkout_root()
    if root is not None:
        candidates.append(root / ADMN_MSGS / 'msg')
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    candidates += [Path(p) / 'share' / ADMN_MSGS / 'msg' for p in prefixes + [Path(sys.prefix)]]
    return next((c for c in candidates if any(c.glob('*.msg'))), None)


def admn_msgs_definitions() -> Dict[str, str]:
    """Map each admn_msgs type name to its ``.msg`` text (FileNotFoundError when not found)."""
    folder = admn_msgs_dir()
    if folder is None:
        raise FileNotFoundError('the admn_msgs .msg files are not in this checkout or any '
                                'AMENT_PREFIX_PATH prefix: build admn_msgs, or run from a checkout')
    return {f'{ADMN_MSGS}/msg/{p.stem}': p.read_text(encoding='utf8')
            for p in sorted(folder.glob('*.msg'))}
