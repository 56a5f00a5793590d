"""ADMN: per-modality adaptive-depth encoders fused by a small transformer.

    modality m: input -> AdaptiveDepthEncoder(keep[m]) -> CLS -> adapter -> token + modality embedding
    tokens of present modalities (+ one learned "null" token) -> fusion blocks -> mean pool -> head

A modality that is absent from ``inputs`` contributes no token. A sample whose mask gives a modality
zero layers has that token masked out of fusion attention and pooling: with no blocks run, its CLS is
an input-independent constant and carries no information. The null token keeps the fusion defined when
every modality is missing.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from admn_ros.fusion.blocks import Block, Mlp, init_residual_branch
from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.encoder import AdaptiveDepthEncoder
from admn_ros.fusion.heads import build_head

Keep = Mapping[str, torch.Tensor]


class Adapter(nn.Module):
    """A modality's CLS feature -> fusion width: a unit-gain linear map plus a residual MLP.

    The residual keeps the encoder's signal (and its gradient) at full strength from the first step
    (gain 0.98 at init); the former plain two-layer MLP passed about a fifth of both (gain 0.18-0.20),
    and the model behind it stayed at chance for 4 epochs where the encoder with a linear head learned.
    """

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__()
        self.proj = nn.Linear(dim, out)
        self.mlp = Mlp(out, hidden)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        init_residual_branch(self.mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x + self.mlp(x)


class ADMNModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleDict({m: AdaptiveDepthEncoder(e) for m, e in cfg.encoders.items()})
        self.adapters = nn.ModuleDict(
            {m: Adapter(e.dim, cfg.adapter_hidden, cfg.fusion_dim) for m, e in cfg.encoders.items()})
        self.modality_embed = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(1, cfg.fusion_dim)) for m in cfg.encoders})
        self.null_token = nn.Parameter(torch.zeros(1, 1, cfg.fusion_dim))
        self.fusion = nn.ModuleList(
            Block(cfg.fusion_dim, cfg.fusion_heads) for _ in range(cfg.fusion_depth))
        self.fusion_norm = nn.LayerNorm(cfg.fusion_dim)
        self.head = build_head(cfg.head, cfg.fusion_dim, cfg.num_classes)
        for p in [*self.modality_embed.values(), self.null_token]:
            nn.init.trunc_normal_(p, std=0.02)

    @property
    def modalities(self):
        return self.cfg.modalities

    @property
    def depth(self) -> int:
        return self.cfg.depth

    def forward(self, inputs: Mapping[str, torch.Tensor], keep: Optional[Keep] = None, *,
                mode: str = 'skip', order: Optional[Keep] = None) -> torch.Tensor:
        return self.head(self.features(inputs, keep, mode=mode, order=order))

    def features(self, inputs: Mapping[str, torch.Tensor], keep: Optional[Keep] = None, *,
                 mode: str = 'skip', order: Optional[Keep] = None) -> torch.Tensor:
        """Pooled fusion feature ``[B, fusion_dim]``; ``keep``, ``mode`` (``'skip'`` a bool mask,
        ``'blend'`` a float one) and ``order`` (a block permutation per modality) as in
        :class:`AdaptiveDepthEncoder`."""
        unknown = set(inputs) - set(self.encoders)
        if unknown:
            raise ValueError(f'unknown modalities {sorted(unknown)}; model has {list(self.modalities)}')
        present = [m for m in self.modalities if m in inputs]
        if not present:
            raise ValueError('inputs hold no modality')
        keep, order = dict(keep or {}), dict(order or {})
        return self.fuse([self.modality_token(m, inputs[m], keep.get(m), mode=mode, order=order.get(m))
                          for m in present], len(inputs[present[0]]))

    def modality_token(self, modality: str, x: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                       mode: str = 'skip', order=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """One modality's fusion token ``[B, 1, fusion_dim]`` and whether it ran any layer ``[B, 1]``.

        It depends on that modality's input and mask only, so a search over allocations (the
        ``oracle_split`` reference) can reuse it across the other modalities' choices.
        """
        cls = self.encoders[modality](x, mask, mode=mode, order=order)
        token = (self.adapters[modality](cls) + self.modality_embed[modality])[:, None]
        valid = (torch.ones(len(x), 1, dtype=torch.bool, device=self.null_token.device) if mask is None
                 else (mask != 0).any(1, keepdim=True))
        return token, valid

    def fuse(self, parts: Sequence[Tuple[torch.Tensor, torch.Tensor]], batch: int) -> torch.Tensor:
        """Pooled fusion feature from :meth:`modality_token` outputs (present modalities, in order)."""
        tokens = [self.null_token.expand(batch, -1, -1)] + [t for t, _ in parts]
        valid = [torch.ones(batch, 1, dtype=torch.bool, device=self.null_token.device)] + [v for _, v in parts]
        x, valid = torch.cat(tokens, 1), torch.cat(valid, 1)
        if parts and not torch.is_grad_enabled() and bool(valid.all()):
            # Inference where every token counts (the usual frame): no mask to apply and a plain
            # mean of the modality tokens - the same feature in fewer small ops at batch 1.
            for block in self.fusion:
                x = block(x)
            return self.fusion_norm(x)[:, 1:].mean(1)
        for block in self.fusion:
            x = block(x, key_mask=valid)
        x = self.fusion_norm(x)
        # Pool the modality tokens only: the null token is a placeholder for "no modality ran" and
        # stands in just then, instead of mixing a constant into every sample's feature.
        pool = valid.clone()
        pool[:, 0] = ~valid[:, 1:].any(1)
        w = pool.to(x.dtype)[..., None]
        return (x * w).sum(1) / w.sum(1)

    def full_keep(self, batch: int, device=None) -> Dict[str, torch.Tensor]:
        return {m: torch.ones(batch, self.depth, dtype=torch.bool, device=device) for m in self.modalities}
