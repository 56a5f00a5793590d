"""Masked-autoencoder pretraining of one adaptive-depth encoder (MAE, He et al. 2022).

    image / log-mel -> patch tokens + position embedding -> keep a random 25 %
                    -> CLS + visible tokens -> the encoder's kept blocks -> final norm
                    -> decoder: linear to decoder width, mask tokens where patches were hidden,
                       decoder position embedding, a few blocks, linear to the patch's pixels
    loss: mean squared error on the hidden patches, each patch's target standardised (its own
          mean and variance), so flat background teaches nothing and strokes and formants do

The encoder is the model's own :class:`~admn_ros.fusion.encoder.AdaptiveDepthEncoder`: its patch
embedding, CLS token, position embedding, blocks and final norm are trained in place, so the
result drops into an :class:`~admn_ros.fusion.model.ADMNModel` unchanged. ``keep`` (one bool row
``[depth]``, shared by the batch) skips blocks as LayerDrop does in stage 1: pretraining under
random subsets of blocks keeps every subset usable, as ADMN pretrains its backbones. The decoder
is thrown away after pretraining.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from admn_ros.fusion.blocks import Block
from admn_ros.fusion.encoder import AdaptiveDepthEncoder
from admn_ros.fusion.validate import Range, at_least


@dataclass
class DecoderConfig:
    """The MAE decoder and mask: narrow and shallow, as in MAE (it only has to fill in pixels)."""

    dim: int = 64
    depth: int = 2
    heads: int = 4
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True

    LIMITS: ClassVar[dict] = {'dim': at_least(1), 'depth': at_least(1), 'heads': at_least(1),
                              'mask_ratio': Range(0.0, 1.0, lo_open=True, hi_open=True)}


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, N, patch * patch * C]`` in the patch embedding's token order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def random_masking(batch: int, tokens: int, ratio: float, generator: Optional[torch.Generator] = None,
                   device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per sample, which tokens stay visible: (indices ``[B, n_keep]``, mask ``[B, N]`` with 1 =
    hidden). At least one token stays and at least one is hidden."""
    keep = min(tokens - 1, max(1, int(round(tokens * (1.0 - ratio)))))
    noise = torch.rand(batch, tokens, generator=generator).to(device)
    ids_keep = noise.argsort(1)[:, :keep]
    mask = torch.ones(batch, tokens, device=device)
    mask.scatter_(1, ids_keep, 0.0)
    return ids_keep, mask


class MaskedAutoencoder(nn.Module):
    """An encoder (shared with the model, not copied) and a small decoder that reconstructs the
    hidden patches from the visible ones."""

    def __init__(self, encoder: AdaptiveDepthEncoder, cfg: DecoderConfig = DecoderConfig()):
        super().__init__()
        ecfg = encoder.cfg
        if ecfg.position_embed_dim or ecfg.position_head:
            raise ValueError('MAE pretraining runs blocks in their natural order: an encoder with '
                             'LayerShuffle position modules is fine-tuned, not pretrained')
        if cfg.dim % cfg.heads:
            raise ValueError(f'decoder dim {cfg.dim} must be divisible by its heads {cfg.heads}')
        self.encoder = encoder
        self.cfg = cfg
        self.patch = ecfg.patch_size if ecfg.stem == 'patch' else ecfg.patch_size * 4
        grid = (ecfg.input_size[0] // self.patch) * (ecfg.input_size[1] // self.patch)
        if grid != ecfg.num_patches:
            raise ValueError(f'patch grid {grid} does not match the encoder\'s {ecfg.num_patches} tokens')
        self.embed = nn.Linear(ecfg.dim, cfg.dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, ecfg.num_tokens, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.pred = nn.Linear(cfg.dim, self.patch * self.patch * ecfg.in_chans)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def encode_visible(self, x: torch.Tensor, ids_keep: torch.Tensor,
                       keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """CLS + visible tokens through the kept blocks and the final norm: ``[B, 1 + n_keep, dim]``.
        The same steps as the encoder's forward, on a subset of the tokens."""
        enc = self.encoder
        tokens = enc.patch_embed(x) + enc.pos_embed[:, 1:]
        tokens = tokens.gather(1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(len(x), -1, -1)
        tokens = torch.cat([cls, tokens], 1)
        for b, block in enumerate(enc.blocks):
            if keep is None or bool(keep[b]):
                tokens = block(tokens)
        return enc.norm(tokens)

    def decode(self, latent: torch.Tensor, ids_keep: torch.Tensor, tokens: int) -> torch.Tensor:
        """Predicted pixels of every patch ``[B, N, patch * patch * C]``."""
        x = self.embed(latent)
        b, d = len(x), x.shape[-1]
        full = self.mask_token.expand(b, tokens, d).clone()
        full.scatter_(1, ids_keep[..., None].expand(-1, -1, d), x[:, 1:])
        x = torch.cat([x[:, :1], full], 1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]

    def forward(self, x: torch.Tensor, keep: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, predicted patches, mask) for a batch ``x`` ``[B, C, H, W]``; ``keep``: the
        encoder's kept blocks (bool ``[depth]``, None = all)."""
        target = patchify(x, self.patch)
        ids_keep, mask = random_masking(len(x), target.shape[1], self.cfg.mask_ratio, generator, x.device)
        pred = self.decode(self.encode_visible(x, ids_keep, keep), ids_keep, target.shape[1])
        return self.loss(target, pred, mask), pred, mask

    def loss(self, target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.cfg.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = F.mse_loss(pred.float(), target.float(), reduction='none').mean(-1)
        return (per_patch * mask).sum() / mask.sum()
