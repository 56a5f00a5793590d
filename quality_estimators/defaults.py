"""Trained defaults for the built-in datasets: one command, the shipped configs, a known location.

    admn train defaults --dataset synthetic      # -> $ADMN_CACHE_DIR/models/synthetic/controller.pt
    admn train defaults --dataset synthetic --ship   # ... and copied into the package (half precision)

The package ships each built-in dataset's default as ``admn_ros/models/<dataset>.pt`` (installed
with it by pip and colcon), listed with its SHA-256 in ``admn_ros/models/SHA256SUMS``. ``admn eval``,
``admn demo``, the fusion node and ``admn bringup`` use the shipped file when no checkpoint is
given; a default trained into the cache is used instead only when ``ADMN_DEFAULT_MODEL=cache`` is
set (or when nothing is shipped for that dataset).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from admn_ros.datasets.cache import default_cache_root
from admn_ros.paths import config_dir, models_dir

MODELS_DIR = models_dir()
CHECKSUMS = MODELS_DIR / 'SHA256SUMS'
PREFERENCE_ENV = 'ADMN_DEFAULT_MODEL'   # 'shipped' (default) or 'cache'


def shipped_checkpoint(dataset: str) -> Path:
    return MODELS_DIR / f'{dataset}.pt'


def cached_checkpoint(dataset: str) -> Path:
    return default_cache_root() / 'models' / dataset / 'controller.pt'


def default_checkpoint(dataset: str) -> Path:
    """The trained default of a built-in dataset: the shipped one, or the cache's when
    ``ADMN_DEFAULT_MODEL=cache`` asks for it (either one when only it exists)."""
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


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def read_checksums() -> Dict[str, str]:
    """``{file name: sha256}`` from ``SHA256SUMS`` (``sha256sum`` format)."""
    if not CHECKSUMS.exists():
        return {}
    out = {}
    for line in CHECKSUMS.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip().lstrip('*')] = digest
    return out


def ship(dataset: str, source=None) -> Path:
    """Copy a trained default into the package in half precision and record its checksum.

    Floating-point weights are stored as float16 (loading casts them back into the float32 model),
    which halves the file; everything else in the checkpoint is kept as it is.
    """
    import torch

    from admn_ros.fusion.checkpoint import read_checkpoint
    source = Path(source) if source is not None else cached_checkpoint(dataset)
    payload = read_checkpoint(source)
    payload['state_dict'] = _half(payload['state_dict'])
    extra = dict(payload.get('extra', {}))
    if 'controller_state' in extra:
        extra['controller_state'] = _half(extra['controller_state'])
    payload['extra'] = extra
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    target = shipped_checkpoint(dataset)
    torch.save(payload, target)
    sums = read_checksums()
    sums[target.name] = file_sha256(target)
    CHECKSUMS.write_text(''.join(f'{digest}  {name}\n' for name, digest in sorted(sums.items())))
    return target


def _half(state):
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def train_defaults(dataset: str, *, device: str = 'auto', progress: bool = True, out=None,
                   shrink: Optional[Callable[[Any, Any], None]] = None) -> Path:
    """Both stages with the shipped configs into ``out`` (default: the default's cache folder);
    returns the controller checkpoint. ``shrink(stage1_cfg, controller_cfg)`` may edit the configs
    first (the demo's --quick smoke run makes them tiny)."""
    from admn_ros.fusion.stage1 import Stage1Config, train_stage1
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig, train_controller
    out = Path(out) if out is not None else default_cache_root() / 'models' / dataset
    s1 = Stage1Config.from_yaml(str(config_dir() / 'training' / f'stage1_{dataset}.yaml'))
    c = ControllerTrainConfig.from_yaml(str(config_dir() / 'training' / f'controller_{dataset}.yaml'))
    s1.device = c.device = device
    if shrink is not None:
        shrink(s1, c)
    stage1 = train_stage1(s1, out / 'stage1', resume=True, progress=progress)
    ctrl = train_controller(c, stage1, out / 'controller_run', resume=True, progress=progress)
    final = out / 'controller.pt'
    final.write_bytes(Path(ctrl).read_bytes())
    return final
