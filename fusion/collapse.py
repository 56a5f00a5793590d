"""LayerCollapse: make the last MLP blocks linear in training, then merge each into one layer.

Training (a stage-1 option, :class:`CollapseTrainConfig`): the MLP activation of the last
``blocks`` blocks of every encoder becomes a PReLU with one learned slope ``alpha`` per block
(identity at ``alpha = 1``; it starts as a leaky ReLU, the closest PReLU to the GELU it replaces).
The regulariser ``pull * (alpha - 1)^2`` drives each slope toward 1; it is applied decoupled from
Adam, as AdamW applies weight decay (:func:`pull_slopes`: after each step
``alpha -= lr * pull * 2 (alpha - 1)``), and the slopes get no weight decay. Over a short
fine-tune with a cosine learning rate (one epoch of 62 steps from 3e-4) the default ``pull`` closes
the gap ``|alpha - 1|`` by about e^-3.7, from 0.99 to under the collapse threshold.

Collapse (:func:`collapse_model`): a block whose ``|alpha - 1|`` is below ``threshold`` has its
MLP ``fc2 o PReLU o fc1`` replaced by one linear layer ``W = W2 W1``, ``b = W2 b1 + b2``; the block
keeps its residual, norms and attention. At ``alpha = 1`` exactly this changes nothing but
round-off; at ``|alpha - 1| < threshold`` the slope's last bit of nonlinearity is dropped.

    admn collapse --checkpoint F --out G [--blocks 4 --rounds 2 --epochs 1]

proceeds from the last blocks backwards in rounds: each round makes a few more blocks
collapsible, fine-tunes (stage 1 from the current weights, ``--epochs``), and merges the blocks
whose slope arrived. ``--epochs 0`` collapses the chosen blocks without training (their
activation taken as the identity), to measure what training buys.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from admn_ros.fusion.blocks import Mlp, merge_linear
from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.model import ADMNModel
from admn_ros.fusion.validate import at_least

THRESHOLD = 0.05   # |alpha - 1| below which a block collapses


@dataclass
class CollapseTrainConfig:
    """Stage-1 option: learned PReLU slopes in the last blocks, pulled toward 1 (off by default)."""

    blocks: int = 0        # the last `blocks` blocks of each encoder (not yet collapsed) get a slope
    pull: float = 200.0    # regulariser weight; one step multiplies alpha - 1 by (1 - 2 lr pull)

    LIMITS: ClassVar[dict] = {'blocks': at_least(0), 'pull': at_least(0)}


def last_blocks(depth: int, count: int) -> Tuple[int, ...]:
    """The last ``count`` block indices, closest to the output first."""
    return tuple(range(depth - 1, depth - 1 - min(count, depth), -1))


def with_slopes(cfg: ModelConfig, opt: CollapseTrainConfig) -> ModelConfig:
    """The model config with PReLU slopes in the last ``opt.blocks`` blocks that are not collapsed."""
    if not opt.blocks:
        return cfg
    encoders = {}
    for m, e in cfg.encoders.items():
        new = [b for b in last_blocks(e.depth, opt.blocks) if b not in e.collapsed_blocks]
        encoders[m] = replace(e, prelu_blocks=tuple(sorted(set(e.prelu_blocks) | set(new))))
    return replace(cfg, encoders=encoders)


def slopes(model) -> Iterator[Tuple[str, int, nn.Parameter]]:
    """(modality, block, alpha) of every PReLU block."""
    model = getattr(model, 'module', model)
    for m, enc in model.encoders.items():
        for b, block in enumerate(enc.blocks):
            if isinstance(block.mlp, Mlp) and block.mlp.slope is not None:
                yield m, b, block.mlp.slope


def param_groups(model, weight_decay: float) -> List[Dict]:
    """Optimiser groups: the slopes without weight decay (it would pull them to 0, not 1)."""
    ids = {id(p) for _, _, p in slopes(model)}
    params = list(getattr(model, 'module', model).parameters())
    groups = [{'params': [p for p in params if id(p) not in ids], 'weight_decay': weight_decay}]
    if ids:
        groups.append({'params': [p for p in params if id(p) in ids], 'weight_decay': 0.0})
    return groups


@torch.no_grad()
def pull_slopes(model, lr: float, pull: float) -> None:
    """The decoupled regulariser step (module docstring); never past 1 in one step."""
    factor = min(1.0, 2.0 * lr * pull)
    for _, _, alpha in slopes(model):
        alpha.sub_(factor * (alpha - 1.0))


def slope_gap(model) -> float:
    """Largest ``|alpha - 1|`` over the PReLU blocks (NaN without any)."""
    gaps = [float((a.detach() - 1).abs().max()) for _, _, a in slopes(model)]
    return max(gaps) if gaps else float('nan')


def collapsible(model, threshold: float = THRESHOLD) -> Dict[str, List[int]]:
    """Blocks per modality whose slope is within ``threshold`` of 1."""
    out: Dict[str, List[int]] = {}
    for m, b, alpha in slopes(model):
        if float((alpha.detach() - 1).abs().max()) < threshold:
            out.setdefault(m, []).append(b)
    return out


def collapse_model(model: ADMNModel, blocks: Mapping[str, Sequence[int]], *, force: bool = False) -> ADMNModel:
    """A copy of ``model`` with the MLPs of ``blocks`` merged into one linear layer each.

    Only PReLU blocks collapse unless ``force``, which also merges GELU blocks (treating their
    activation as the identity: a collapse without training).
    """
    model = getattr(model, 'module', model)
    encoders = dict(model.cfg.encoders)
    merged = {}
    for m, chosen in blocks.items():
        e = encoders[m]
        chosen = sorted(set(int(b) for b in chosen) - set(e.collapsed_blocks))
        for b in chosen:
            if e.mlp_kind(b) != 'prelu' and not force:
                raise ValueError(f'{m} block {b} has no PReLU slope; train it first (or force)')
            merged[(m, b)] = merge_linear(model.encoders[m].blocks[b].mlp)
        encoders[m] = replace(e, prelu_blocks=tuple(b for b in e.prelu_blocks if b not in chosen),
                              collapsed_blocks=tuple(sorted(set(e.collapsed_blocks) | set(chosen))))
    out = ADMNModel(replace(model.cfg, encoders=encoders))
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split('.')
        if parts[0] == 'encoders' and parts[2] == 'blocks' and parts[4] == 'mlp' \
                and (parts[1], int(parts[3])) in merged:
            continue
        state[key] = value
    for (m, b), linear in merged.items():
        state[f'encoders.{m}.blocks.{b}.mlp.weight'] = linear.weight.detach()
        state[f'encoders.{m}.blocks.{b}.mlp.bias'] = linear.bias.detach()
    out.load_state_dict(state, strict=True)
    return out.to(next(model.parameters()).device).train(model.training)


def mlp_parameters(dim: int, hidden: int, kind: str) -> int:
    """Parameters of one block's MLP: fc1 + fc2 (+ the slope), or the one merged layer."""
    if kind == 'linear':
        return dim * dim + dim
    return dim * hidden + hidden + hidden * dim + dim + (kind == 'prelu')


def count_parameters(model) -> int:
    return sum(p.numel() for p in getattr(model, 'module', model).parameters())


# --------------------------------------------------------------------------- the command
def round_targets(blocks: int, rounds: int) -> List[int]:
    """How many of the last blocks are collapsible after each round (grows to ``blocks``)."""
    rounds = max(1, min(rounds, blocks))
    return [math.ceil(blocks * (r + 1) / rounds) for r in range(rounds)]


def collapse_checkpoint(checkpoint, out, *, blocks: int = 4, rounds: int = 2, epochs: int = 1,
                        threshold: float = THRESHOLD, lr: float = 3e-4, pull: float = 200.0,
                        train_size: Optional[int] = None, work_dir=None, device: str = 'auto',
                        progress: bool = True) -> Dict:
    """``admn collapse`` (module docstring): writes ``out`` and returns what was collapsed.

    The fine-tuning rounds reuse the checkpoint's own stage-1 training config (data, LayerDrop,
    augmentation, distillation), started from the current weights for ``epochs`` at learning rate
    ``lr``. A controller in the source file is carried over unchanged (the depth is unchanged).
    """
    from admn_ros.fusion.checkpoint import load_checkpoint, read_checkpoint
    from admn_ros.fusion.prune import save_like
    if blocks < 1:
        raise ValueError(f'blocks must be >= 1, got {blocks}')
    model, meta = load_checkpoint(checkpoint)
    source_like = read_checkpoint(checkpoint)['state_dict']
    work = Path(work_dir) if work_dir else Path(out).parent / (Path(out).stem + '_rounds')
    history = []
    current = Path(checkpoint)
    for r, target in enumerate(round_targets(blocks, rounds)):
        chosen = {m: list(last_blocks(model.depth, target)) for m in model.modalities}
        if epochs == 0:
            model = collapse_model(model, chosen, force=True)
            history.append({'round': r + 1, 'blocks': target, 'collapsed': _collapsed(model)})
            continue
        cfg = fine_tune_config(meta, current, epochs=epochs, lr=lr, blocks=target, pull=pull,
                               train_size=train_size, device=device)
        from admn_ros.fusion.stage1 import train_stage1
        train_stage1(cfg, work / f'round{r + 1}', progress=progress)
        # The last epoch, not the best-scoring one: the slopes are furthest along there.
        model, _ = load_checkpoint(work / f'round{r + 1}' / 'last.pt')
        gap = {f'{m}:{b}': round(float(a.detach()), 4) for m, b, a in slopes(model)}
        model = collapse_model(model, collapsible(model, threshold))
        current = work / f'round{r + 1}' / 'collapsed.pt'
        save_like(current, model, meta, like={})
        history.append({'round': r + 1, 'blocks': target, 'slopes': gap, 'collapsed': _collapsed(model)})
    info = {'source': str(checkpoint), 'threshold': threshold, 'epochs': epochs, 'rounds': history,
            'collapsed': _collapsed(model)}
    save_like(out, model, {**meta, 'collapse': info}, like=source_like)
    return info


def _collapsed(model) -> Dict[str, List[int]]:
    return {m: list(e.collapsed_blocks) for m, e in model.cfg.encoders.items()}


def fine_tune_config(meta, start, *, epochs: int, lr: float, blocks: int = 0, pull: float = 200.0,
                     train_size: Optional[int] = None, device: str = 'auto'):
    """The checkpoint's own stage-1 config, turned into a short fine-tuning run from ``start``:
    no LayerDrop or augmentation warm-up (the model is trained), a short learning-rate warm-up."""
    from admn_ros.fusion.config import from_dict
    from admn_ros.fusion.stage1 import Stage1Config
    saved = meta.get('train_config')
    if not saved:
        raise ValueError('the checkpoint holds no stage-1 training config to fine-tune with')
    cfg = from_dict(Stage1Config, saved)
    cfg.fine_tune_from = str(start)
    cfg.epochs, cfg.lr, cfg.device = epochs, lr, device
    cfg.warmup_steps = min(cfg.warmup_steps, 10)
    cfg.layerdrop = replace(cfg.layerdrop, warmup_epochs=0.0)
    cfg.augment = replace(cfg.augment, start_epoch=0)
    cfg.collapse = CollapseTrainConfig(blocks=blocks, pull=pull)
    if train_size is not None:
        cfg.data = replace(cfg.data, train_size=train_size)
    return cfg
