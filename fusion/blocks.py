"""Pre-norm transformer block (ViT style), shared by the modality encoders and the fusion transformer."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``.

    Written out (rather than ``nn.MultiheadAttention``) so FLOP counters see every matmul under the
    MATH backend and the analytic cost model in :mod:`admn_ros.fusion.flops` can mirror it line by line.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f'dim {dim} must be divisible by heads {heads}')
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # [B,1,1,N]: True = attend
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


def init_residual_branch(module: nn.Module) -> None:
    """ViT's initialisation for the linear layers of a residual branch: N(0, 0.02), zero bias.

    The branch then starts close to zero, so a deep stack starts close to the identity and trains
    like a shallow one (with PyTorch's default init a 12-block encoder trained from scratch stayed at
    chance on the synthetic world where a 2-block one learned).
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)


class Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)). Skipping the block leaves x unchanged (the residual)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        init_residual_branch(self)

    def forward(self, x: torch.Tensor, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))
