"""Layer-allocation policies behind one interface, all held to the same strict budget.

``make_policy(spec, ...)`` returns an object with ``.name`` and
``.allocate(batch, budget, present) -> {modality: bool [B, depth]}`` (every configured modality is
a key; absent ones are all False).  Specs:

===============  ===========================================================================
``full``         every layer of every present modality; ignores the budget by definition (the
                 upper bound every other policy is compared with)
``naive``        ADMN's Naive Alloc: an even split of the budget over present modalities, each
                 modality's layers chosen by :func:`naive_layer_indices`
``every_other``  LayerDrop's pruning rule: the same even split, survivors evenly spaced,
                 ``rint(linspace(0, D - 1, k))``
``unimodal:<m>`` the whole budget to modality ``m`` (evenly spaced layers), nothing to the rest
``random``       random scores through the exact selector (seeded, reproducible); a layer's
                 score is its cost times U[1, 2), so no modality is favoured for being cheap
``heuristic``    budget split in proportion to the classical quality of each modality
                 (:func:`admn_ros.quality_estimators.estimators.modality_quality`), evenly spaced layers
``share:<w:..>`` a fixed prior: the budget split in the ratio of one weight per configured
                 modality (``share:1:1:1`` is ``every_other``; ``share:1:0`` gives the first
                 modality all but the others' layer 0), evenly spaced layers
``admn``         ``controller.scores(batch, budget, present) -> [B, M, D]`` through the selector
===============  ===========================================================================

Every policy except ``full`` ends in :func:`~admn_ros.quality_estimators.budget.select_layers`: the rule
based ones turn their choice into scores (+1 chosen, -1 not), which the exact selector reproduces
because the choice fits the budget; the selector is what guarantees the budget is never exceeded.
A budget in ``'flops'`` weighs each layer by ``cost_model.block_flops[m]``; without a cost model
every layer costs 1, so both units coincide.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from admn_ros.datasets.sample import MODALITIES, RawBatch, batch_size
from admn_ros.fusion.layerdrop import check_depth, check_layer_count, evenly_spaced_indices
from admn_ros.quality_estimators.budget import ROUND_OFF_RTOL, Budget, absolute_budget, select_layers, unit_costs
from admn_ros.quality_estimators.estimators import QualityConfig, modality_quality

POLICY_NAMES = ('full', 'naive', 'every_other', 'unimodal', 'random', 'heuristic', 'admn', 'share')
# The spec forms, for messages and parameter descriptions.
POLICY_SPECS = tuple({'unimodal': 'unimodal:<modality>', 'share': 'share:<w:w:...>'}.get(p, p)
                     for p in POLICY_NAMES)

# ADMN's published Naive Alloc sets for a 12-layer backbone: 3 -> {0,10,11}, 4 -> {0,8,10,11},
# 8 -> {0,1,2,4,6,8,10,11} follow the priority rule of naive_layer_indices; 6 does not (the rule
# gives {0,4,6,8,10,11}), so that one published set is kept verbatim.
_ADMN_NAIVE_OVERRIDES = {(12, 6): (0, 1, 3, 8, 10, 11)}

Allocation = Dict[str, np.ndarray]
Present = Union[Sequence[str], np.ndarray]


# ------------------------------------------------------------------------------ layer index rules

def naive_priority(depth: int) -> Tuple[int, ...]:
    """Order in which the naive rule adds layers: first, last two, every other downwards, the rest.

    For depth 12: 0, 11, 10, 8, 6, 4, 2, 1, 3, 5, 7, 9 (input- and output-side layers matter most).
    """
    check_depth(depth)
    order = [0, depth - 1, depth - 2] + list(range(depth - 4, 0, -2)) + list(range(1, depth))
    return tuple(dict.fromkeys(i for i in order if 0 <= i < depth))


def naive_layer_indices(count: int, depth: int) -> np.ndarray:
    """Sorted layer indices ADMN's Naive Alloc keeps when a modality gets ``count`` of ``depth`` layers.

    The first ``count`` entries of :func:`naive_priority`, except the published 6-of-12 set
    {0, 1, 3, 8, 10, 11}, which is used verbatim.
    """
    count = check_layer_count(count, depth)
    if (depth, count) in _ADMN_NAIVE_OVERRIDES:
        return np.array(_ADMN_NAIVE_OVERRIDES[(depth, count)])
    return np.sort(np.array(naive_priority(depth)[:count], dtype=np.int64))


# ------------------------------------------------------------------------------ budget splitting

def split_counts(budget_abs: np.ndarray, layer_cost: np.ndarray, weights: np.ndarray,
                 present: np.ndarray, depth: int) -> np.ndarray:
    """Layers per modality [B, M] when the budget is shared in proportion to ``weights`` [B, M].

    1. Layer 0 of every present modality first, when all of them fit (ADMN's rule); otherwise
       layer 0 goes to the heaviest-weighted modalities that fit, in turn.
    2. The rest of the budget is split in proportion to the weights (as cost, so with FLOPs a cheap
       modality gets more layers for the same share), capped at ``depth`` layers; what a capped
       modality cannot use flows to the others (water-filling).
    3. Whole layers are rounded down; the leftover buys single layers for the modalities with the
       largest rounding loss first (ties: configured order), while they fit.

    Equal weights give the even split of the naive baselines.  All-zero weights count as equal.
    """
    budget_abs = np.broadcast_to(np.asarray(budget_abs, dtype=np.float64), present.shape[:1])
    counts = np.zeros(present.shape, dtype=np.int64)
    for b in range(len(present)):
        counts[b] = _split_one(float(budget_abs[b]), layer_cost, weights[b], present[b], depth)
    return counts


def _split_one(budget: float, cost: np.ndarray, weight: np.ndarray, present: np.ndarray,
               depth: int) -> np.ndarray:
    limit = budget * (1.0 + ROUND_OFF_RTOL)
    weight = np.where(present, np.maximum(np.asarray(weight, dtype=np.float64), 0.0), 0.0)
    if present.any() and not (weight[present] > 0).any():
        weight = present.astype(np.float64)
    chosen = np.flatnonzero(present)
    if cost[chosen].sum() > limit:
        picked, spent = [], 0.0
        for m in sorted(chosen, key=lambda m: (-weight[m], m)):
            if spent + cost[m] <= limit:
                picked.append(m)
                spent += cost[m]
        chosen = np.array(sorted(picked), dtype=np.int64)
    counts = np.zeros(len(cost), dtype=np.int64)
    if chosen.size == 0:
        return counts
    counts[chosen] = 1
    rest = budget - cost[chosen].sum()
    share = _water_fill(max(rest, 0.0), weight[chosen], (depth - 1) * cost[chosen])
    ideal = share / cost[chosen]                          # extra layers, fractional
    # Round down, forgiving only float round-off (the same relative slack the selector allows).
    extra = np.minimum(np.floor(ideal * (1.0 + ROUND_OFF_RTOL)), depth - 1).astype(np.int64)
    counts[chosen] += extra
    while counts @ cost > limit:  # round-off pushed the sum over: take back the largest
        counts[chosen[np.argmax(counts[chosen] * (counts[chosen] > 1))]] -= 1
    fraction = ideal - extra
    order = [chosen[i] for i in sorted(range(len(chosen)), key=lambda i: (-fraction[i], chosen[i]))]
    added = True
    while added:  # cheap modalities may take several leftover layers once others are full
        added = False
        for m in order:
            if counts[m] < depth and counts @ cost + cost[m] <= limit:
                counts[m] += 1
                added = True
    return counts


def _water_fill(total: float, weight: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Split ``total`` in proportion to ``weight``, no entry above its ``cap``, overflow re-split."""
    alloc = np.zeros(len(weight))
    open_ = weight > 0
    if not open_.any():
        open_ = np.ones(len(weight), bool)
        weight = np.ones(len(weight))
    remaining = total
    while open_.any() and remaining > 0:
        share = remaining * weight * open_ / weight[open_].sum()
        full = open_ & (alloc + share >= cap)
        if not full.any():
            alloc += share
            break
        remaining -= (cap - alloc)[full].sum()
        alloc[full] = cap[full]
        open_ &= ~full
    return alloc


# ------------------------------------------------------------------------------------- policies

class Policy:
    """Base: turns a raw batch, a budget and the present modalities into per-modality keep-masks."""

    name = 'policy'

    def __init__(self, modalities: Sequence[str], depth: int, cost_model=None):
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f'modalities must be a non-empty list without repeats, got {modalities!r}')
        check_depth(depth)
        self.modalities = tuple(modalities)
        self.depth = int(depth)
        if cost_model is None:
            self.block_cost = np.ones(len(self.modalities))
        else:
            missing = [m for m in self.modalities if m not in cost_model.block_flops]
            if missing:
                raise ValueError(f'cost model has no block FLOPs for {missing}')
            self.block_cost = np.array([float(cost_model.block_flops[m]) for m in self.modalities])

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name={self.name!r}, modalities={self.modalities}, depth={self.depth})'

    def allocate(self, batch: RawBatch, budget: Budget, present: Present,
                 inputs: Optional[Dict[str, Any]] = None) -> Allocation:
        """Keep-masks ``{m: bool [B, depth]}`` for every configured modality.

        ``present`` names the modalities this batch carries (or is a bool mask [B, M] in
        configured order, for per-sample gaps); absent modalities get no layers. ``inputs`` are
        the model inputs of ``batch`` when the caller has them already (the shared preprocessing);
        a policy may reuse them instead of recomputing (``admn`` pools the audio log-mel).
        """
        if not isinstance(budget, Budget):
            raise ValueError(f'budget must be a Budget, got {type(budget).__name__}')
        n = batch_size(batch)
        mask = self._present_mask(present, n)
        cost = unit_costs(budget, self.block_cost)
        budget_abs = absolute_budget(budget, self.block_cost, self.depth, self.modalities)
        keep = self._keep(batch, budget, budget_abs, cost, mask, inputs)
        return {m: keep[:, i, :].copy() for i, m in enumerate(self.modalities)}

    def _keep(self, batch, budget, budget_abs, cost, mask, inputs=None) -> np.ndarray:
        scores = self._scores(batch, budget, budget_abs, cost, mask, inputs)
        return select_layers(scores, cost, budget_abs, mask)

    def _scores(self, batch, budget, budget_abs, cost, mask, inputs=None) -> np.ndarray:
        raise NotImplementedError

    def _present_mask(self, present: Present, n: int) -> np.ndarray:
        if isinstance(present, np.ndarray) and present.dtype == bool:
            if present.shape != (n, len(self.modalities)):
                raise ValueError(f'present mask must have shape {(n, len(self.modalities))}, '
                                 f'got {present.shape}')
            return present
        if isinstance(present, str):
            present = (present,)
        unknown = [m for m in present if m not in self.modalities]
        if unknown:
            raise ValueError(f'present modalities {unknown} are not configured {self.modalities}')
        row = np.array([m in present for m in self.modalities])
        return np.broadcast_to(row, (n, len(self.modalities))).copy()


class FullPolicy(Policy):
    """Every layer of every present modality: the unconstrained upper bound (ignores the budget)."""

    name = 'full'

    def _keep(self, batch, budget, budget_abs, cost, mask, inputs=None):
        return np.repeat(mask[:, :, None], self.depth, axis=2)


class _RulePolicy(Policy):
    """A fixed rule: layer counts from :func:`split_counts`, layer indices from ``_indices``."""

    def _weights(self, batch, mask) -> np.ndarray:
        return mask.astype(np.float64)

    def _indices(self, count: int) -> np.ndarray:
        raise NotImplementedError

    def _scores(self, batch, budget, budget_abs, cost, mask, inputs=None):
        counts = split_counts(budget_abs, cost, self._weights(batch, mask), mask, self.depth)
        patterns = np.zeros((self.depth + 1, self.depth), dtype=bool)
        for k in range(self.depth + 1):
            patterns[k, self._indices(k)] = True
        return np.where(patterns[counts], 1.0, -1.0)


class NaivePolicy(_RulePolicy):
    """ADMN's Naive Alloc: even split, layers by :func:`naive_layer_indices`."""

    name = 'naive'

    def _indices(self, count):
        return naive_layer_indices(count, self.depth)


class EveryOtherPolicy(_RulePolicy):
    """LayerDrop's Every Other: even split, evenly spaced survivors."""

    name = 'every_other'

    def _indices(self, count):
        return evenly_spaced_indices(count, self.depth)


class UnimodalPolicy(EveryOtherPolicy):
    """The whole budget to one modality (evenly spaced layers); others get nothing."""

    def __init__(self, modality: str, modalities, depth, cost_model=None):
        super().__init__(modalities, depth, cost_model)
        if modality not in self.modalities:
            raise ValueError(f'unimodal:{modality}: not one of the configured modalities {self.modalities}')
        self.modality = modality
        self.name = f'unimodal:{modality}'

    def _keep(self, batch, budget, budget_abs, cost, mask, inputs=None):
        only = np.zeros_like(mask)
        i = self.modalities.index(self.modality)
        only[:, i] = mask[:, i]
        return super()._keep(batch, budget, budget_abs, cost, only, inputs)


class HeuristicPolicy(EveryOtherPolicy):
    """Budget shared in proportion to classical quality scores; evenly spaced layers."""

    name = 'heuristic'

    def __init__(self, modalities, depth, cost_model=None, quality_config=None):
        super().__init__(modalities, depth, cost_model)
        self.quality_config = quality_config

    def _weights(self, batch, mask):
        needed = [m for i, m in enumerate(self.modalities) if mask[:, i].any()]
        missing = [m for m in needed if m not in batch]
        if missing:
            raise ValueError(f'heuristic policy needs the data of present modalities {missing}')
        quality = modality_quality({m: batch[m] for m in needed}, self.quality_config or QualityConfig())
        weights = np.zeros(mask.shape)
        for i, m in enumerate(self.modalities):
            if m in quality:
                weights[:, i] = quality[m]
        return weights * mask


def parse_share(arg: str) -> Tuple[float, ...]:
    """The weights of a ``share:<w:...>`` spec (a ratio such as ``2:1:1``; ',' would clash with
    comma-separated policy lists): finite, >= 0, not all zero."""
    try:
        weights = tuple(float(w) for w in arg.split(':'))
    except ValueError:
        raise ValueError(f'share weights must be numbers separated by ":", got {arg!r}') from None
    if not all(np.isfinite(w) and w >= 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f'share weights must be finite, >= 0 and not all 0, got {arg!r}')
    return weights


class SharePolicy(EveryOtherPolicy):
    """Budget shared in proportion to fixed per-modality weights; evenly spaced layers."""

    def __init__(self, weights: Sequence[float], modalities, depth, cost_model=None):
        super().__init__(modalities, depth, cost_model)
        if len(weights) != len(self.modalities):
            raise ValueError(f'share needs one weight per modality {self.modalities}, got {list(weights)}')
        self.weights = np.asarray(weights, dtype=np.float64)
        self.name = 'share:' + ':'.join(f'{w:g}' for w in weights)

    def _weights(self, batch, mask):
        return self.weights[None, :] * mask


def policy_spec_error(spec: str) -> str:
    """Why ``spec`` is not a policy spec ('' when it is one); what needs a model (a controller,
    the number of modalities) is checked when the policy is made."""
    name, _, arg = str(spec).partition(':')
    if name not in POLICY_NAMES or (name in ('unimodal', 'share')) != bool(arg):
        return f'policy must be one of {POLICY_SPECS}, got {spec!r}'
    if name == 'unimodal' and arg not in MODALITIES:
        return f'unimodal policy needs a modality in {MODALITIES}, got {arg!r}'
    if name == 'share':
        try:
            parse_share(arg)
        except ValueError as exc:
            return str(exc)
    return ''


class RandomPolicy(Policy):
    """Uniform random scores through the exact selector; one seeded stream per policy object."""

    name = 'random'

    def __init__(self, modalities, depth, cost_model=None, seed: int = 0):
        super().__init__(modalities, depth, cost_model)
        self.rng = np.random.default_rng(seed)

    def _scores(self, batch, budget, budget_abs, cost, mask, inputs=None):
        # Value per unit cost is uniform in [1, 2): positive, so the budget gets filled, and
        # proportional to cost, so cheap modalities are not favoured just for being cheap.
        return cost[None, :, None] * (1.0 + self.rng.random(mask.shape + (self.depth,)))


class AdmnPolicy(Policy):
    """The learned controller's per-layer scores through the exact selector.

    ``controller.scores(batch, budget, present, inputs=None)`` must return [B, M, D] scores in
    configured modality order (numpy or torch); ``inputs`` are the caller's model inputs, if any.
    The selector maximises their sum, so only positive scores are worth spending budget on (see
    :func:`~admn_ros.quality_estimators.budget.select_layers`).
    """

    name = 'admn'

    def __init__(self, modalities, depth, cost_model=None, controller=None):
        super().__init__(modalities, depth, cost_model)
        if controller is None or not callable(getattr(controller, 'scores', None)):
            raise ValueError("policy 'admn' needs a controller with a scores(batch, budget, present, inputs) method")
        self.controller = controller

    def _scores(self, batch, budget, budget_abs, cost, mask, inputs=None):
        present = tuple(m for i, m in enumerate(self.modalities) if mask[:, i].any())
        scores = self.controller.scores(batch, budget, present, inputs=inputs)
        if hasattr(scores, 'detach'):  # a torch tensor
            scores = scores.detach().cpu().numpy()
        scores = np.asarray(scores, dtype=np.float64)
        expected = mask.shape + (self.depth,)
        if scores.shape != expected:
            raise ValueError(f'controller scores have shape {scores.shape}, expected {expected}')
        return scores


def make_policy(spec: str, *, modalities: Sequence[str], depth: int, cost_model=None, seed: int = 0,
                controller=None, quality_config=None) -> Policy:
    """Build a policy from its spec string (see the module docstring for the list)."""
    if not isinstance(spec, str):
        raise ValueError(f'policy spec must be a string, got {spec!r}')
    name, _, arg = spec.partition(':')
    common = dict(modalities=modalities, depth=depth, cost_model=cost_model)
    if name == 'unimodal':
        if not arg:
            raise ValueError("policy 'unimodal' needs a modality, e.g. 'unimodal:rgb'")
        return UnimodalPolicy(arg, **common)
    if name == 'share':
        if not arg:
            raise ValueError("policy 'share' needs one weight per modality, e.g. 'share:2:1:1'")
        return SharePolicy(parse_share(arg), **common)
    if arg:
        raise ValueError(f'policy {name!r} takes no argument, got {spec!r}')
    if name == 'full':
        return FullPolicy(**common)
    if name == 'naive':
        return NaivePolicy(**common)
    if name == 'every_other':
        return EveryOtherPolicy(**common)
    if name == 'random':
        return RandomPolicy(**common, seed=seed)
    if name == 'heuristic':
        return HeuristicPolicy(**common, quality_config=quality_config)
    if name == 'admn':
        return AdmnPolicy(**common, controller=controller)
    raise ValueError(f'unknown policy {spec!r}; known: {POLICY_SPECS}')
