"""LayerDrop pruning on demand: a static model of ``keep`` blocks per modality, cut from a trained one.

    admn prune --checkpoint F --keep 6 --strategy every_other|data_driven --out G

Which blocks stay:

* ``every_other``: LayerDrop's rule. Pruning at rate ``p = 1 - keep/depth`` drops the blocks at
  1-based depths ``d`` with ``d mod floor(1/p) == 0`` (6 of 12 keeps 0, 2, ..., 10); where that does
  not leave exactly ``keep`` blocks (``p > 0.5``, or ``p`` not of the form 1/n) the survivors are
  evenly spaced instead (:func:`admn_ros.fusion.layerdrop.evenly_spaced_indices`).
* ``data_driven``: greedy backward elimination on a validation set: starting from every block, the
  (modality, block) whose removal raises the validation loss least goes, until each modality has
  ``keep``. Each trial re-runs only the one encoder that changed (the other modalities' fusion
  tokens are reused).

The kept blocks are copied into a model of depth ``keep`` and re-indexed 0..keep-1 (with their
LayerShuffle position modules and LayerCollapse state), so the pruned model computes exactly what
the adaptive model computes with the same keep-mask, at the cost and size of the kept blocks only.
A controller in the source file is kept and told which blocks remain (``meta['pruned']``), so the
pruned file still runs the ``admn`` policy, now over the kept blocks.

To train a model meant for pruning to ``r`` of ``N`` blocks, LayerDrop's rule ``p = 1 - r/N`` is
:func:`layerdrop_for_keep` (``admn train stage1 --prune-to r``).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from admn_ros.fusion.layerdrop import LayerDropConfig, evenly_spaced_indices
from admn_ros.fusion.model import ADMNModel

STRATEGIES = ('every_other', 'data_driven')
_BLOCK_KEY = re.compile(r'^encoders\.([^.]+)\.(blocks|position_proj|position_heads)\.(\d+)\.(.+)$')


def every_other(depth: int, keep: int) -> List[int]:
    """LayerDrop's Every Other survivors (module docstring), 0-based and sorted."""
    _check_keep(depth, keep)
    if keep == depth:
        return list(range(depth))
    step = depth // (depth - keep)          # floor(1 / p), in integers: no float round-off
    if step >= 2:
        kept = [d - 1 for d in range(1, depth + 1) if d % step]
        if len(kept) == keep:
            return kept
    return evenly_spaced_indices(keep, depth).tolist()


def layerdrop_for_keep(keep: int, depth: int, base: Optional[LayerDropConfig] = None) -> LayerDropConfig:
    """LayerDrop's training preset for a model to be pruned to ``keep`` of ``depth`` blocks: drop
    rate ``p = 1 - keep/depth``, the other settings of ``base`` kept."""
    _check_keep(depth, keep)
    return replace(base or LayerDropConfig(), max_rate=1.0 - keep / depth)


def _check_keep(depth: int, keep: int) -> None:
    if not 1 <= int(keep) <= int(depth):
        raise ValueError(f'keep must lie in 1..{depth}, got {keep}')


# --------------------------------------------------------------------------- data-driven choice
@torch.inference_mode()
def greedy_blocks(model: ADMNModel, inputs: Sequence[Mapping[str, torch.Tensor]],
                  labels: Sequence[torch.Tensor], keep: int, progress=None) -> Dict[str, List[int]]:
    """Greedy backward elimination (module docstring) on preprocessed validation batches."""
    model.eval()
    depth, mods = model.depth, model.modalities
    _check_keep(depth, keep)
    current = {m: list(range(depth)) for m in mods}

    def tokens(m, blocks):
        row = torch.zeros(depth, dtype=torch.bool)
        row[blocks] = True
        return [model.modality_token(m, x[m], row.to(x[m].device).expand(len(x[m]), depth)) for x in inputs]

    def loss(parts):
        total = sum(float(F.cross_entropy(model.head(model.fuse([parts[m][i] for m in mods], len(y))).float(),
                                          y, reduction='sum')) for i, y in enumerate(labels))
        return total / sum(len(y) for y in labels)

    parts = {m: tokens(m, current[m]) for m in mods}
    while any(len(current[m]) > keep for m in mods):
        best = None
        for m in mods:
            if len(current[m]) <= keep:
                continue
            for b in current[m]:
                trial = tokens(m, [i for i in current[m] if i != b])
                value = loss({**parts, m: trial})
                if best is None or value < best[0]:
                    best = (value, m, b, trial)
        value, m, b, trial = best
        current[m] = [i for i in current[m] if i != b]
        parts[m] = trial
        if progress:
            progress(f'dropped {m} block {b}: validation loss {value:.4f}')
    return current


# --------------------------------------------------------------------------- the static model
def prune_model(model: ADMNModel, kept: Mapping[str, Sequence[int]]) -> ADMNModel:
    """A model of depth ``len(kept[m])`` holding only the kept blocks of each modality, re-indexed."""
    model = getattr(model, 'module', model)
    kept = {m: [int(b) for b in kept[m]] for m in model.modalities if m in kept}
    missing = [m for m in model.modalities if m not in kept]
    if missing:
        raise ValueError(f'no kept blocks given for modalities {missing}')
    counts = {len(v) for v in kept.values()}
    if len(counts) != 1:
        raise ValueError(f'every modality must keep the same number of blocks, got '
                         f'{ {m: len(v) for m, v in kept.items()} }')
    for m, blocks in kept.items():
        if blocks != sorted(set(blocks)) or not blocks or blocks[0] < 0 or blocks[-1] >= model.depth:
            raise ValueError(f'kept blocks of {m} must be distinct, sorted indices in '
                             f'0..{model.depth - 1}, got {blocks}')
    encoders = {}
    for m, e in model.cfg.encoders.items():
        new = {b: j for j, b in enumerate(kept[m])}
        encoders[m] = replace(e, depth=len(kept[m]),
                              prelu_blocks=tuple(new[b] for b in e.prelu_blocks if b in new),
                              collapsed_blocks=tuple(new[b] for b in e.collapsed_blocks if b in new))
    pruned = ADMNModel(replace(model.cfg, encoders=encoders))
    state = {}
    for key, value in model.state_dict().items():
        match = _BLOCK_KEY.match(key)
        if match:
            m, part, b, rest = match.group(1), match.group(2), int(match.group(3)), match.group(4)
            if b not in kept[m]:
                continue
            if part == 'position_heads' and rest.startswith('1.'):   # logits over positions
                value = value[kept[m]]
            key = f'encoders.{m}.{part}.{kept[m].index(b)}.{rest}'
        elif re.match(r'^encoders\.[^.]+\.depth_embed$', key):
            value = value[kept[key.split('.')[1]]]
        state[key] = value.clone()
    pruned.load_state_dict(state, strict=True)
    return pruned.to(next(model.parameters()).device)


def keep_masks(kept: Mapping[str, Sequence[int]], depth: int, batch: int = 1) -> Dict[str, torch.Tensor]:
    """The adaptive model's keep-masks that run the same blocks as a pruned model."""
    out = {}
    for m, blocks in kept.items():
        row = torch.zeros(depth, dtype=torch.bool)
        row[list(blocks)] = True
        out[m] = row.expand(batch, depth)
    return out


# --------------------------------------------------------------------------- the command
def validation_batches(model: ADMNModel, meta, *, dataset: Optional[str] = None, size: int = 300,
                       corrupt: bool = True, seed: int = 0, batch_size: int = 250):
    """Preprocessed validation batches and labels of the checkpoint's dataset: the standard
    corruption mix applied once (seeded) unless ``corrupt`` is False."""
    from admn_ros.datasets.registry import load_dataset
    from admn_ros.datasets.sample import take
    from admn_ros.fusion.checkpoint import checkpoint_preprocessor
    name = dataset or meta.get('dataset')
    if not name:
        raise ValueError('the checkpoint does not name its dataset; pass --dataset')
    arrays = load_dataset(name, 'val', seed=seed, size=size).arrays
    if corrupt:
        from admn_ros.datasets.corruptions import CorruptionSampler
        arrays = CorruptionSampler.standard()(arrays, np.random.default_rng(seed + 4242))
    pre = checkpoint_preprocessor(meta)
    device = next(model.parameters()).device
    xs, ys = [], []
    for start in range(0, len(arrays['label']), batch_size):
        raw = take(arrays, slice(start, start + batch_size))
        xs.append({m: x.to(device) for m, x in pre(raw).items() if m in model.modalities})
        ys.append(torch.as_tensor(raw['label'], device=device))
    return xs, ys


def choose_blocks(model: ADMNModel, meta, keep: int, strategy: str, *, dataset: Optional[str] = None,
                  val_size: int = 300, corrupt: bool = True, seed: int = 0,
                  progress=None) -> Dict[str, List[int]]:
    if strategy not in STRATEGIES:
        raise ValueError(f'strategy must be one of {STRATEGIES}, got {strategy!r}')
    if strategy == 'every_other':
        return {m: every_other(model.depth, keep) for m in model.modalities}
    xs, ys = validation_batches(model, meta, dataset=dataset, size=val_size, corrupt=corrupt, seed=seed)
    return greedy_blocks(model, xs, ys, keep, progress=progress)


def export_pruned(checkpoint, out, keep: int, strategy: str = 'every_other', *,
                  dataset: Optional[str] = None, val_size: int = 300, corrupt: bool = True,
                  seed: int = 0, progress=None) -> Dict:
    """Prune ``checkpoint`` to ``keep`` blocks per modality and write ``out``; returns what was kept."""
    from admn_ros.fusion.checkpoint import load_checkpoint, read_checkpoint
    model, meta = load_checkpoint(checkpoint)
    if keep > model.depth:
        raise ValueError(f'keep {keep} exceeds the model depth {model.depth}')
    kept = choose_blocks(model, meta, keep, strategy, dataset=dataset, val_size=val_size,
                         corrupt=corrupt, seed=seed, progress=progress)
    pruned = prune_model(model, kept)
    info = {'source': str(checkpoint), 'source_depth': model.depth, 'strategy': strategy,
            'kept': {m: list(v) for m, v in kept.items()},
            'source_kept': _compose(meta.get('pruned'), kept)}
    extra = {**meta, 'pruned': info}
    save_like(out, pruned, extra, like=read_checkpoint(checkpoint)['state_dict'])
    return info


def _compose(earlier: Optional[Mapping], kept: Mapping[str, Sequence[int]]) -> Dict[str, List[int]]:
    """Kept blocks in the numbering of the original model (a pruned model pruned again)."""
    if not earlier:
        return {m: list(v) for m, v in kept.items()}
    base = earlier.get('source_kept') or earlier['kept']
    return {m: [base[m][b] for b in v] for m, v in kept.items()}


def save_like(path, model: ADMNModel, extra: Dict, like: Mapping[str, torch.Tensor]) -> Path:
    """Save ``model`` with ``extra``, its floating weights in the precision of state dict ``like``
    (the shipped defaults are float16; a float32 source stays float32)."""
    from admn_ros.fusion.checkpoint import read_checkpoint, save_checkpoint, write_payload
    path = save_checkpoint(path, model, **extra)
    dtypes = {v.dtype for v in like.values() if v.is_floating_point()}
    if dtypes == {torch.float16}:
        payload = read_checkpoint(path)
        payload['state_dict'] = {k: v.half() if v.is_floating_point() else v
                                 for k, v in payload['state_dict'].items()}
        write_payload(payload, path)
    return path


def scorer_blocks(meta) -> Optional[Dict[str, List[int]]]:
    """For a pruned checkpoint with a controller: which of the controller's layers remain."""
    pruned = (meta or {}).get('pruned')
    return None if not pruned else {m: list(v) for m, v in (pruned.get('source_kept') or pruned['kept']).items()}
