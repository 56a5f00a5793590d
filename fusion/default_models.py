"""Which trained checkpoint a built-in dataset defaults to: the one shipped in the package, or the
cache's when ``ADMN_DEFAULT_MODEL=cache`` asks for it.

Below the controller code (which re-exports it from :mod:`admn_ros.quality_estimators.inference`)
so that starting stage 1 from a shipped model (:mod:`admn_ros.fusion.pretrained`) needs nothing
above ``fusion``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from admn_ros.datasets.cache import default_cache_root
from admn_ros.datasets.package_paths import models_dir

PREFERENCE_ENV = 'ADMN_DEFAULT_MODEL'   # 'shipped' (default) or 'cache'

def shipped_checkpoint(dataset: str, models: Optional[Path] = None) -> Path:
    """The default of ``dataset`` shipped in the package (or in ``models`` instead)."""
    return Path(models if models is not None else models_dir()) / f'{dataset}.pt'


def cached_checkpoint(dataset: str) -> Path:
    """Where ``admn train defaults`` leaves the default of ``dataset`` it trains."""
    return default_cache_root() / 'models' / dataset / 'controller.pt'


def default_checkpoint(dataset: str) -> Path:
    """The trained default of a built-in dataset: the shipped one, or the cache's when
    ``ADMN_DEFAULT_MODEL=cache`` asks for it (either one when only it exists)."""
    if dataset.startswith('folder:'):
        # Only built-in datasets have defaults; a folder's own problem comes first.
        folder = Path(dataset[len('folder:'):]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f'dataset folder {folder} does not exist')
        raise ValueError(f'{dataset}: a folder of recordings has no trained default: pass '
                         '--checkpoint FILE (a model fine-tuned on it: docs/your_data.md)')
    prefer = os.environ.get(PREFERENCE_ENV, 'shipped').strip().lower() or 'shipped'
    if prefer not in ('shipped', 'cache'):
        raise ValueError(f'{PREFERENCE_ENV} must be shipped or cache, got {prefer!r}')
    order = [shipped_checkpoint(dataset), cached_checkpoint(dataset)]
    if prefer == 'cache':
        order.reverse()
    for path in order:
        if path.exists():
            return path
    raise FileNotFoundError(
        f'no trained default for dataset {dataset!r} (looked in {order[0]} and {order[1]}); '
        f'make one with: admn train defaults --dataset {dataset}')
