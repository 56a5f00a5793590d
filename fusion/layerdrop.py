"""Stage-1 multimodal LayerDrop: which blocks of each modality run in a training step.

Each modality draws its own keep-mask per batch (shared by the batch, as in fairseq and ADMN), so the
step really skips the dropped blocks. Beyond ADMN, ``uniform_count`` samples the *number* of kept
layers uniformly so that the small budgets the controller will hand out are trained as often as
large ones (p = 0.2 alone almost never shows a 3-of-12 sub-network), and ``absent_prob`` leaves
whole modalities out, so that every modality and every pair learns to decide on its own: when a
sensor is destroyed, the others then carry the decision if they are given the layers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Iterable

import numpy as np
import torch

from admn_ros.fusion.validate import Range, fraction


@dataclass
class LayerDropConfig:
    max_rate: float = 0.2          # drop probability per block after the warm-up
    warmup_epochs: float = 5.0     # linear ramp of the rate from 0 to max_rate
    full_drop_prob: float = 0.1    # per modality per batch: keep only block 0 ("full-backbone drop")
    uniform_count: bool = True     # sample k ~ U{1..depth} kept blocks (block 0 + k-1 random others)
    uniform_count_prob: float = 0.5  # share of batches that use the uniform-count rule when enabled
    absent_prob: float = 0.0       # per modality per sample: no block at all (token left out of
                                   # fusion); never every modality of a sample at once

    LIMITS: ClassVar[dict] = {'max_rate': Range(0.0, 1.0, hi_open=True), 'warmup_epochs': Range(0.0),
                              'full_drop_prob': fraction(), 'uniform_count_prob': fraction(),
                              'absent_prob': Range(0.0, 1.0, hi_open=True)}

    def rate(self, epoch: float) -> float:
        """Drop rate at a (fractional) epoch."""
        if self.warmup_epochs <= 0:
            return self.max_rate
        return self.max_rate * min(1.0, max(0.0, epoch) / self.warmup_epochs)


def sample_keep(modalities: Iterable[str], depth: int, batch: int, epoch: float, cfg: LayerDropConfig,
                generator: torch.Generator, device=None) -> Dict[str, torch.Tensor]:
    """One bool mask ``[batch, depth]`` per modality, identical across the batch except for the
    samples that ``absent_prob`` leaves without that modality."""
    keep = {}
    warm = cfg.rate(epoch) / cfg.max_rate if cfg.max_rate > 0 else 1.0
    for m in modalities:
        u = torch.rand(3, generator=generator)
        if u[0] < cfg.full_drop_prob * warm:
            row = torch.zeros(depth, dtype=torch.bool)
            row[0] = True
        elif cfg.uniform_count and u[1] < cfg.uniform_count_prob * warm:
            k = int(torch.randint(1, depth + 1, (1,), generator=generator))
            others = torch.randperm(depth - 1, generator=generator)[:k - 1] + 1
            row = torch.zeros(depth, dtype=torch.bool)
            row[0] = True
            row[others] = True
        else:
            row = torch.rand(depth, generator=generator) >= cfg.rate(epoch)
        keep[m] = row.to(device).expand(batch, depth)
    if cfg.absent_prob > 0 and keep:
        # Per sample, unlike the layer masks: every batch then mixes full, paired and single
        # sensors, so each of those paths trains at every step (skipping still saves the compute).
        names = list(keep)
        absent = torch.rand(batch, len(names), generator=generator) < cfg.absent_prob * warm
        everything = absent.all(1)
        if everything.any():   # one modality stays, chosen uniformly
            stay = torch.randint(len(names), (int(everything.sum()),), generator=generator)
            absent[everything.nonzero().flatten(), stay] = False
        absent = absent.to(device)
        for i, m in enumerate(names):
            keep[m] = keep[m] & ~absent[:, i, None]
    return keep


def check_depth(depth: int) -> int:
    """``depth`` as an int when it is a positive integer, else ValueError."""
    if int(depth) != depth or depth < 1:
        raise ValueError(f'depth must be a positive integer, got {depth!r}')
    return int(depth)


def check_layer_count(count: int, depth: int) -> int:
    """``count`` as an int when it is a number of layers of a ``depth``-layer encoder, else ValueError."""
    check_depth(depth)
    if int(count) != count or not 0 <= count <= depth:
        raise ValueError(f'layer count must be an integer in [0, {depth}], got {count!r}')
    return int(count)


def evenly_spaced_indices(count: int, depth: int) -> np.ndarray:
    """LayerDrop's pruning rule generalised: ``count`` survivors at ``rint(linspace(0, depth - 1,
    count))``, in float64 (numpy rounds half to even).

    The one "evenly spaced layers" rule: stage-1 validation at reduced depth, the rule-based
    policies, the oracle's and the controller's candidate splits and the latency benchmark all use
    it. The spacing is at least one layer, so the indices are distinct; ``count = 1`` keeps layer 0.
    """
    count = check_layer_count(count, depth)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    return np.rint(np.linspace(0, depth - 1, count)).astype(np.int64)


def evenly_spaced_mask(count: int, depth: int) -> torch.Tensor:
    """:func:`evenly_spaced_indices` as a bool keep-row ``[depth]``."""
    row = torch.zeros(depth, dtype=torch.bool)
    row[torch.from_numpy(evenly_spaced_indices(count, depth))] = True
    return row
