"""LayerShuffle: train the encoders so that their blocks work in any order, and measure robustness.

Training (a stage-1 option, :class:`LayerShuffleConfig`): each step draws, per modality, a random
permutation of its blocks shared by the whole batch; position ``k`` runs block ``order[k]``. Two
variants add modules to the encoders (:class:`~admn_ros.fusion.encoder.AdaptiveDepthEncoder`):

* ``position_embed_dim > 0`` (LS-pos): a learned embedding of the position, projected into the
  tokens before each block, so a block knows where it runs;
* ``position_loss > 0`` (LS-pred): per-block heads predict the position from the block's
  mean-pooled output; their cross-entropy, times ``position_loss``, joins the task loss.

Evaluation (:func:`robustness`): accuracy in natural order, under random block orders (a fresh
permutation per batch and modality) and under random block failure (:func:`inject_faults`: every
block that would run fails with probability ``rate``, independently per sample: what a faulty or
distributed execution does). The fusion node injects the same failures (``layer_fault_rate``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.validate import at_least, fraction


@dataclass
class LayerShuffleConfig:
    """Stage-1 option: random block order in training (off by default)."""

    enabled: bool = False
    prob: float = 1.0              # share of steps run in a random order (1 = every step)
    position_embed_dim: int = 0    # LS-pos: width of the learned position embedding (32 upstream)
    position_loss: float = 0.0     # LS-pred: weight of the position-prediction loss (1 upstream)

    LIMITS: ClassVar[dict] = {'prob': fraction(), 'position_embed_dim': at_least(0),
                              'position_loss': at_least(0)}

    @property
    def variant(self) -> str:
        if not self.enabled:
            return 'off'
        return 'pos_embed' if self.position_embed_dim else 'pos_pred' if self.position_loss else 'shuffle'


def with_position_modules(cfg: ModelConfig, shuffle: LayerShuffleConfig) -> ModelConfig:
    """The model config with the modules the LayerShuffle variant needs (unchanged when off)."""
    if not shuffle.enabled:
        return cfg
    encoders = {m: replace(e, position_embed_dim=shuffle.position_embed_dim or e.position_embed_dim,
                           position_head=e.position_head or shuffle.position_loss > 0)
                for m, e in cfg.encoders.items()}
    return replace(cfg, encoders=encoders)


def sample_orders(modalities: Iterable[str], depth: int, cfg: LayerShuffleConfig,
                  generator: torch.Generator) -> Optional[Dict[str, torch.Tensor]]:
    """One block permutation per modality for a training step, or None (natural order: the
    option is off, or this step is among the ``1 - prob`` in order)."""
    if not cfg.enabled or float(torch.rand(1, generator=generator)) >= cfg.prob:
        return None
    return {m: torch.randperm(depth, generator=generator) for m in modalities}


def position_loss(model) -> torch.Tensor:
    """Mean of the encoders' position-prediction losses of the last forward (0 without heads)."""
    model = getattr(model, 'module', model)
    terms = [e.position_loss for e in model.encoders.values() if e.position_loss is not None]
    if not terms:
        return torch.zeros((), device=next(model.parameters()).device)
    return torch.stack(terms).mean()


def inject_faults(keep: Mapping[str, torch.Tensor], rate: float,
                  generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    """Knock out every block that ``keep`` runs with probability ``rate``, per sample and block
    (bool masks in, bool masks out). ``rate = 0`` returns the masks unchanged."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f'fault rate must lie in [0, 1], got {rate!r}')
    if rate == 0:
        return dict(keep)
    out = {}
    for m, k in keep.items():
        alive = torch.rand(k.shape, generator=generator) >= rate
        out[m] = k & alive.to(k.device)
    return out


@torch.inference_mode()
def robustness(model, pre, arrays, *, orders: int = 5, fault_rate: float = 0.25, seed: int = 0,
               batch_size: int = 250, modes: Sequence[str] = ('natural', 'shuffled', 'faults'),
               device=None) -> Dict[str, Dict[str, float]]:
    """Accuracy of ``model`` on ``arrays`` (raw samples with labels) in each mode:

    * ``natural``: every block, in order;
    * ``shuffled``: every block, a fresh random order per batch and modality (``orders`` repeats);
    * ``faults``: blocks knocked out by :func:`inject_faults` at ``fault_rate`` (``orders`` repeats);
    * ``shuffled_faults``: both at once.

    Returns ``{mode: {'mean', 'std', 'runs'}}`` (std over the repeats; 0 for ``natural``).
    """
    from admn_ros.datasets.sample import take
    model.eval()
    device = device or next(model.parameters()).device
    depth, mods = model.depth, model.modalities
    labels = torch.as_tensor(arrays['label'])
    n = len(labels)
    batches = []
    for start in range(0, n, batch_size):
        raw = take(arrays, slice(start, start + batch_size))
        batches.append({m: x.to(device) for m, x in pre(raw).items() if m in mods})
    unknown = set(modes) - {'natural', 'shuffled', 'faults', 'shuffled_faults'}
    if unknown:
        raise ValueError(f'unknown robustness modes {sorted(unknown)}')
    out = {}
    for mode in modes:
        runs = []
        for r in range(1 if mode == 'natural' else orders):
            g = torch.Generator().manual_seed(seed * 7919 + r)
            correct = 0
            for i, inputs in enumerate(batches):
                b = len(next(iter(inputs.values())))
                order = ({m: torch.randperm(depth, generator=g) for m in mods}
                         if 'shuffled' in mode else None)
                keep = None
                if 'faults' in mode:
                    full = {m: torch.ones(b, depth, dtype=torch.bool) for m in mods}
                    keep = {m: k.to(device) for m, k in inject_faults(full, fault_rate, g).items()}
                pred = model(inputs, keep, order=order).argmax(-1).cpu()
                correct += int((pred == labels[i * batch_size:i * batch_size + b]).sum())
            runs.append(correct / n)
        out[mode] = {'mean': float(np.mean(runs)), 'std': float(np.std(runs)), 'runs': len(runs)}
    return out
