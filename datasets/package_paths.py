"""Where the package's files are: one answer for a source checkout, pip and colcon installs.

Shipped models travel inside the Python package (package data), so they sit in the ``admn_ros``
package folder in every kind of install. ``config/`` and ``launch/`` are ROS share files: a source
checkout has them at its root; colcon installs them under ``share/admn_ros`` (found through the
ament index) and pip under ``<prefix>/share/admn_ros``. No rclpy, no torch: safe to import
anywhere. It lives in the bottom layer of the core (``admn_ros.paths`` re-exports it for the ROS
adapter), so the core finds its files without importing the adapter.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

PACKAGE = 'admn_ros'
_CORE_PARENT = Path(__file__).resolve().parents[1]
# A checkout (and editable or symlink installs of one) has the core folders beside the package
# folder; wheels and colcon copies install them inside it.
PACKAGE_DIR = (_CORE_PARENT / PACKAGE if (_CORE_PARENT / PACKAGE / '__init__.py').is_file()
               else _CORE_PARENT)


def models_dir() -> Path:
    """The shipped default models (``<dataset>.pt``) and their ``SHA256SUMS``."""
    return PACKAGE_DIR / 'models'


def checkout_root() -> Optional[Path]:
    """The repository root when running from a source checkout (or an editable install of one)."""
    root = PACKAGE_DIR.parent
    return root if (root / 'setup.py').is_file() and (root / 'config').is_dir() else None


def share_dir() -> Path:
    """The checkout root, else the installed ``share/admn_ros``."""
    root = checkout_root()
    if root is not None:
        return root
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # not installed through colcon, or AMENT_PREFIX_PATH unset
        return Path(sys.prefix) / 'share' / PACKAGE


def config_dir() -> Path:
    return share_dir() / 'config'


def launch_dir() -> Path:
    return share_dir() / 'launch'
