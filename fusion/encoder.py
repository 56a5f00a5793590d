"""Adaptive-depth ViT encoder: any subset of its blocks can run, chosen per sample, in any order.

``forward(x, keep, mode=..., order=...)`` takes the execution path from ``mode``, never from the
mask's dtype, so a mask that became float by accident is refused instead of silently running
every block:

* ``keep=None``: every block runs.
* ``mode='skip'`` (default), ``keep`` **bool** ``[B, depth]``: dropped blocks are *not executed*.
  With mixed per-sample masks each block runs once on the sub-batch of samples that keep it, so
  batches save compute too.
* ``mode='blend'``, ``keep`` **float** ``[B, depth]`` (values in [0, 1], typically a
  straight-through K-hot mask): every block runs and ``x <- x + m * (block(x) - x)``, which is
  differentiable in ``m`` so the stage-2 controller can learn through it. With a 0/1 mask this
  equals the skipping path.

``order`` (LayerShuffle) is a permutation of the blocks shared by the batch: position ``k`` runs
block ``order[k]`` (natural order when None). ``keep`` always names blocks, not positions. With
``position_embed_dim`` each block first mixes a learned embedding of its position into the tokens
(concatenate, LayerNorm, linear, GELU, added residually); with ``position_head`` each block
predicts its position from its mean-pooled output in training, and :attr:`position_loss` holds
the cross-entropy of the last forward (the LayerShuffle auxiliary loss).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from admn_ros.fusion.blocks import Block
from admn_ros.fusion.config import EncoderConfig

MODES = ('skip', 'blend')


class PatchEmbed(nn.Module):
    """Image -> patch tokens ``[B, N, D]``; optionally behind a small convolutional stem."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.stem not in ('patch', 'conv'):
            raise ValueError(f"stem must be 'patch' or 'conv', got {cfg.stem!r}")
        chans, patch = cfg.in_chans, cfg.patch_size
        layers = []
        if cfg.stem == 'conv':
            if patch % 4:
                raise ValueError(f'the conv stem needs patch_size divisible by 4, got {patch}')
            for width in cfg.stem_widths:
                layers += [nn.Conv2d(chans, width, 3, stride=2, padding=1), nn.GELU()]
                chans = width
            patch //= 4
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(chans, cfg.dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)  # [B, N, D]


class PositionProjection(nn.Module):
    """``x + GELU(Linear(LN([x ; e])))`` for a position embedding ``e``: tells a block where it runs.

    The linear layer starts at zero, so adding the projection to a trained encoder leaves its
    function unchanged until fine-tuning moves it (the embedding, zero-initialised as well, only
    receives gradient once the layer is non-zero).
    """

    def __init__(self, dim: int, pos_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim + pos_dim)
        self.fc = nn.Linear(dim + pos_dim, dim)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        e = e.expand(*x.shape[:-1], -1)
        return x + F.gelu(self.fc(self.norm(torch.cat([x, e], -1))))


class PositionHead(nn.Sequential):
    """Mean-pooled block output -> logits over the positions the block may have run at."""

    def __init__(self, dim: int, depth: int):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, depth))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return super().forward(tokens.mean(1))


class AdaptiveDepthEncoder(nn.Module):
    """Patch embedding, CLS token, learned position embedding, ``depth`` pre-norm blocks, final norm."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.mlp_kind(i))
                                    for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        # Unit-scale position embeddings: at ViT's usual 0.02 they are drowned by the patch tokens and a
        # from-scratch encoder takes many epochs to find *where* things are (measured: a left/right
        # depth comparison stayed at chance for 4 epochs at 0.02 and reached 81% at 1.0).
        nn.init.normal_(self.pos_embed, std=1.0)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.depth_embed = self.position_proj = self.position_heads = None
        if cfg.position_embed_dim:
            self.depth_embed = nn.Parameter(torch.zeros(cfg.depth, cfg.position_embed_dim))
            self.position_proj = nn.ModuleList(PositionProjection(cfg.dim, cfg.position_embed_dim)
                                               for _ in range(cfg.depth))
        if cfg.position_head:
            self.position_heads = nn.ModuleList(PositionHead(cfg.dim, cfg.depth) for _ in range(cfg.depth))
        self.position_loss: Optional[torch.Tensor] = None

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor, keep: Optional[torch.Tensor] = None, *, mode: str = 'skip',
                order: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Return the CLS feature ``[B, dim]`` (module docstring for ``keep``, ``mode``, ``order``)."""
        expected = (self.cfg.in_chans, *self.cfg.input_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f'encoder expects [B, {", ".join(map(str, expected))}], got {list(x.shape)}')
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        schedule = self._schedule(order)
        self._position_terms: List[torch.Tensor] = []
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.pos_embed
        if keep is None:
            for slot, b in schedule:
                tokens = self._step(tokens, slot, b)
        else:
            if tuple(keep.shape) != (len(x), self.depth):
                raise ValueError(f'keep must be [{len(x)}, {self.depth}], got {list(keep.shape)}')
            if mode == 'skip' and keep.dtype != torch.bool:
                raise ValueError(f"mode='skip' needs a bool keep-mask, got {keep.dtype}; pass "
                                 "mode='blend' to weight blocks by a float mask")
            if mode == 'blend' and not keep.is_floating_point():
                raise ValueError(f"mode='blend' needs a float keep-mask, got {keep.dtype}")
            tokens = (self._skip if mode == 'skip' else self._blend)(tokens, keep, schedule)
        terms = self._position_terms
        self.position_loss = sum(t.sum() for t in terms) / sum(len(t) for t in terms) if terms else None
        return self.norm(tokens)[:, 0]

    def _schedule(self, order) -> List[Tuple[int, int]]:
        """(position, block) pairs in execution order."""
        if order is None:
            return [(i, i) for i in range(self.depth)]
        blocks = [int(b) for b in (order.tolist() if torch.is_tensor(order) else order)]
        if sorted(blocks) != list(range(self.depth)):
            raise ValueError(f'order must be a permutation of range({self.depth}), got {blocks}')
        return list(enumerate(blocks))

    def _step(self, tokens: torch.Tensor, slot: int, b: int) -> torch.Tensor:
        """Block ``b`` run at position ``slot`` (with its position projection and head, if any)."""
        if self.position_proj is not None:
            tokens = self.position_proj[b](tokens, self.depth_embed[slot])
        tokens = self.blocks[b](tokens)
        if self.position_heads is not None and self.training:
            logits = self.position_heads[b](tokens).float()
            target = torch.full((len(tokens),), slot, dtype=torch.long, device=tokens.device)
            # Summed per row: forward divides by every row that ran a block, so sub-batches weigh alike.
            self._position_terms.append(F.cross_entropy(logits, target, reduction='none'))
        return tokens

    def _skip(self, tokens: torch.Tensor, keep: torch.Tensor, schedule) -> torch.Tensor:
        if bool((keep == keep[0]).all()):  # batch 1 or a shared mask: plain control flow
            kept = set(keep[0].nonzero().flatten().tolist())
            for slot, b in schedule:
                if b in kept:
                    tokens = self._step(tokens, slot, b)
            return tokens
        # Mixed masks: each block runs once, on just the rows that keep it. Every sample still sees its
        # kept blocks in order, and the batch stays batched however many distinct masks it holds.
        # Inference writes rows back in place (``tokens`` is forward's own fresh tensor).
        in_place = not torch.is_grad_enabled()
        for slot, b in schedule:
            rows = keep[:, b].nonzero().flatten()
            if len(rows) == len(tokens):
                tokens = self._step(tokens, slot, b)
            elif len(rows) and in_place:
                tokens[rows] = self._step(tokens[rows], slot, b)
            elif len(rows):
                tokens = tokens.index_copy(0, rows, self._step(tokens.index_select(0, rows), slot, b))
        return tokens

    def _blend(self, tokens: torch.Tensor, keep: torch.Tensor, schedule) -> torch.Tensor:
        keep = keep.to(tokens.dtype)
        for slot, b in schedule:
            m = keep[:, b, None, None]
            tokens = tokens + m * (self._step(tokens, slot, b) - tokens)
        return tokens
