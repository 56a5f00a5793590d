"""``oracle_split``: the best fixed layer split for one condition, picked on the validation split.

A reference for evaluation by condition (``admn eval --conditions``): how well could a fixed
allocation do if it knew the condition in advance? For one condition and one budget,
:func:`choose_split` tries every per-modality layer-count split the budget allows, each realised
two ways, on validation samples under the same condition, and keeps the most accurate one; the
caller then scores that one choice on the test split, which the choice never sees.

Candidates:

* counts: each present modality gets 1 to ``depth`` layers and the total cost stays within the
  strict budget (``'flops'`` weighs a layer by the cost model's per-layer FLOPs); only splits that
  fill the budget are tried, i.e. no modality could take one more layer (as every other policy
  spends its budget);
* realisations: ``evenly_spaced`` (:func:`~admn_ros.fusion.layerdrop.evenly_spaced_indices`,
  LayerDrop's survivors) and ``naive`` (:func:`~admn_ros.quality_estimators.policies.naive_layer_indices`,
  the layer rule of the ``naive`` policy: first layer, last layers, then every other one);
  where both give the same layers the pair is tried once, as ``evenly_spaced``.

Ties on validation accuracy go to the lower validation loss, then to the first candidate.

Cost: the validation subset is preprocessed once per condition, and each modality's encoder runs
once per distinct set of layers (at most 2 x ``depth`` sets, shared by all candidates and budgets);
each candidate then costs only a fusion pass. With 3 modalities of 12 layers the budgets 0.25, 0.33,
0.5, 0.75 and 1.0 have 28, 55, 106, 55 and 1 splits (56, 110, 212, 110 and 1 candidates), so a
``single`` run (33 conditions) at those 5 budgets scores about 16,000 candidates; per condition
the encoders run 21 layer sets per modality (141 layers) over ``val_size`` samples (default 300),
the work of about 12 full-model passes, where a forward pass per candidate would take about 240.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from admn_ros.datasets.sample import RawBatch, take
from admn_ros.fusion.layerdrop import evenly_spaced_indices
from admn_ros.quality_estimators.budget import ROUND_OFF_RTOL, Budget, absolute_budget, unit_costs
from admn_ros.quality_estimators.policies import Policy, naive_layer_indices

POLICY_NAME = 'oracle_split'
REALISATIONS = {'evenly_spaced': evenly_spaced_indices, 'naive': naive_layer_indices}


@dataclass(frozen=True)
class OracleConfig:
    """How :func:`choose_split` searches: validation samples per condition and batch size."""

    val_size: int = 300
    batch_size: int = 256

    def __post_init__(self):
        for name in ('val_size', 'batch_size'):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f'oracle {name} must be a positive integer, got {value!r}')


@dataclass(frozen=True)
class Candidate:
    """Layers per present modality (``split``) and how they are placed (``realisation``)."""

    split: Tuple[Tuple[str, int], ...]
    realisation: str

    def masks(self, depth: int) -> Dict[str, np.ndarray]:
        """``{modality: bool [depth]}`` for the split's modalities."""
        out = {}
        for m, count in self.split:
            row = np.zeros(depth, bool)
            row[REALISATIONS[self.realisation](count, depth)] = True
            out[m] = row
        return out


@dataclass(frozen=True)
class SplitChoice:
    """What :func:`choose_split` picked, with its validation accuracy."""

    candidate: Candidate
    val_metric: float
    val_size: int
    tried: int


def candidate_splits(present: Sequence[str], modalities: Sequence[str], depth: int, budget: Budget,
                     layer_cost: Sequence[float]) -> List[Dict[str, int]]:
    """Every count split over ``present`` that fills the budget (see the module docstring).

    ``layer_cost`` holds one layer's FLOPs per configured modality (``modalities`` order); the
    budget is a fraction of the full model over all of them, as for every policy.
    """
    cost_all = unit_costs(budget, layer_cost)
    limit = absolute_budget(budget, layer_cost, depth, modalities) * (1.0 + ROUND_OFF_RTOL)
    cost = np.array([cost_all[list(modalities).index(m)] for m in present])
    splits = []
    for counts in itertools.product(range(1, depth + 1), repeat=len(present)):
        total = float(np.dot(counts, cost))
        if total > limit:
            continue
        if all(c == depth or total + cost[i] > limit for i, c in enumerate(counts)):
            splits.append(dict(zip(present, counts)))
    return splits


def candidates(present: Sequence[str], modalities: Sequence[str], depth: int, budget: Budget,
               layer_cost: Sequence[float]) -> List[Candidate]:
    """Every split in both realisations, without repeating a set of layers."""
    out, seen = [], set()
    for split in candidate_splits(present, modalities, depth, budget, layer_cost):
        for name in REALISATIONS:
            cand = Candidate(tuple(split.items()), name)
            key = tuple(np.flatnonzero(v).tobytes() for v in cand.masks(depth).values())
            if key not in seen:
                seen.add(key)
                out.append(cand)
    return out


class FixedSplitPolicy(Policy):
    """One candidate's layers for every sample, through the exact selector like the rule policies
    (scores +1 on its layers, -1 elsewhere), so the budget is enforced the same way."""

    name = POLICY_NAME

    def __init__(self, candidate: Candidate, modalities, depth, cost_model=None):
        super().__init__(modalities, depth, cost_model)
        self.candidate = candidate
        masks = candidate.masks(self.depth)
        self.pattern = np.stack([masks.get(m, np.zeros(self.depth, bool)) for m in self.modalities])

    def _scores(self, batch, budget, budget_abs, cost, mask, inputs=None):
        return np.where(self.pattern[None] & mask[:, :, None], 1.0, -1.0)


class OracleSearch:
    """The validation side of ``oracle_split`` for one condition: :meth:`choose` per budget.

    Validation samples are preprocessed once, and each modality's fusion token is computed once
    per set of layers (:meth:`admn_ros.fusion.model.ADMNModel.modality_token`) and reused by every
    candidate and budget that runs that set: a candidate then costs one small fusion pass.
    """

    def __init__(self, model, pre, val: RawBatch, *, config: OracleConfig = OracleConfig(), device=None):
        self.model, self.config = model, config
        self.device = device or next(model.parameters()).device
        self.present = [m for m in model.modalities if m in val]
        self.size = len(val['label'])
        if self.size == 0:
            raise ValueError('oracle_split: no validation samples under this condition')
        self._batches = []
        with torch.inference_mode():
            for start in range(0, self.size, config.batch_size):
                raw = take(val, slice(start, start + config.batch_size))
                inputs = {m: x.to(self.device) for m, x in pre(raw).items() if m in self.present}
                self._batches.append((inputs, torch.as_tensor(raw['label'], device=self.device)))
        self._tokens: Dict[Tuple[int, str, bytes], Tuple[torch.Tensor, torch.Tensor]] = {}

    def _token(self, b: int, modality: str, row: np.ndarray):
        key = (b, modality, row.tobytes())
        if key not in self._tokens:
            inputs, labels = self._batches[b]
            mask = torch.as_tensor(row, device=self.device).expand(len(labels), -1)
            self._tokens[key] = self.model.modality_token(modality, inputs[modality], mask)
        return self._tokens[key]

    @torch.inference_mode()
    def score(self, candidate: Candidate) -> Tuple[int, float]:
        """(correct, summed loss) of one candidate on the validation samples."""
        masks = candidate.masks(self.model.depth)
        correct, loss = 0, 0.0
        for b, (_, labels) in enumerate(self._batches):
            parts = [self._token(b, m, masks[m]) for m in self.present]
            out = self.model.head(self.model.fuse(parts, len(labels))).float()
            correct += int((out.argmax(-1) == labels).sum())
            loss += float(self.model.head.loss(out, labels)) * len(labels)
        return correct, loss

    def choose(self, budget: Budget, cost_model) -> SplitChoice:
        """The most accurate candidate for ``budget`` (ties: lower loss, then the first)."""
        model = self.model
        found = candidates(self.present, model.modalities, model.depth, budget,
                           cost_model.layer_costs(model.modalities))
        if not found:
            raise ValueError(f'budget {budget.fraction:g} ({budget.unit}) cannot give each of '
                             f'{", ".join(self.present)} one layer; oracle_split needs that')
        best, best_score = None, None
        for cand in found:
            correct, loss = self.score(cand)
            if best_score is None or (correct, -loss) > best_score:
                best, best_score = cand, (correct, -loss)
        return SplitChoice(candidate=best, val_metric=best_score[0] / self.size, val_size=self.size,
                           tried=len(found))


def choose_split(model, pre, val: RawBatch, budget: Budget, cost_model, *,
                 config: OracleConfig = OracleConfig(), device=None) -> SplitChoice:
    """The candidate with the best accuracy on ``val`` (validation samples under one condition)."""
    return OracleSearch(model, pre, val, config=config, device=device).choose(budget, cost_model)


__all__ = ['POLICY_NAME', 'REALISATIONS', 'OracleConfig', 'Candidate', 'SplitChoice',
           'candidate_splits', 'candidates', 'FixedSplitPolicy', 'OracleSearch', 'choose_split']
