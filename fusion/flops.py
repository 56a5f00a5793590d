"""Analytic FLOPs of every part of the model, so the cost of an allocation is known before running it.

Counts follow ``torch.utils.flop_counter.FlopCounterMode`` under the MATH attention backend: 2 FLOPs
per multiply-accumulate of every matmul and convolution (linear layers, patch embedding, Q·Kᵀ and
attention·V); norms, softmax, GELU and bias additions are not counted. All numbers are per sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional

import numpy as np

from admn_ros.fusion.config import EncoderConfig, ModelConfig


def block_flops(tokens: int, dim: int, mlp_ratio: float = 4.0, *, mlp: str = 'gelu',
                position_dim: int = 0) -> float:
    """One pre-norm transformer block: qkv, Q·Kᵀ, attention·V, projection, two MLP linears (one
    for a collapsed MLP, ``mlp='linear'``), plus a LayerShuffle position projection when
    ``position_dim`` is set."""
    hidden = int(dim * mlp_ratio)
    mlp_macs = dim * dim if mlp == 'linear' else 2 * dim * hidden
    macs = (tokens * (3 * dim * dim + dim * dim + mlp_macs) + 2 * tokens * tokens * dim
            + tokens * (dim + position_dim) * dim * (position_dim > 0))
    return 2.0 * macs


def encoder_block_costs(cfg: EncoderConfig) -> np.ndarray:
    """FLOPs of each block of an encoder (they differ once some MLPs are collapsed)."""
    return np.array([block_flops(cfg.num_tokens, cfg.dim, cfg.mlp_ratio, mlp=cfg.mlp_kind(i),
                                 position_dim=cfg.position_embed_dim) for i in range(cfg.depth)])


def patch_embed_flops(cfg: EncoderConfig) -> float:
    if cfg.stem == 'patch':
        return 2.0 * cfg.num_patches * cfg.in_chans * cfg.patch_size ** 2 * cfg.dim
    (h, w), chans, total = cfg.input_size, cfg.in_chans, 0.0
    for width in cfg.stem_widths:  # 3x3 stride-2 convs, padding 1
        h, w = (h + 1) // 2, (w + 1) // 2
        total += 2.0 * h * w * width * chans * 9
        chans = width
    return total + 2.0 * cfg.num_patches * chans * (cfg.patch_size // 4) ** 2 * cfg.dim


@dataclass
class CostModel:
    """Per-sample FLOPs of each part of an :class:`~admn_ros.fusion.model.ADMNModel`."""

    block_flops: Dict[str, float]      # one encoder block of modality m
    embed_flops: Dict[str, float]      # patch embedding of modality m
    adapter_flops: Dict[str, float]    # adapter of modality m
    fusion_block_flops: Dict[int, float]  # one fusion block as a function of its token count
    head_flops: float
    depth: int
    # Each block of modality m, where they differ (collapsed MLPs); None: all cost block_flops[m].
    # block_flops[m] is then the dearest block: the budget selector counts every block at it, so a
    # selection stays within its budget, and budget fractions refer to the uncollapsed model.
    block_costs: Optional[Dict[str, np.ndarray]] = None

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> 'CostModel':
        n_max = len(cfg.encoders) + 1  # modality tokens + null token
        hidden = cfg.fusion_dim * 4
        head = 2.0 * cfg.fusion_dim * cfg.num_classes
        if cfg.head == 'regression':
            head = 2.0 * (cfg.fusion_dim * cfg.fusion_dim + cfg.fusion_dim * cfg.num_classes)
        costs = {m: encoder_block_costs(e) for m, e in cfg.encoders.items()}
        uneven = any(c.min() != c.max() for c in costs.values())
        return cls(
            block_flops={m: float(c.max()) for m, c in costs.items()},
            block_costs=costs if uneven else None,
            embed_flops={m: patch_embed_flops(e) for m, e in cfg.encoders.items()},
            adapter_flops={m: 2.0 * (e.dim * cfg.fusion_dim + 2 * cfg.fusion_dim * cfg.adapter_hidden)
                           for m, e in cfg.encoders.items()},
            fusion_block_flops={n: cfg.fusion_depth * block_flops(n, cfg.fusion_dim, hidden / cfg.fusion_dim)
                                for n in range(1, n_max + 1)},
            head_flops=head,
            depth=cfg.depth,
        )

    @property
    def modalities(self):
        return tuple(self.block_flops)

    def layer_costs(self, modalities: Optional[Iterable[str]] = None) -> np.ndarray:
        """Cost of one layer of each modality, in the given order (the budget selector's input)."""
        return np.array([self.block_flops[m] for m in (modalities or self.modalities)], dtype=np.float64)

    def fixed_flops(self, present: Optional[Iterable[str]] = None) -> float:
        """Everything that does not depend on the allocation: embeddings, adapters, fusion, head."""
        present = tuple(self.modalities if present is None else present)
        return (sum(self.embed_flops[m] + self.adapter_flops[m] for m in present)
                + self.fusion_block_flops[len(present) + 1] + self.head_flops)

    def encoder_flops(self, keep: Mapping[str, np.ndarray]) -> np.ndarray:
        """Encoder-block FLOPs per sample of an allocation ``{m: bool [B, depth] or [depth]}``."""
        total = 0.0
        for m, mask in keep.items():
            mask = np.asarray(mask, dtype=bool)
            if self.block_costs is not None:
                total = total + mask.astype(np.float64) @ self.block_costs[m]
            else:
                total = total + mask.sum(-1) * self.block_flops[m]
        return np.atleast_1d(np.asarray(total, dtype=np.float64))

    def total_flops(self, keep: Mapping[str, np.ndarray]) -> np.ndarray:
        """Whole-model FLOPs per sample; modalities missing from ``keep`` are absent from the input."""
        return self.encoder_flops(keep) + self.fixed_flops(tuple(m for m in self.modalities if m in keep))

    def full_encoder_flops(self, present: Optional[Iterable[str]] = None) -> float:
        present = tuple(self.modalities if present is None else present)
        return float(sum(self.block_flops[m] for m in present) * self.depth)
