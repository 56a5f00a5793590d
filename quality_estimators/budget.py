"""Strict compute budgets and the exact layer selector that honours them.

A :class:`Budget` is a fraction of the FULL model's encoder cost over every configured modality,
counted either in layers (each layer costs 1) or in FLOPs (a layer of modality ``m`` costs
``layer_cost[m]``).  Measuring it against the full configured model means that when a modality is
missing from the input, its share is spent on the modalities that are present.

:func:`select_layers` turns per-layer scores into a keep-mask that maximises the summed score of the
kept layers without ever exceeding the budget.  Because every layer of one modality costs the same,
the problem reduces to choosing a layer *count* per modality; the count ``k`` of modality ``m`` is
always realised as layer 0 plus the ``k - 1`` best-scoring other layers, so the search over counts is
exact (enumeration for up to :data:`ENUMERATE_MAX_MODALITIES` modalities, a Pareto dynamic program
above that).
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence, Tuple, Union

import numpy as np

UNITS = ('layers', 'flops')

#: The budget fractions accepted everywhere: :class:`Budget`, the fusion node's ``budget``
#: parameter and topic, budget_manager's schedules and load range. Below 1% of the model no
#: allocation keeps even one layer of each modality, so smaller values are refused, not clipped.
BUDGET_RANGE = (0.01, 1.0)


def budget_problem(fraction) -> str:
    """Why ``fraction`` is not an acceptable budget (one line), or '' when it is."""
    lo, hi = BUDGET_RANGE
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        return f'budget fraction must be a number, got {fraction!r}'
    if not np.isfinite(value) or not lo <= value <= hi:
        return f'budget fraction must lie in [{lo:g}, {hi:g}] (of the full model), got {fraction!r}'
    return ''

#: Relative slack allowed on the budget, only to absorb float round-off (e.g. a fraction times a
#: FLOPs total versus the same total summed in another order).  It is far smaller than any layer cost.
ROUND_OFF_RTOL = 1e-9

#: Up to this many modalities every combination of per-modality counts is enumerated ((D+1)^M).
ENUMERATE_MAX_MODALITIES = 4


@dataclass(frozen=True)
class Budget:
    """A compute budget: ``fraction`` of the full model's encoder cost, counted in ``unit``."""

    fraction: float
    unit: str = 'layers'

    def __post_init__(self):
        problem = budget_problem(self.fraction)
        if problem:
            raise ValueError(problem)
        if self.unit not in UNITS:
            raise ValueError(f'budget unit must be one of {UNITS}, got {self.unit!r}')
        object.__setattr__(self, 'fraction', float(self.fraction))


def unit_costs(budget: Budget, layer_cost: Sequence[float]) -> np.ndarray:
    """Per-layer cost of each modality in the budget's unit (all ones when counting layers)."""
    cost = _check_costs(layer_cost)
    return np.ones_like(cost) if budget.unit == 'layers' else cost


def absolute_budget(budget: Budget, layer_cost: Sequence[float], depth: int,
                    configured_modalities: Sequence[str]) -> float:
    """The budget in absolute units: ``fraction`` x the full encoder cost of all configured modalities.

    ``layer_cost[i]`` is the FLOPs of one layer of ``configured_modalities[i]``; it is ignored when the
    unit is ``'layers'``.
    """
    if not isinstance(budget, Budget):
        raise ValueError(f'expected a Budget, got {type(budget).__name__}')
    if int(depth) != depth or depth < 1:
        raise ValueError(f'depth must be a positive integer, got {depth!r}')
    cost = unit_costs(budget, layer_cost)
    if len(cost) != len(configured_modalities):
        raise ValueError(f'{len(cost)} layer costs for {len(configured_modalities)} configured modalities')
    return float(budget.fraction * int(depth) * cost.sum())


def spent_fraction(keep: Mapping[str, np.ndarray], unit: str, depth: int,
                   configured_modalities: Sequence[str], cost_model=None) -> float:
    """What an allocation ``keep`` (``{m: bool [depth]}``) costs as a fraction of the full model
    of ``configured_modalities``, in ``unit``: the quantity a :class:`Budget`'s fraction bounds.

    ``cost_model`` (a :class:`admn_ros.fusion.flops.CostModel`) prices the blocks for ``'flops'``.
    """
    if unit not in UNITS:
        raise ValueError(f'budget unit must be one of {UNITS}, got {unit!r}')
    if unit == 'layers':
        layers = sum(int(np.sum(k)) for k in keep.values())
        return layers / (int(depth) * len(configured_modalities))
    if cost_model is None:
        raise ValueError("a FLOPs budget's spent fraction needs the cost model")
    used = float(cost_model.encoder_flops({m: np.asarray(k) for m, k in keep.items()})[0])
    return used / cost_model.full_encoder_flops(configured_modalities)


def select_layers(scores: np.ndarray, layer_cost: Sequence[float],
                  budget_abs: Union[float, np.ndarray], present: np.ndarray) -> np.ndarray:
    """Exact, strict budgeted selection of layers.

    Args:
        scores: float ``[B, M, D]`` utility of running layer ``d`` of modality ``m`` for sample ``b``.
        layer_cost: ``[M]`` positive cost of one layer of each modality (same unit as the budget).
        budget_abs: scalar or ``[B]`` absolute budget (see :func:`absolute_budget`).
        present: bool ``[B, M]``; absent modalities get no layer.

    Returns:
        bool ``[B, M, D]`` keep-mask that maximises the summed score of kept layers subject to
        ``cost <= budget * (1 + ROUND_OFF_RTOL)``, where a modality that keeps anything keeps layer 0
        (its ``k`` layers are layer 0 and its ``k - 1`` best others).

    Rules:
        * When the budget affords layer 0 of every present modality, each present modality keeps at
          least layer 0 (ADMN's always-on first layer), whatever its scores.
        * When it cannot, no modality is guaranteed anything: the result is the best-scoring selection
          that fits, which may leave some present modalities (or all, if nothing fits) without layers.
          The budget is never exceeded.
        * Scores are utilities: a layer with a negative score is only kept when forced (layer 0
          above), so negative scores can leave budget unspent.  To fill the budget the way a top-K
          does, pass non-negative scores (a softmax or exp of logits keeps their ranking).
        * Ties: equal summed score -> higher cost (spend the budget: zero-score layers, e.g. an
          underflowed exp, still run when they fit), then the lexicographically smallest counts in
          modality order; within a modality equal scores favour the lower layer index.
    """
    scores, cost, budget, present = _check_selection_inputs(scores, layer_cost, budget_abs, present)
    n_batch, n_mod, depth = scores.shape
    if n_batch == 0:
        return np.zeros(scores.shape, dtype=bool)
    order, value = _count_values(scores, present)
    limit = budget * (1.0 + ROUND_OFF_RTOL)
    # ADMN's rule applies per sample, only where every present layer 0 fits.
    need_first = present & ((present * cost).sum(1) <= limit)[:, None]
    if n_mod <= ENUMERATE_MAX_MODALITIES:
        counts = _best_counts_enumerated(value, cost, limit, need_first)
    else:
        counts = np.stack([_best_counts_pareto(value[b], cost, limit[b], need_first[b])
                           for b in range(n_batch)])
    # Keep the first k entries of each modality's preference order (layer 0, then best others).
    rank = np.argsort(order, axis=-1)  # inverse permutation: position of each layer in the order
    return rank < counts[:, :, None]


def selection_cost(keep: np.ndarray, layer_cost: Sequence[float]) -> np.ndarray:
    """Cost ``[B]`` of a keep-mask ``[B, M, D]`` under per-layer costs ``[M]``."""
    keep = np.asarray(keep, dtype=bool)
    return (keep.sum(-1) * _check_costs(layer_cost)[None, :]).sum(-1)


# --------------------------------------------------------------------------------------- internals

def _check_costs(layer_cost) -> np.ndarray:
    cost = np.asarray(layer_cost, dtype=np.float64)
    if cost.ndim != 1 or cost.size == 0:
        raise ValueError(f'layer_cost must be a non-empty 1-D sequence, got shape {cost.shape}')
    if not np.all(np.isfinite(cost)) or np.any(cost <= 0):
        raise ValueError(f'layer costs must be finite and positive, got {cost.tolist()}')
    return cost


def _check_selection_inputs(scores, layer_cost, budget_abs, present):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 3 or scores.shape[2] < 1:
        raise ValueError(f'scores must have shape [B, M, D] with D >= 1, got {scores.shape}')
    if not np.all(np.isfinite(scores)):
        raise ValueError('scores contain NaN or infinite values')
    n_batch, n_mod, _ = scores.shape
    cost = _check_costs(layer_cost)
    if cost.shape != (n_mod,):
        raise ValueError(f'layer_cost has {cost.size} entries but scores have {n_mod} modalities')
    budget = np.asarray(budget_abs, dtype=np.float64)
    if budget.ndim == 0:
        budget = np.full(n_batch, float(budget))
    if budget.shape != (n_batch,):
        raise ValueError(f'budget must be a scalar or shape [{n_batch}], got {budget.shape}')
    if not np.all(np.isfinite(budget)) or np.any(budget < 0):
        raise ValueError(f'budget must be finite and >= 0, got {budget.tolist()}')
    present = np.asarray(present)
    if present.dtype != bool:
        raise ValueError(f'present must be a boolean array, got dtype {present.dtype}')
    if present.shape != (n_batch, n_mod):
        raise ValueError(f'present must have shape {(n_batch, n_mod)}, got {present.shape}')
    return scores, cost, budget, present


def _count_values(scores: np.ndarray, present: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Preference order of layers [B, M, D] and the best score of each count k = 0..D [B, M, D+1].

    Layer 0 comes first; the rest follow by descending score (stable, so ties keep index order).
    Counts above 0 are impossible (-inf) for absent modalities.
    """
    n_batch, n_mod, depth = scores.shape
    rest = np.argsort(-scores[:, :, 1:], axis=-1, kind='stable') + 1
    order = np.concatenate([np.zeros((n_batch, n_mod, 1), dtype=rest.dtype), rest], axis=-1)
    ranked = np.take_along_axis(scores, order, axis=-1)
    value = np.concatenate([np.zeros((n_batch, n_mod, 1)), np.cumsum(ranked, axis=-1)], axis=-1)
    value[:, :, 1:][~present] = -np.inf
    return order, value


def _best_counts_enumerated(value, cost, limit, need_first) -> np.ndarray:
    """Try every count vector at once; pick max value, then max cost, then the first in order."""
    n_batch, n_mod, n_counts = value.shape
    value = value.copy()
    value[:, :, 0][need_first] = -np.inf  # count 0 is forbidden where layer 0 is guaranteed
    combos = _count_combinations(n_counts, n_mod)                                     # [C, M]
    combo_cost = np.zeros(len(combos))                                                 # [C]
    for m in range(n_mod):  # summed in modality order, exactly as the dynamic programme does
        combo_cost = combo_cost + combos[:, m] * cost[m]
    fits = combo_cost <= limit.max()  # drop combinations no sample can afford before the big gather
    combos, combo_cost = combos[fits], combo_cost[fits]
    total = np.zeros((n_batch, len(combos)))
    for m in range(n_mod):
        total += value[:, m, combos[:, m]]
    total[combo_cost[None, :] > limit[:, None]] = -np.inf
    # Always finite: the all-zero counts fit when nothing is guaranteed, and a guarantee is only
    # given when layer 0 of every present modality fits.
    best = total.max(axis=1, keepdims=True)
    tied_cost = np.where(total == best, combo_cost[None, :], -np.inf)
    return combos[np.argmax(tied_cost, axis=1)]


@functools.lru_cache(maxsize=32)
def _count_combinations(n_counts: int, n_mod: int) -> np.ndarray:
    """All count vectors in lexicographic order (first modality slowest), read-only."""
    combos = np.array(list(itertools.product(range(n_counts), repeat=n_mod)), dtype=np.int64)
    combos.setflags(write=False)
    return combos


def _best_counts_pareto(value, cost, limit, need_first) -> np.ndarray:
    """Exact DP over modalities for one sample, pruning states that can never win.

    States (cost, value, counts) are visited by increasing cost.  A state is dropped when a cheaper
    or equal one has a strictly higher value (its extensions always lose), or when an earlier state
    has the same cost and value (same extensions, and that one comes first in count order).  Equal
    value at a higher cost is kept, because the tie-break prefers spending the budget.
    """
    n_mod, n_counts = value.shape
    states = [(0.0, 0.0, ())]
    for m in range(n_mod):
        grown = []
        for c0, v0, counts in states:
            for k in range(1 if need_first[m] else 0, n_counts):
                c, v = c0 + k * cost[m], v0 + value[m, k]
                if c <= limit and np.isfinite(v):
                    grown.append((c, v, counts + (k,)))
        grown.sort(key=lambda s: (s[0], -s[1], s[2]))
        states, best_v = [], -np.inf
        for state in grown:
            if state[1] > best_v or (state[1] == best_v and state[0] > states[-1][0]):
                states.append(state)
                best_v = state[1]
    best = max(states, key=lambda s: (s[1], s[0], tuple(-k for k in s[2])))
    return np.array(best[2], dtype=np.int64)
