"""Checkpoints: state dict + full model config in one file, loaded with ``weights_only=True``.

A file rebuilds its model alone. Anything that is not such a file (a pickled object, another
project's checkpoint, a truncated download) raises :class:`CheckpointError` with the reason.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.model import ADMNModel

FORMAT = 'admn_ros.checkpoint'
VERSION = 1


class CheckpointError(RuntimeError):
    """The file is not a usable admn_ros checkpoint."""


def save_checkpoint(path, model: ADMNModel, **extra: Any) -> Path:
    """Atomically write ``model`` (unwrapped from DDP if needed) and ``extra`` plain data to ``path``."""
    model = getattr(model, 'module', model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {'format': FORMAT, 'version': VERSION, 'model_config': model.cfg.to_dict(),
               'state_dict': model.state_dict(), 'extra': extra}
    tmp = path.with_suffix(path.suffix + '.tmp')
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def state_digest(model: ADMNModel) -> str:
    """SHA-256 of a model's weights (:func:`admn_ros.datasets.cache.content_digest` of its state dict): says
    which stage-1 model a controller run was trained on."""
    from admn_ros.datasets.cache import content_digest
    state = getattr(model, 'module', model).state_dict()
    return content_digest({name: t.detach().cpu().numpy() for name, t in state.items()})


def save_untrained(path, cfg: ModelConfig, *, dataset: str, class_names, seed: int = 0,
                   **extra: Any) -> Path:
    """A stage-1 checkpoint of an untrained model (seeded) with the default preprocessing: for
    timing, wiring and tests, where the nodes only have to load a model, not to be right."""
    from admn_ros.datasets.preprocess import PreprocessConfig
    torch.manual_seed(seed)
    model = ADMNModel(cfg)
    meta = {'stage': 'stage1', 'dataset': dataset, 'class_names': list(class_names),
            'modalities': list(model.modalities), 'preprocess': asdict(PreprocessConfig())}
    return save_checkpoint(path, model, **{**meta, **extra})


def read_checkpoint(path, map_location='cpu') -> Dict[str, Any]:
    """Load and validate the raw payload (no model built)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    if not zipfile.is_zipfile(path):  # torch.save's format; anything else is truncated or foreign
        raise CheckpointError(f'{path}: not a readable torch checkpoint (expected a torch.save zip archive)')
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f'{path}: refused to unpickle (not a plain weights file): {exc}') from exc
    except Exception as exc:  # zip/EOF/format errors from torch.load
        raise CheckpointError(f'{path}: not a readable torch checkpoint: {exc}') from exc
    if not isinstance(payload, dict) or payload.get('format') != FORMAT:
        raise CheckpointError(f'{path}: not an admn_ros checkpoint (missing format tag {FORMAT!r})')
    if payload.get('version') != VERSION:
        raise CheckpointError(f'{path}: checkpoint version {payload.get("version")} != supported {VERSION}')
    return payload


def checkpoint_preprocessor(meta: Dict[str, Any]):
    """The :class:`admn_ros.datasets.preprocess.Preprocessor` a checkpoint was trained with (its ``extra``)."""
    from admn_ros.datasets.preprocess import PreprocessConfig, Preprocessor
    from admn_ros.fusion.config import from_dict
    return Preprocessor(from_dict(PreprocessConfig, meta.get('preprocess') or {}))


def load_checkpoint(path, map_location='cpu') -> Tuple[ADMNModel, Dict[str, Any]]:
    """Rebuild the model from the file's own config and load its weights strictly."""
    payload = read_checkpoint(path, map_location)
    try:
        cfg = ModelConfig.from_dict(payload['model_config'])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f'{path}: bad model config: {exc}') from exc
    model = ADMNModel(cfg)
    try:
        model.load_state_dict(payload['state_dict'], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f'{path}: weights do not match the stored config: {exc}') from exc
    return model.to(map_location), payload.get('extra', {})
