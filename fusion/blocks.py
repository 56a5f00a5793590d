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


#: MLP kinds of a block: GELU (ViT), a PReLU with one learned slope (LayerCollapse training, the
#: slope pulled toward 1 where the MLP becomes linear) and one linear layer (a collapsed MLP).
MLP_KINDS = ('gelu', 'prelu', 'linear')

#: LayerCollapse's starting slope: a leaky ReLU, the closest PReLU to the GELU it replaces.
PRELU_INIT = 0.01


class Mlp(nn.Sequential):
    """fc1 -> activation -> fc2; ``act='prelu'`` gives the activation one learned slope ``alpha``
    (identity at ``alpha = 1``), so the whole MLP can then be merged into one linear layer."""

    def __init__(self, dim: int, hidden: int, act: str = 'gelu'):
        if act not in ('gelu', 'prelu'):
            raise ValueError(f"Mlp activation must be 'gelu' or 'prelu', got {act!r}")
        activation = nn.GELU() if act == 'gelu' else nn.PReLU(num_parameters=1, init=PRELU_INIT)
        super().__init__(nn.Linear(dim, hidden), activation, nn.Linear(hidden, dim))

    @property
    def slope(self) -> Optional[torch.Tensor]:
        """The PReLU slope ``alpha`` (a one-element parameter), or None for GELU."""
        return self[1].weight if isinstance(self[1], nn.PReLU) else None


def merge_linear(mlp: Mlp) -> nn.Linear:
    """fc2 o fc1 as one linear layer: ``W = W2 W1``, ``b = W2 b1 + b2``. Exact when the activation
    between them is the identity (a PReLU at slope 1); the caller decides when that is close enough."""
    fc1, fc2 = mlp[0], mlp[2]
    merged = nn.Linear(fc1.in_features, fc2.out_features)
    with torch.no_grad():
        # In float64, so the merged layer equals the two-layer product up to float32 storage only.
        w1, w2 = fc1.weight.double(), fc2.weight.double()
        merged.weight.copy_(w2 @ w1)
        merged.bias.copy_(w2 @ fc1.bias.double() + fc2.bias.double())
    return merged.to(fc1.weight.device)


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
    """x + Attn(LN(x)), then x + MLP(LN(x)). Skipping the block leaves x unchanged (the residual).

    ``mlp`` picks the MLP (:data:`MLP_KINDS`); a collapsed block (``'linear'``) keeps its residual,
    its norms and its attention, which is then the block's only nonlinearity.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, mlp: str = 'gelu'):
        super().__init__()
        if mlp not in MLP_KINDS:
            raise ValueError(f'block mlp must be one of {MLP_KINDS}, got {mlp!r}')
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Linear(dim, dim) if mlp == 'linear' else Mlp(dim, int(dim * mlp_ratio), mlp)
        init_residual_branch(self)

    def forward(self, x: torch.Tensor, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))
