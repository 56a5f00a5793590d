"""The learned, budget-conditioned layer-allocation controller (ADMN stage 2).

    cheap views of each modality -> tiny CNN per modality -> tokens (+ modality embedding)
    [CLS, budget token, modality tokens] -> small transformer -> CLS
    CLS -> allocation head: one logit per layer per modality
    CLS -> corruption head: per-modality severity (regression) and corruption type (classification)

Beyond ADMN the budget (fraction and unit) is an *input*, so one set of weights serves every budget,
and the discrete choice is the exact strict knapsack of :func:`admn_ros.quality_estimators.budget.select_layers`
(layer costs may differ per modality). Training makes it differentiable with a straight-through
estimator around one of two relaxations (``relaxation``):

* ``gumbel_st`` (ADMN): logits + 0.1·Gumbel noise; forward = hard K-hot; backward = one softmax.
* ``subset_st`` (Xie & Ermon's relaxed subset sampling): K successive softmaxes whose sum is a
  relaxed K-hot vector, so the gradient sees *all* K choices, not a one-hot surrogate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from admn_ros.fusion.blocks import Block
from admn_ros.fusion.flops import block_flops
from admn_ros.datasets.corruptions import ctype_index
from admn_ros.fusion.validate import ConfigError, Each, Range, at_least, build, one_of, positive
from admn_ros.quality_estimators.budget import select_layers

UNITS = ('layers', 'flops')


@dataclass
class ControllerConfig:
    modalities: Tuple[str, ...] = ('rgb', 'depth', 'audio')
    in_chans: Dict[str, int] = field(default_factory=lambda: {'rgb': 3, 'depth': 1, 'audio': 1})
    view_size: int = 32
    depth: int = 12                 # backbone layers per modality (one logit each)
    embed_dim: int = 64
    transformer_depth: int = 2
    heads: int = 4
    num_types: Dict[str, int] = field(default_factory=lambda: {'rgb': 7, 'depth': 5, 'audio': 7})
    gumbel_scale: float = 0.1
    tau: float = 1.0
    relaxation: str = 'subset_st'   # 'gumbel_st' (ADMN) or 'subset_st'
    # Corruption types (per modality) after which that sensor keeps only its always-on first layer
    # when the corruption head reads them at ``starve_severity`` or above: each sensor is judged
    # on its own, so two destroyed at once both lose their layers. Only types after which deeper
    # reading does not pay on the model (measured; docs/results.md); none by default.
    starve: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    starve_severity: float = 0.6

    def to_dict(self) -> dict:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        out['starve'] = {m: list(t) for m, t in self.starve.items()}
        return out

    LIMITS: ClassVar[dict] = {'modalities': Each(min_len=1), 'view_size': at_least(8),
                              'starve_severity': Range(0.0, 1.0),
                              'depth': at_least(1), 'embed_dim': at_least(1),
                              'transformer_depth': at_least(0), 'heads': at_least(1),
                              'gumbel_scale': at_least(0), 'tau': positive(),
                              'relaxation': one_of('gumbel_st', 'subset_st')}

    def check(self) -> None:
        for m, types in self.starve.items():
            for t in types:
                ctype_index(m, t)   # raises on an unknown modality or type
        if self.view_size % 8:
            raise ConfigError('view_size', self.view_size, 'a multiple of 8')
        if self.embed_dim % self.heads:
            raise ConfigError('heads', self.heads, f'a divisor of embed_dim {self.embed_dim}')

    @classmethod
    def from_dict(cls, data: dict) -> 'ControllerConfig':
        return build(cls, data)


class ViewEncoder(nn.Sequential):
    """Tiny CNN: [B, C, S, S] -> [B, E]. Three stride-2 convs keep it a fraction of a MFLOP."""

    def __init__(self, in_chans: int, size: int, dim: int):
        feat = size // 8
        super().__init__(
            nn.Conv2d(in_chans, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(16 * feat * feat, dim))


class AllocationController(nn.Module):
    def __init__(self, cfg: ControllerConfig):
        super().__init__()
        self.cfg = cfg
        e = cfg.embed_dim
        self.view_encoders = nn.ModuleDict({m: ViewEncoder(cfg.in_chans[m], cfg.view_size, e)
                                            for m in cfg.modalities})
        self.modality_embed = nn.Parameter(torch.zeros(len(cfg.modalities), e))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.budget_embed = nn.Sequential(nn.Linear(1 + len(UNITS), e), nn.GELU(), nn.Linear(e, e))
        self.blocks = nn.ModuleList(Block(e, cfg.heads) for _ in range(cfg.transformer_depth))
        self.norm = nn.LayerNorm(e)
        m, d = len(cfg.modalities), cfg.depth
        self.allocation_head = nn.Sequential(nn.Linear(e, 128, bias=False), nn.ReLU(),
                                             nn.Linear(128, m * d, bias=False))
        self.severity_head = nn.Sequential(nn.Linear(e, 128), nn.ReLU(), nn.Linear(128, m))
        self.type_heads = nn.ModuleDict({k: nn.Linear(e, n) for k, n in cfg.num_types.items()
                                         if k in cfg.modalities})
        nn.init.trunc_normal_(self.modality_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for layer in self.allocation_head:
            if isinstance(layer, nn.Linear):  # near-zero logits at start, as in ADMN
                nn.init.uniform_(layer.weight, -0.005, 0.005)

    def encode(self, views: Dict[str, torch.Tensor], budget: torch.Tensor, unit: str) -> torch.Tensor:
        """CLS feature ``[B, E]``; ``budget`` is the fraction ``[B]``, absent modalities are masked."""
        present = [m for m in self.cfg.modalities if m in views]
        if not present:
            raise ValueError('controller needs at least one modality view')
        b = len(views[present[0]])
        dev = self.cls_token.device
        unit_hot = F.one_hot(torch.tensor(UNITS.index(unit), device=dev), len(UNITS)).float().expand(b, -1)
        tokens = [self.cls_token.expand(b, -1, -1),
                  self.budget_embed(torch.cat([budget.float().to(dev)[:, None], unit_hot], 1))[:, None]]
        valid = [torch.ones(b, 2, dtype=torch.bool, device=dev)]
        for i, m in enumerate(self.cfg.modalities):
            if m in views:
                tokens.append((self.view_encoders[m](views[m]) + self.modality_embed[i])[:, None])
                valid.append(torch.ones(b, 1, dtype=torch.bool, device=dev))
        x, key_mask = torch.cat(tokens, 1), torch.cat(valid, 1)
        for block in self.blocks:
            x = block(x, key_mask=key_mask)
        return self.norm(x[:, 0])

    def allocate_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Allocation logits ``[B, M, D]`` from the CLS feature ``z [B, E]``."""
        return self.allocation_head(z).view(len(z), len(self.cfg.modalities), self.cfg.depth)

    def starved(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, M]`` bool: which modalities the corruption heads read as a ``starve`` type at
        ``starve_severity`` or above (from the CLS feature ``z``)."""
        out = torch.zeros(len(z), len(self.cfg.modalities), dtype=torch.bool, device=z.device)
        if not self.cfg.starve:
            return out
        severe = torch.sigmoid(self.severity_head(z)) >= self.cfg.starve_severity
        for i, m in enumerate(self.cfg.modalities):
            types = self.cfg.starve.get(m, ())
            if types and m in self.type_heads:
                codes = torch.tensor([ctype_index(m, t) for t in types], device=z.device)
                out[:, i] = severe[:, i] & torch.isin(self.type_heads[m](z).argmax(-1), codes)
        return out

    def forward(self, views, budget, unit: str = 'layers'):
        """Return ``(logits [B, M, D], severity [B, M] in [0, 1], {m: type logits [B, n_types]})``."""
        z = self.encode(views, budget, unit)
        return (self.allocate_logits(z), torch.sigmoid(self.severity_head(z)),
                {m: h(z) for m, h in self.type_heads.items()})


def hard_selection(logits: torch.Tensor, layer_cost: Sequence[float], budget_abs, present: torch.Tensor
                   ) -> torch.Tensor:
    """Exact strict selection as a 0/1 float tensor ``[B, M, D]`` (no gradient)."""
    # exp keeps the logits' ranking and makes every score positive, so the selector fills the budget.
    scores = torch.exp(logits.detach().float() - logits.detach().float().amax((1, 2), keepdim=True))
    keep = select_layers(scores.cpu().numpy(), layer_cost, budget_abs, present.cpu().numpy())
    return torch.as_tensor(keep, dtype=logits.dtype, device=logits.device)


def relaxed_k_hot(y: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """Relaxed subset sampling: the sum of ``k`` successive softmaxes over ``y [B, N]``, ``k [B]``."""
    khot = torch.zeros_like(y)
    onehot_approx = torch.zeros_like(y)
    alpha = y
    for j in range(int(k.max().item()) if k.numel() else 0):
        # Discourage already chosen entries: alpha += log(1 - p).
        alpha = alpha + torch.log1p(-onehot_approx.clamp(max=1 - 1e-6))
        onehot_approx = F.softmax(alpha / tau, dim=-1)
        khot = khot + onehot_approx * (j < k).to(y.dtype)[:, None]
    return khot


def straight_through_mask(logits: torch.Tensor, layer_cost, budget_abs, present: torch.Tensor,
                          cfg: ControllerConfig, training: bool) -> torch.Tensor:
    """A ``[B, M, D]`` mask: exactly the strict hard selection in the forward pass; in training the
    gradient of the chosen relaxation flows to ``logits`` (straight-through)."""
    b, m, d = logits.shape
    present = present.to(logits.device)
    if training:
        gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp(1e-9, 1 - 1e-9)))
        y = logits + cfg.gumbel_scale * gumbel
    else:
        y = logits
    hard = hard_selection(y, layer_cost, budget_abs, present)
    if not training:
        return hard
    # Layer 0 is forced by the selector, not chosen: leave it out of the relaxation.
    free = present[:, :, None].expand(b, m, d).clone()
    free[:, :, 0] = False
    # A sample with nothing to choose (depth 1, or no modality present) would give a softmax over
    # only -inf, i.e. NaN, which `soft - soft.detach()` would carry into the forward value. Give such
    # rows finite zeros instead; `* free` below removes them from value and gradient alike.
    has_free = free.flatten(1).any(1)[:, None, None]
    y_free = y.masked_fill(~free, float('-inf')).masked_fill(~has_free, 0.0).view(b, m * d)
    if cfg.relaxation == 'gumbel_st':
        soft = F.softmax(y_free / cfg.tau, dim=-1)
    elif cfg.relaxation == 'subset_st':
        k = (hard * free).view(b, -1).sum(1).long()
        soft = relaxed_k_hot(y_free, k, cfg.tau)
    else:
        raise ValueError(f'unknown relaxation {cfg.relaxation!r}')
    soft = soft.view(b, m, d) * free
    return hard + (soft - soft.detach())  # exactly `hard` in value; the gradient of `soft`


def controller_cost_flops(cfg: ControllerConfig) -> float:
    """Analytic FLOPs of one controller forward pass (all modalities present), as in fusion.flops."""
    s, e = cfg.view_size, cfg.embed_dim
    total = 0.0
    for m in cfg.modalities:
        c, size = cfg.in_chans[m], s
        for cin, cout in ((c, 8), (8, 16), (16, 16)):
            size = (size + 1) // 2
            total += 2.0 * size * size * cout * cin * 9
        total += 2.0 * 16 * (s // 8) ** 2 * e
    n_tokens = 2 + len(cfg.modalities)
    total += cfg.transformer_depth * block_flops(n_tokens, e)
    total += 2.0 * (e * 128 + 128 * len(cfg.modalities) * cfg.depth)   # allocation head
    total += 2.0 * (e * 128 + 128 * len(cfg.modalities)) + sum(2.0 * e * n for n in cfg.num_types.values())
    total += 2.0 * ((1 + len(UNITS)) * e + e * e)                          # budget embedding
    return total


# Score factor for a starved modality's layers beyond its first.
STARVED = 1e-6


class ControllerScorer:
    """Adapts a trained controller to the policy interface: raw batch -> per-layer scores [B, M, D]."""

    def __init__(self, controller: AllocationController, preprocessor, modalities: Sequence[str],
                 device: Optional[torch.device] = None, blocks=None):
        self.controller = controller.eval()
        self.pre = preprocessor
        self.modalities = tuple(modalities)
        self.device = device or next(controller.parameters()).device
        # A pruned model (admn_ros.fusion.prune) keeps some of the layers the controller scores:
        # ``blocks[m]`` lists them, and only their scores are passed on.
        self.blocks = None if blocks is None else np.array([list(blocks[m]) for m in self.modalities])

    @torch.inference_mode()
    def scores(self, batch, budget, present, inputs=None) -> np.ndarray:
        """``inputs``: the batch's model inputs, if the caller has them (the audio log-mel is then
        pooled, not recomputed)."""
        mel = (inputs or {}).get('audio')
        views = {m: v.to(self.device) for m, v in self.pre.controller_views(batch, log_mel=mel).items()
                 if m in present}
        n = len(next(iter(views.values())))
        fraction = torch.full((n,), float(budget.fraction), device=self.device)
        z = self.controller.encode(views, fraction, budget.unit)
        logits = self.controller.allocate_logits(z)
        # Positive, rank-preserving scores for the knapsack; controller order -> policy order.
        probs = torch.exp(logits - logits.amax((1, 2), keepdim=True))
        # A starved modality's layers beyond the first score below any other: the selector spends
        # the budget there only when every other modality is full.
        probs[..., 1:] *= torch.where(self.controller.starved(z), STARVED, 1.0)[..., None]
        probs = probs.cpu().numpy()
        order = [self.controller.cfg.modalities.index(m) for m in self.modalities]
        probs = probs[:, order]
        if self.blocks is not None:
            probs = np.take_along_axis(probs, self.blocks[None], axis=2)
        return probs
