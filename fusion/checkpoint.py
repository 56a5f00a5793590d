"""Checkpoints: state dict + full model config in one file, loaded with ``weights_only=True``.

A file rebuilds its model alone. Anything that is not such a file (a pickled object, another
project's checkpoint, a truncated download) raises :class:`CheckpointError` with the reason.

Every file carries a SHA-256 digest of its whole content - every tensor's dtype, shape and bytes,
and the config and metadata beside them - that loading recomputes: flipped bytes inside the
weights (which ``torch.load`` does not notice) are refused instead of run. Files written before
digests (format version 1) are refused with the command that adds one
(``python -m admn_ros.fusion.checkpoint --add-digest FILE``, for files known to be intact).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from admn_ros.datasets.cache import content_digest
from admn_ros.datasets.preprocess import PreprocessConfig, Preprocessor
from admn_ros.fusion.config import ModelConfig, from_dict
from admn_ros.fusion.model import ADMNModel

FORMAT = 'admn_ros.checkpoint'
VERSION = 2          # 2: with 'digest'; 1: without
DIGEST_KEY = 'digest'


class CheckpointError(RuntimeError):
    """The file is not a usable admn_ros checkpoint."""


def save_checkpoint(path, model: ADMNModel, **extra: Any) -> Path:
    """Atomically write ``model`` (unwrapped from DDP if needed) and ``extra`` plain data to ``path``."""
    model = getattr(model, 'module', model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {'format': FORMAT, 'model_config': model.cfg.to_dict(),
               'state_dict': model.state_dict(), 'extra': extra}
    return write_payload(payload, path)


def write_payload(payload: Dict[str, Any], path) -> Path:
    """Atomically write a checkpoint payload (as :func:`read_checkpoint` returns it, perhaps
    edited) with the current version and a fresh digest."""
    path = Path(path)
    payload = {k: v for k, v in payload.items() if k != DIGEST_KEY}
    payload['version'] = VERSION
    payload[DIGEST_KEY] = payload_digest(payload)
    tmp = path.with_suffix(path.suffix + '.tmp')
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def payload_digest(payload: Dict[str, Any]) -> str:
    """SHA-256 over everything in ``payload`` but its digest: tensors by dtype, shape and bytes,
    mappings in key order, other values by ``repr``."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != DIGEST_KEY})
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f'T{t.dtype}{tuple(obj.shape)}:'.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    elif isinstance(obj, dict):
        h.update(b'{')
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode() + b':')
            _feed(h, obj[key])
        h.update(b'}')
    elif isinstance(obj, (list, tuple)):
        h.update(b'[' if isinstance(obj, list) else b'(')
        for item in obj:
            _feed(h, item)
            h.update(b',')
        h.update(b']')
    else:
        h.update(f'{type(obj).__name__}:{obj!r};'.encode())


def state_digest(model: ADMNModel) -> str:
    """SHA-256 of a model's weights (:func:`admn_ros.datasets.cache.content_digest` of its state dict): says
    which stage-1 model a controller run was trained on."""
    state = getattr(model, 'module', model).state_dict()
    return content_digest({name: t.detach().cpu().numpy() for name, t in state.items()})


def save_untrained(path, cfg: ModelConfig, *, dataset: str, class_names, seed: int = 0,
                   **extra: Any) -> Path:
    """A stage-1 checkpoint of an untrained model (seeded) with the default preprocessing: for
    timing, wiring and tests, where the nodes only have to load a model, not to be right."""
    torch.manual_seed(seed)
    model = ADMNModel(cfg)
    meta = {'stage': 'stage1', 'dataset': dataset, 'class_names': list(class_names),
            'modalities': list(model.modalities), 'preprocess': asdict(PreprocessConfig())}
    return save_checkpoint(path, model, **{**meta, **extra})


def load_weights_only(path, map_location='cpu') -> Any:
    """``torch.load(weights_only=True)`` with its refusals in one line of our own words.

    torch's own message is several lines long and, for a file holding Python objects, suggests
    loading it again with ``weights_only=False`` - the one thing never to do with a file of
    unknown origin. The cause stays chained (``__cause__``) for debugging."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        what = type(exc).__name__
        if 'GLOBAL' in str(exc):   # torch names the class or function it would have imported
            raise CheckpointError(f'{path}: refused to unpickle: it holds Python objects or code, '
                                  'not only tensors and plain data') from exc
        raise CheckpointError(f'{path}: not a readable torch checkpoint: its pickled part is '
                              f'damaged ({what})') from exc
    except Exception as exc:  # zip/EOF/format errors from torch.load
        raise CheckpointError(f'{path}: not a readable torch checkpoint: damaged or truncated '
                              f'({type(exc).__name__})') from exc


def read_checkpoint(path, map_location='cpu', *, verify: bool = True) -> Dict[str, Any]:
    """Load and validate the raw payload (no model built), its digest checked (``verify``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    if not zipfile.is_zipfile(path):  # torch.save's format; anything else is truncated or foreign
        raise CheckpointError(f'{path}: not a readable torch checkpoint (expected a torch.save zip archive)')
    payload = load_weights_only(path, map_location)
    if not isinstance(payload, dict) or payload.get('format') != FORMAT:
        raise CheckpointError(f'{path}: not an admn_ros checkpoint (missing format tag {FORMAT!r})')
    if payload.get('version') == 1 and verify:
        raise CheckpointError(f'{path}: written before checkpoints carried a digest, so its '
                              'content cannot be verified; if the file is intact, add one with '
                              f'`python -m admn_ros.fusion.checkpoint --add-digest {path}`')
    if payload.get('version') not in (1, VERSION):
        raise CheckpointError(f'{path}: checkpoint version {payload.get("version")} != supported {VERSION}')
    if verify and payload.get('version') == VERSION:
        stored, actual = payload.get(DIGEST_KEY), payload_digest(payload)
        if stored != actual:
            raise CheckpointError(f'{path}: content digest mismatch (stored {str(stored)[:12]}..., '
                                  f'computed {actual[:12]}...): the file is corrupted or was '
                                  'edited without write_payload; refusing to use it')
    return payload


def checkpoint_preprocessor(meta: Dict[str, Any]):
    """The :class:`admn_ros.datasets.preprocess.Preprocessor` a checkpoint was trained with (its ``extra``)."""
    return Preprocessor(from_dict(PreprocessConfig, meta.get('preprocess') or {}))


def load_checkpoint(path, map_location='cpu') -> Tuple[ADMNModel, Dict[str, Any]]:
    """Rebuild the model from the file's own config and load its weights strictly."""
    payload = read_checkpoint(path, map_location)
    try:
        cfg = ModelConfig.from_dict(payload['model_config'])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f'{path}: bad model config: {exc}') from exc
    model = ADMNModel(cfg)
    load_weights(model, payload['state_dict'], f'{path}: weights do not match the stored config')
    return model.to(map_location), payload.get('extra', {})


def load_weights(module: torch.nn.Module, state: Dict[str, Any], what: str) -> None:
    """``module.load_state_dict(state)`` strictly, with any mismatch told in one line
    (``what``: counts of missing, unexpected and misshapen tensors and the first of each) rather
    than torch's line per tensor; raises :class:`CheckpointError`."""
    if not isinstance(state, dict):
        raise CheckpointError(f'{what}: expected a state dict, got {type(state).__name__}')
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state and hasattr(state[k], 'shape') and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    if shapes:
        k, got, want = shapes[0]
        parts.append(f'{len(shapes)} tensor(s) of another shape (first: {k} is {list(got)} in the '
                     f'file, {list(want)} in the model)')
    if missing:
        parts.append(f'{len(missing)} missing (first: {missing[0]})')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected (first: {unexpected[0]})')
    if parts:
        raise CheckpointError(f'{what}: ' + '; '.join(parts))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:   # e.g. a non-tensor value
        raise CheckpointError(f'{what}: {str(exc).splitlines()[0]}') from None


def resume_state(path, keys: Sequence[str], map_location='cpu') -> Dict[str, Any]:
    """The payload of a training run's ``last.pt``, refused in one line when its ``extra`` lacks
    any of ``keys`` (optimizer state, epoch, ...): such a file cannot continue a run."""
    payload = read_checkpoint(path, map_location)
    extra = payload.get('extra') or {}
    missing = [k for k in keys if k not in extra]
    if missing:
        raise CheckpointError(f'{path}: cannot resume from it: it holds no {", ".join(missing)} '
                              '(only files written during training do); delete it or train into '
                              'another folder')
    return payload


def load_optimizer(opt, state, path) -> None:
    """An optimiser's saved state, refused in one line when it does not fit (another model)."""
    try:
        opt.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f'{path}: its optimizer state does not fit this model: {reason}') from None


def add_digest(path) -> Path:
    """Rewrite a version-1 checkpoint (no digest) in the current format; refuses a file whose
    digest does not match (never blesses a corrupted one)."""
    payload = read_checkpoint(path, verify=False)
    if payload.get('version') == VERSION:
        read_checkpoint(path)
        return Path(path)
    return write_payload(payload, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m admn_ros.fusion.checkpoint',
                                     description='verify checkpoints, or add a digest to old ones')
    parser.add_argument('files', nargs='+')
    parser.add_argument('--add-digest', action='store_true',
                        help='rewrite digest-less (version 1) files with a digest')
    args = parser.parse_args(argv)
    code = 0
    for f in args.files:
        try:
            add_digest(f) if args.add_digest else read_checkpoint(f)
            print(f'{f}: ok')
        except CheckpointError as exc:
            print(f'error: {exc}')
            code = 2
    return code


if __name__ == '__main__':
    raise SystemExit(main())
