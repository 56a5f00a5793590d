"""Trained defaults for the built-in datasets: one command, the shipped configs, a known location.

    admn train defaults --dataset synthetic      # -> $ADMN_CACHE_DIR/models/synthetic/controller.pt

``admn eval`` and the fusion node use this file when no checkpoint is given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from datasets.cache import default_cache_root

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'config'


def train_defaults(dataset: str, *, device: str = 'auto', progress: bool = True, out=None,
                   shrink: Optional[Callable[[Any, Any], None]] = None) -> Path:
    """Both stages with the shipped configs into ``out`` (default: the default's cache folder);
    returns the controller checkpoint. ``shrink(stage1_cfg, controller_cfg)`` may edit the configs
    first (the demo's --quick smoke run makes them tiny)."""
    from fusion.stage1 import Stage1Config, train_stage1
    from quality_estimators.train_controller import ControllerTrainConfig, train_controller
    out = Path(out) if out is not None else default_cache_root() / 'models' / dataset
    s1 = Stage1Config.from_yaml(str(CONFIG_DIR / f'stage1_{dataset}.yaml'))
    c = ControllerTrainConfig.from_yaml(str(CONFIG_DIR / f'controller_{dataset}.yaml'))
    s1.device = c.device = device
    if shrink is not None:
        shrink(s1, c)
    stage1 = train_stage1(s1, out / 'stage1', resume=True, progress=progress)
    ctrl = train_controller(c, stage1, out / 'controller_run', resume=True, progress=progress)
    final = out / 'controller.pt'
    final.write_bytes(Path(ctrl).read_bytes())
    return final
