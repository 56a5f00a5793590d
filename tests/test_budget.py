"""Strict budgeted layer selection: feasibility, optimality against brute force, ADMN's layer-0 rule."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from admn_ros.quality_estimators import budget as budget_mod
from admn_ros.quality_estimators.budget import (ROUND_OFF_RTOL, Budget, absolute_budget, select_layers,
                                       selection_cost, unit_costs)

SETTINGS = settings(max_examples=120, deadline=None, database=None)


@st.composite
def instances(draw, max_mod=3, max_depth=4, max_batch=3, decimals=None):
    """Random scores, per-modality costs, per-sample budgets and presence.

    ``decimals`` rounds the scores, so that sums equal in exact arithmetic are equal in floats and
    sums that differ stay different (no 1e-200 absorbed into 1.0); exact tie-breaks are then testable.
    """
    b = draw(st.integers(1, max_batch))
    m = draw(st.integers(1, max_mod))
    d = draw(st.integers(1, max_depth))
    scores = draw(hnp.arrays(np.float64, (b, m, d), elements=st.floats(-5, 5, allow_nan=False)))
    if decimals is not None:
        scores = np.round(scores, decimals)
    cost = draw(hnp.arrays(np.float64, (m,), elements=st.floats(0.1, 5.0)))
    present = draw(hnp.arrays(bool, (b, m)))
    fraction = draw(hnp.arrays(np.float64, (b,), elements=st.floats(0.0, 1.2)))
    budget = fraction * d * cost.sum()
    return scores, cost, budget, present


def brute_force_best(scores, cost, budget, present):
    """Best value for one sample over every valid subset: per modality, nothing or layer 0 + any others."""
    m, d = scores.shape
    limit = budget * (1 + ROUND_OFF_RTOL)
    options = []
    for i in range(m):
        subsets = [()]
        if present[i]:
            subsets += [(0,) + rest for k in range(d) for rest in itertools.combinations(range(1, d), k)]
        options.append(subsets)
    need_first = present & (cost[present].sum() <= limit)
    best = -np.inf
    for combo in itertools.product(*options):
        if any(need_first[i] and not combo[i] for i in range(m)):
            continue
        if sum(len(s) * cost[i] for i, s in enumerate(combo)) > limit:
            continue
        best = max(best, sum(scores[i, list(s)].sum() for i, s in enumerate(combo)))
    return best


def check_rules(keep, scores, cost, budget, present):
    limit = budget * (1 + ROUND_OFF_RTOL)
    assert keep.shape == scores.shape and keep.dtype == bool
    assert np.all(selection_cost(keep, cost) <= limit)                    # strict budget
    assert not keep[~present].any()                                        # absent: nothing
    has_any = keep.any(-1)
    assert np.all(keep[..., 0] == has_any)                                 # layer 0 first
    affordable = (present * cost).sum(1) <= limit
    assert np.all(has_any[affordable] == present[affordable])             # ADMN: layer 0 for all


@SETTINGS
@given(instances())
def test_selection_is_feasible_and_optimal(inst):
    scores, cost, budget, present = inst
    keep = select_layers(scores, cost, budget, present)
    check_rules(keep, scores, cost, budget, present)
    for b in range(len(scores)):
        expected = brute_force_best(scores[b], cost, budget[b], present[b])
        assert scores[b][keep[b]].sum() == pytest.approx(expected, abs=1e-9)


@settings(max_examples=40, deadline=None, database=None)
@given(instances(max_mod=5, max_depth=2, max_batch=2))
def test_dynamic_programme_for_many_modalities_is_optimal(inst):
    scores, cost, budget, present = inst
    keep = select_layers(scores, cost, budget, present)
    check_rules(keep, scores, cost, budget, present)
    for b in range(len(scores)):
        expected = brute_force_best(scores[b], cost, budget[b], present[b])
        assert scores[b][keep[b]].sum() == pytest.approx(expected, abs=1e-9)


@settings(max_examples=60, deadline=None, database=None)
@given(instances(max_mod=3, max_depth=5, max_batch=4, decimals=2))
def test_dynamic_programme_matches_enumeration_exactly(inst):
    scores, cost, budget, present = inst
    enumerated = select_layers(scores, cost, budget, present)
    saved = budget_mod.ENUMERATE_MAX_MODALITIES
    budget_mod.ENUMERATE_MAX_MODALITIES = 0
    try:
        programmed = select_layers(scores, cost, budget, present)
    finally:
        budget_mod.ENUMERATE_MAX_MODALITIES = saved
    np.testing.assert_array_equal(enumerated, programmed)


def test_equal_layer_costs_reduce_to_top_k_with_layer_zero_first():
    rng = np.random.default_rng(0)
    scores = rng.random((5, 2, 12)) + 0.1            # positive: every layer is worth running
    for total in (2, 6, 8, 12, 16):
        keep = select_layers(scores, np.ones(2), float(total), np.ones((5, 2), bool))
        assert np.all(keep.sum((1, 2)) == total)
        rest = scores[:, :, 1:].reshape(5, -1)
        chosen = keep[:, :, 1:].reshape(5, -1)
        for row, picked in zip(rest, chosen):  # no better non-first layer is left out
            if picked.any() and (~picked).any():
                assert row[picked].min() >= row[~picked].max()
        assert np.all(keep[:, :, 0])


def test_unaffordable_first_layers_give_best_subset_within_budget():
    scores = np.array([[[5.0, 5.0], [1.0, 1.0]]])
    cost = np.array([4.0, 1.0])
    keep = select_layers(scores, cost, 3.0, np.ones((1, 2), bool))
    # Modality 0 does not fit at all; modality 1 takes what fits.
    np.testing.assert_array_equal(keep[0], [[False, False], [True, True]])
    # Nothing fits: nothing is selected, the budget still holds.
    assert not select_layers(scores, cost, 0.5, np.ones((1, 2), bool)).any()


def test_first_layer_is_kept_even_when_its_score_is_bad():
    scores = np.full((1, 2, 4), -1.0)
    keep = select_layers(scores, np.ones(2), 5.0, np.ones((1, 2), bool))
    # The budget affords both first layers, so both run; no other negative layer is added.
    np.testing.assert_array_equal(keep[0].sum(-1), [1, 1])
    assert keep[0, :, 0].all()


def test_ties_spend_the_budget_then_prefer_lower_indices():
    # Zero scores (e.g. an exp of logits that underflowed) still fill the budget.
    keep = select_layers(np.zeros((1, 1, 6)), np.ones(1), 4.0, np.ones((1, 1), bool))
    np.testing.assert_array_equal(keep[0, 0], [True, True, True, True, False, False])
    keep = select_layers(np.ones((1, 1, 6)), np.ones(1), 3.0, np.ones((1, 1), bool))
    np.testing.assert_array_equal(keep[0, 0], [True, True, True, False, False, False])
    # Between modalities at equal value and cost: the lexicographically smallest counts, (1, 2).
    keep = select_layers(np.zeros((1, 2, 4)), np.ones(2), 3.0, np.ones((1, 2), bool))
    np.testing.assert_array_equal(keep[0].sum(-1), [1, 2])
    # Negative scores are never added voluntarily.
    keep = select_layers(np.full((1, 1, 6), -0.5), np.ones(1), 4.0, np.ones((1, 1), bool))
    assert keep[0, 0].sum() == 1


def test_scalar_budget_equals_per_sample_budget():
    rng = np.random.default_rng(1)
    scores, present = rng.normal(size=(4, 3, 5)), rng.random((4, 3)) < 0.7
    cost = np.array([1.0, 2.5, 0.5])
    np.testing.assert_array_equal(select_layers(scores, cost, 6.0, present),
                                  select_layers(scores, cost, np.full(4, 6.0), present))


def test_full_budget_fits_every_layer_despite_float_round_off():
    # 12 * sum(cost) falls a few ulps below the cost of all 36 layers summed the other way round.
    cost = np.array([9.973, 9.809, 6.856])
    budget = absolute_budget(Budget(1.0, 'flops'), cost, 12, ('a', 'b', 'c'))
    assert np.full(3, 12) @ cost > budget
    keep = select_layers(np.ones((1, 3, 12)), cost, budget, np.ones((1, 3), bool))
    assert keep.all()


def test_absolute_budget_is_a_share_of_all_configured_modalities():
    cost = np.array([3.0, 1.0])
    assert absolute_budget(Budget(0.25), cost, 12, ('rgb', 'audio')) == pytest.approx(6.0)
    assert absolute_budget(Budget(0.25, 'flops'), cost, 12, ('rgb', 'audio')) == pytest.approx(12.0)
    np.testing.assert_array_equal(unit_costs(Budget(0.5), cost), [1.0, 1.0])
    np.testing.assert_array_equal(unit_costs(Budget(0.5, 'flops'), cost), cost)
    # A missing modality's share goes to the present one: with only modality 1 present it may use
    # the whole absolute budget.
    keep = select_layers(np.ones((1, 2, 12)), np.ones(2), 6.0, np.array([[False, True]]))
    assert keep[0, 1].sum() == 6 and not keep[0, 0].any()
    with pytest.raises(ValueError, match='layer costs'):
        absolute_budget(Budget(0.5), cost, 12, ('rgb',))


@pytest.mark.parametrize('fraction, unit', [(0.0, 'layers'), (1.5, 'layers'), (float('nan'), 'layers'),
                                            (-0.1, 'flops'), (0.5, 'seconds'), ('half', 'layers')])
def test_invalid_budgets_are_rejected(fraction, unit):
    with pytest.raises(ValueError):
        Budget(fraction, unit)


@pytest.mark.parametrize('change', ['nan', 'shape', 'cost', 'negative', 'present_dtype', 'present_shape'])
def test_invalid_selection_inputs_are_rejected(change):
    scores, cost, budget, present = np.zeros((2, 2, 3)), np.ones(2), 2.0, np.ones((2, 2), bool)
    if change == 'nan':
        scores[0, 0, 0] = np.nan
    elif change == 'shape':
        scores = np.zeros((2, 6))
    elif change == 'cost':
        cost = np.array([1.0, 0.0])
    elif change == 'negative':
        budget = -1.0
    elif change == 'present_dtype':
        present = np.ones((2, 2))
    else:
        present = np.ones((2, 3), bool)
    with pytest.raises(ValueError):
        select_layers(scores, cost, budget, present)


def test_one_budget_range_for_every_consumer():
    """Budget, the fusion node (parameter range and topic) and budget_manager all take
    BUDGET_RANGE; a value outside it is refused in one line naming the range."""
    lo, hi = budget_mod.BUDGET_RANGE
    assert (lo, hi) == (0.01, 1.0)
    for ok in (lo, 0.5, hi):
        assert budget_mod.budget_problem(ok) == '' and Budget(ok).fraction == ok
    for bad in (0.005, 0.0, -1.0, 1.0001, float('nan'), float('inf'), 'half', None):
        problem = budget_mod.budget_problem(bad)
        assert problem and '\n' not in problem
        with pytest.raises(ValueError, match=r'budget fraction must'):
            Budget(bad)
    assert '[0.01, 1]' in budget_mod.budget_problem(0.005)


def test_spent_fraction_is_what_the_budget_bounds():
    from admn_ros.fusion.config import ModelConfig
    from admn_ros.fusion.flops import CostModel
    from tests.fixtures_models import tiny_model_config
    cost = CostModel.from_config(ModelConfig.from_dict(tiny_model_config()))
    mods, depth = cost.modalities, cost.depth
    keep = {m: np.arange(depth) < (i + 1) for i, m in enumerate(mods)}   # 1, 2, 3 ... layers
    layers = sum(i + 1 for i in range(len(mods)))
    assert budget_mod.spent_fraction(keep, 'layers', depth, mods) == layers / (depth * len(mods))
    flops = budget_mod.spent_fraction(keep, 'flops', depth, mods, cost)
    limit = absolute_budget(Budget(flops, 'flops'), cost.layer_costs(mods), depth, mods)
    assert sum(keep[m].sum() * cost.block_flops[m] for m in mods) == pytest.approx(limit)
    with pytest.raises(ValueError, match='cost model'):
        budget_mod.spent_fraction(keep, 'flops', depth, mods)
