"""Allocation policies: one interface, the same strict budget, and each rule's own choice of layers."""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from admn_ros.datasets.corruptions import apply_corruption
from admn_ros.datasets.synthetic import generate
from admn_ros.quality_estimators.budget import ROUND_OFF_RTOL, Budget, absolute_budget, select_layers
from admn_ros.fusion.layerdrop import evenly_spaced_indices
from admn_ros.quality_estimators.policies import make_policy, naive_layer_indices, naive_priority, split_counts

MODS = ('rgb', 'depth', 'audio')
DEPTH = 12
COSTS = SimpleNamespace(block_flops={'rgb': 3.0, 'depth': 1.5, 'audio': 1.0})
RULE_SPECS = ('naive', 'every_other', 'unimodal:rgb', 'unimodal:audio', 'random', 'heuristic',
              'share:3:0:1')


@pytest.fixture(scope='module')
def batch():
    return generate(6, seed=3)


def stacked(alloc):
    return np.stack([alloc[m] for m in MODS], axis=1)


def unit_cost(unit):
    return np.ones(3) if unit == 'layers' else np.array([COSTS.block_flops[m] for m in MODS])


# ------------------------------------------------------------------------------- index rules

ADMN_SETS = {3: [0, 10, 11], 4: [0, 8, 10, 11], 6: [0, 1, 3, 8, 10, 11], 8: [0, 1, 2, 4, 6, 8, 10, 11]}


@pytest.mark.parametrize('total', [6, 8, 12, 16])
def test_naive_reproduces_admn_index_sets(total):
    policy = make_policy('naive', modalities=('rgb', 'depth'), depth=12)
    alloc = policy.allocate({'label': np.zeros(2, np.int64)}, Budget(total / 24), ('rgb', 'depth'))
    for m in ('rgb', 'depth'):
        for row in alloc[m]:
            assert np.flatnonzero(row).tolist() == ADMN_SETS[total // 2]


def test_naive_rule_is_nested_priority_for_any_depth():
    for depth in (1, 2, 3, 5, 12, 16):
        order = naive_priority(depth)
        assert sorted(order) == list(range(depth)) and order[0] == 0
        for k in range(depth + 1):
            idx = naive_layer_indices(k, depth)
            assert len(idx) == k == len(set(idx.tolist()))
            if (depth, k) != (12, 6):
                assert set(idx.tolist()) == set(order[:k])


def test_every_other_is_rounded_linspace():
    for depth in (1, 4, 12, 16):
        for k in range(depth + 1):
            idx = evenly_spaced_indices(k, depth)
            assert len(set(idx.tolist())) == k
            if k:
                np.testing.assert_array_equal(idx, np.rint(np.linspace(0, depth - 1, k)))
    # fairseq's Every Other at p = 0.5 on 16 layers keeps 0, 2, ..., 14; ours spreads to the last.
    assert evenly_spaced_indices(2, 12).tolist() == [0, 11]
    with pytest.raises(ValueError):
        evenly_spaced_indices(13, 12)


# ------------------------------------------------------------------------------ budget splits

def test_split_counts_even_split_and_leftover():
    counts = split_counts(np.array([7.0, 24.0, 2.0]), np.ones(2), np.ones((3, 2)), np.ones((3, 2), bool), 12)
    # 7 layers: 3 + 3, the odd one to the first modality; 24: everything; 2: one each.
    np.testing.assert_array_equal(counts, [[4, 3], [12, 12], [1, 1]])


def test_split_counts_water_fills_past_a_full_modality():
    counts = split_counts(np.array([20.0]), np.ones(2), np.array([[1.0, 1e-3]]), np.ones((1, 2), bool), 12)
    np.testing.assert_array_equal(counts, [[12, 8]])
    # Budget shares are cost: at equal weight a modality three times cheaper gets about 3x layers.
    counts = split_counts(np.array([16.0]), np.array([3.0, 1.0]), np.ones((1, 2)), np.ones((1, 2), bool), 12)
    assert counts[0, 1] > 2 * counts[0, 0] and counts[0] @ [3.0, 1.0] <= 16.0


# ------------------------------------------------------------------------- budget compliance

@settings(max_examples=25, deadline=None, database=None)
@given(fraction=st.floats(0.01, 1.0), unit=st.sampled_from(['layers', 'flops']),
       present=st.lists(st.sampled_from(MODS), min_size=1, max_size=3, unique=True))
def test_every_policy_respects_the_strict_budget(batch, fraction, unit, present):
    budget = Budget(fraction, unit)
    cost = unit_cost(unit)
    limit = absolute_budget(budget, [COSTS.block_flops[m] for m in MODS], DEPTH, MODS) * (1 + ROUND_OFF_RTOL)
    present = tuple(m for m in MODS if m in present)
    for spec in RULE_SPECS:
        policy = make_policy(spec, modalities=MODS, depth=DEPTH, cost_model=COSTS, seed=1)
        alloc = policy.allocate(batch, budget, present)
        assert set(alloc) == set(MODS)
        keep = stacked(alloc)
        assert keep.shape == (6, 3, DEPTH) and keep.dtype == bool
        assert np.all((keep.sum(-1) * cost).sum(-1) <= limit), spec
        for i, m in enumerate(MODS):
            if m not in present:
                assert not keep[:, i].any(), spec
        assert np.all(keep[..., 0] == keep.any(-1)), spec
        # Nothing affordable is left on the table by the rule-based splits.
        if spec in ('naive', 'every_other', 'share:3:0:1'):
            left = limit - (keep.sum(-1) * cost).sum(-1)
            open_cost = [min([cost[i] for i, m in enumerate(MODS) if m in present and not keep[b, i].all()],
                             default=np.inf) for b in range(6)]
            assert np.all(left < np.array(open_cost)), spec


@pytest.mark.parametrize('spec, rule', [('naive', naive_layer_indices), ('every_other', evenly_spaced_indices)])
def test_selector_reproduces_each_rule_exactly(batch, spec, rule):
    policy = make_policy(spec, modalities=MODS, depth=DEPTH, cost_model=COSTS)
    cost = unit_cost('flops')
    present = np.ones((6, 3), bool)
    for fraction in np.linspace(0.02, 1.0, 15):
        budget = Budget(float(fraction), 'flops')
        keep = stacked(policy.allocate(batch, budget, MODS))
        counts = split_counts(absolute_budget(budget, cost, DEPTH, MODS), cost, present.astype(float),
                              present, DEPTH)
        expected = np.zeros_like(keep)
        for b, i in np.ndindex(6, 3):
            expected[b, i, rule(counts[b, i], DEPTH)] = True
        np.testing.assert_array_equal(keep, expected)


def test_full_runs_everything_present_regardless_of_budget(batch):
    alloc = make_policy('full', modalities=MODS, depth=DEPTH).allocate(batch, Budget(0.1), ('rgb', 'audio'))
    assert alloc['rgb'].all() and alloc['audio'].all() and not alloc['depth'].any()


def test_unimodal_spends_the_whole_budget_on_one_modality(batch):
    policy = make_policy('unimodal:depth', modalities=MODS, depth=DEPTH, cost_model=COSTS)
    budget = Budget(0.25, 'flops')
    total = absolute_budget(budget, [3.0, 1.5, 1.0], DEPTH, MODS)
    alloc = policy.allocate(batch, budget, MODS)
    assert not alloc['rgb'].any() and not alloc['audio'].any()
    assert np.all(alloc['depth'].sum(1) == min(DEPTH, int(total // 1.5)))
    assert policy.name == 'unimodal:depth'


def test_random_is_seeded_and_varies_between_samples(batch):
    def run(seed):
        return stacked(make_policy('random', modalities=MODS, depth=DEPTH, seed=seed)
                       .allocate(batch, Budget(0.4), MODS))
    a, b, c = run(5), run(5), run(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({row.tobytes() for row in a}) > 1
    assert np.all(a.sum((1, 2)) == int(0.4 * 36))


def test_heuristic_moves_layers_away_from_a_corrupted_modality(batch):
    policy = make_policy('heuristic', modalities=MODS, depth=DEPTH)
    clean = stacked(policy.allocate(batch, Budget(0.4), MODS)).sum(-1)
    noisy_batch = apply_corruption(batch, 'rgb', 'gaussian_noise', 1.0, np.random.default_rng(0))
    noisy = stacked(policy.allocate(noisy_batch, Budget(0.4), MODS)).sum(-1)
    assert np.all(noisy[:, 0] <= clean[:, 0]) and noisy[:, 0].sum() < clean[:, 0].sum()
    assert np.all(noisy[:, 0] >= 1)                    # layer 0 stays on (ADMN's rule)
    assert np.all(noisy.sum(1) == clean.sum(1))        # the freed layers go to the others


def test_admn_delegates_scores_to_the_controller(batch):
    rng = np.random.default_rng(2)
    scores = rng.random((6, 3, DEPTH)) + 0.5
    seen = {}

    class Controller:
        def scores(self, raw, budget, present, inputs=None):
            seen['present'] = present
            return scores

    policy = make_policy('admn', modalities=MODS, depth=DEPTH, cost_model=COSTS, controller=Controller())
    budget = Budget(0.3, 'flops')
    keep = stacked(policy.allocate(batch, budget, ('rgb', 'audio')))
    present = np.tile([True, False, True], (6, 1))
    expected = select_layers(scores, [3.0, 1.5, 1.0], absolute_budget(budget, [3.0, 1.5, 1.0], DEPTH, MODS),
                             present)
    np.testing.assert_array_equal(keep, expected)
    assert seen['present'] == ('rgb', 'audio')


def test_admn_accepts_torch_scores_and_checks_their_shape(batch):
    torch = pytest.importorskip('torch')
    scores = torch.rand(6, 3, DEPTH)
    ok = make_policy('admn', modalities=MODS, depth=DEPTH,
                     controller=SimpleNamespace(scores=lambda *a, **k: scores))
    keep = stacked(ok.allocate(batch, Budget(0.5), MODS))
    assert keep.sum((1, 2)).tolist() == [18] * 6
    bad = make_policy('admn', modalities=MODS, depth=DEPTH,
                      controller=SimpleNamespace(scores=lambda *a, **k: np.zeros((6, 2, DEPTH))))
    with pytest.raises(ValueError, match='shape'):
        bad.allocate(batch, Budget(0.5), MODS)


def test_per_sample_presence_mask(batch):
    present = np.array([[True, True, True], [True, False, False]] * 3)
    keep = stacked(make_policy('naive', modalities=MODS, depth=DEPTH).allocate(batch, Budget(0.25), present))
    assert not keep[1::2, 1:].any()
    assert np.all(keep[1::2, 0].sum(-1) == 9) and np.all(keep[0::2].sum(-1) == 3)


@pytest.mark.parametrize('spec, kwargs, match', [
    ('bogus', {}, 'unknown policy'),
    ('unimodal', {}, 'needs a modality'),
    ('unimodal:lidar', {}, 'not one of'),
    ('naive:rgb', {}, 'takes no argument'),
    ('admn', {}, 'controller'),
    ('share', {}, 'one weight per modality'),
    ('share:1:1', {}, 'one weight per modality'),
    ('share:1:x:1', {}, 'numbers separated'),
    ('share:0:0:0', {}, 'not all 0'),
    ('share:1:-1:1', {}, '>= 0'),
])
def test_bad_specs_are_rejected(spec, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_policy(spec, modalities=MODS, depth=DEPTH, **kwargs)


def test_policy_spec_errors_name_the_problem_before_a_model_exists():
    from admn_ros.quality_estimators.policies import POLICY_SPECS, policy_spec_error
    for spec in ('full', 'naive', 'admn', 'unimodal:depth', 'share:2:1:1', 'share:1:0'):
        assert policy_spec_error(spec) == '', spec
    assert 'one of' in policy_spec_error('bogus') and 'share:<w:w:...>' in POLICY_SPECS
    assert 'modality' in policy_spec_error('unimodal:lidar')
    assert 'not all 0' in policy_spec_error('share:0:0')
    assert 'one of' in policy_spec_error('share')


def test_share_is_a_fixed_prior_over_the_even_split(batch):
    even = stacked(make_policy('every_other', modalities=MODS, depth=DEPTH).allocate(batch, Budget(0.5), MODS))
    same = stacked(make_policy('share:1:1:1', modalities=MODS, depth=DEPTH).allocate(batch, Budget(0.5), MODS))
    assert np.array_equal(even, same)
    # All but the other modalities' layer 0 to RGB (18 layers: 16 RGB capped at 12, the rest spill over).
    keep = stacked(make_policy('share:1:0:0', modalities=MODS, depth=DEPTH).allocate(batch, Budget(0.25), MODS))
    assert keep.sum(-1).tolist() == [[7, 1, 1]] * 6
    keep = stacked(make_policy('share:2:1:1', modalities=MODS, depth=DEPTH).allocate(batch, Budget(1 / 3), MODS))
    assert keep.sum(-1).tolist() == [[6, 3, 3]] * 6   # 9 free layers 2:1:1 -> 4.5, 2.25, 2.25
    assert make_policy('share:2:1:1', modalities=MODS, depth=DEPTH).name == 'share:2:1:1'


def test_bad_allocate_arguments_are_rejected(batch):
    policy = make_policy('naive', modalities=MODS, depth=DEPTH)
    with pytest.raises(ValueError, match='not configured'):
        policy.allocate(batch, Budget(0.5), ('rgb', 'thermal'))
    with pytest.raises(ValueError, match='Budget'):
        policy.allocate(batch, 0.5, MODS)
    with pytest.raises(ValueError, match='block FLOPs'):
        make_policy('naive', modalities=MODS, depth=DEPTH,
                    cost_model=SimpleNamespace(block_flops={'rgb': 1.0}))
    with pytest.raises(ValueError, match='data'):
        make_policy('heuristic', modalities=MODS, depth=DEPTH).allocate(
            {'label': np.zeros(6)}, Budget(0.5), MODS)
