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
from typing import Dict, Iterable

import torch


@dataclass
class LayerDropConfig:
    max_rate: float = 0.2          # drop probability per block after the warm-up
    warmup_epochs: float = 5.0     # linear ramp of the rate from 0 to max_rate
    full_drop_prob: float = 0.1    # per modality per batch: keep only block 0 ("full-backbone drop")
    uniform_count: bool = True     # sample k ~ U{1..depth} kept blocks (block 0 + k-1 random others)
    uniform_count_prob: float = 0.5  # share of batches that use the uniform-count rule when enabled
    absent_prob: float = 0.0       # per modality per sample: no block at all (token left out of
                                   # fusion); never every modality of a sample at once

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


def evenly_spaced(depth: int, k: int) -> torch.Tensor:
    """LayerDrop's pruning rule generalised: ``k`` survivors at ``round(linspace(0, depth-1, k))``."""
    row = torch.zeros(depth, dtype=torch.bool)
    if k > 0:
        row[torch.linspace(0, depth - 1, k).round().long()] = True
    return row
