"""Making the trained defaults of the built-in datasets: one command, the shipped configs.

    admn train defaults --dataset synthetic      # -> $ADMN_CACHE_DIR/models/synthetic/controller.pt
    admn train defaults --dataset synthetic --ship   # ... and copied into the package (half precision)

The package ships each built-in dataset's default as ``admn_ros/models/<dataset>.pt`` (installed
with it by pip and colcon), listed with its SHA-256 in ``admn_ros/models/SHA256SUMS``. ``admn eval``,
``admn demo``, the fusion node and ``admn bringup`` use the shipped file when no checkpoint is
given; a default trained into the cache is used instead only when ``ADMN_DEFAULT_MODEL=cache`` is
set (or when nothing is shipped for that dataset). Finding and loading a default is
:mod:`admn_ros.quality_estimators.inference`'s job, which imports no trainer; this module trains.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from admn_ros.fusion.checkpoint import read_checkpoint, write_payload
from admn_ros.fusion.stage1 import Stage1Config, train_stage1
from admn_ros.datasets.package_paths import config_dir, models_dir
from admn_ros.quality_estimators.inference import cached_checkpoint, shipped_checkpoint
from admn_ros.quality_estimators.train_controller import ControllerTrainConfig, train_controller

CHECKSUMS_NAME = 'SHA256SUMS'


def checksums_file(models: Optional[Path] = None) -> Path:
    """The ``sha256sum``-format list of the shipped models (in ``models`` instead, if given)."""
    return Path(models if models is not None else models_dir()) / CHECKSUMS_NAME


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def read_checksums(models: Optional[Path] = None) -> Dict[str, str]:
    """``{file name: sha256}`` from ``SHA256SUMS`` (``sha256sum`` format)."""
    path = checksums_file(models)
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip().lstrip('*')] = digest
    return out


def ship(dataset: str, source=None, *, models: Optional[Path] = None) -> Path:
    """Copy a trained default into the package (or into ``models``) in half precision and record
    its checksum.

    Floating-point weights are stored as float16 (loading casts them back into the float32 model),
    which halves the file; everything else in the checkpoint is kept as it is.
    """
    source = Path(source) if source is not None else cached_checkpoint(dataset)
    payload = read_checkpoint(source)
    payload['state_dict'] = _half(payload['state_dict'])
    extra = dict(payload.get('extra', {}))
    if 'controller_state' in extra:
        extra['controller_state'] = _half(extra['controller_state'])
    payload['extra'] = extra
    target = shipped_checkpoint(dataset, models)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_payload(payload, target)   # a fresh digest of the halved weights
    sums = read_checksums(models)
    sums[target.name] = file_sha256(target)
    checksums_file(models).write_text(''.join(f'{digest}  {name}\n' for name, digest in sorted(sums.items())))
    return target


def _half(state):
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def train_defaults(dataset: str, *, device: str = 'auto', progress: bool = True, out=None,
                   shrink: Optional[Callable[[Any, Any], None]] = None, seed: Optional[int] = None,
                   force: bool = False) -> Path:
    """Both stages with the shipped configs into ``out`` (default: the default's cache folder);
    returns the controller checkpoint. ``shrink(stage1_cfg, controller_cfg)`` may edit the configs
    first (the demo's --quick smoke run makes them tiny); ``seed`` replaces both configs' seeds
    (training and data subset); ``force`` trains the controller on a stage 1 at chance (a smoke
    run's), which is refused otherwise."""
    out = Path(out) if out is not None else cached_checkpoint(dataset).parent
    s1 = Stage1Config.from_yaml(str(config_dir() / 'training' / f'stage1_{dataset}.yaml'))
    c = ControllerTrainConfig.from_yaml(str(config_dir() / 'training' / f'controller_{dataset}.yaml'))
    s1.device = c.device = device
    if seed is not None:
        s1.seed = c.seed = s1.data.seed = c.data.seed = int(seed)
    if shrink is not None:
        shrink(s1, c)
    stage1 = train_stage1(s1, out / 'stage1', resume=True, progress=progress)
    ctrl = train_controller(c, stage1, out / 'controller_run', resume=True, progress=progress, force=force)
    final = out / 'controller.pt'
    final.write_bytes(Path(ctrl).read_bytes())
    return final
