"""admn_ros: Adaptive Depth Multimodal Networks for ROS 2.

The core lives in the repository's top-level folders ``fusion/``, ``quality_estimators/``,
``datasets/`` and ``benchmarks/`` but is imported under this package's name
(``admn_ros.fusion`` ...), so an install never claims a top-level name such as ``datasets`` that
other packages use. ``setup.py`` maps the folders into the package for wheels and colcon installs.
A source checkout (and the editable or ``--symlink-install`` installs that import from it) has the
folders beside this package instead, and the finder below resolves those four names there.
"""
import importlib.abc
import importlib.util
import sys
from pathlib import Path

CORE_PACKAGES = ('fusion', 'quality_estimators', 'datasets', 'benchmarks')

_HERE = Path(__file__).resolve().parent


class _CheckoutCoreFinder(importlib.abc.MetaPathFinder):
    """Finds ``admn_ros.<core>`` in ``<checkout>/<core>``; its submodules then resolve normally."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition('.')
        if prefix != __name__ or name not in CORE_PACKAGES:
            return None
        folder = self.root / name
        return importlib.util.spec_from_file_location(
            fullname, folder / '__init__.py', submodule_search_locations=[str(folder)])


def _in_checkout() -> bool:
    return (not (_HERE / 'fusion').is_dir()
            and all((_HERE.parent / name / '__init__.py').is_file() for name in CORE_PACKAGES))


if _in_checkout() and not any(isinstance(f, _CheckoutCoreFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _CheckoutCoreFinder(_HERE.parent))
