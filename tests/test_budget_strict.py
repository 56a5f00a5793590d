"""Strict budget everywhere: over more than 100,000 drawn (sample, budget, unit, presence) cases,
for every allocation policy and the shipped learned controller, the executed encoder cost never
exceeds the budget - counted in layers, or in the FLOPs of the blocks actually kept."""
import numpy as np
import pytest
import torch

from admn_ros.datasets.synthetic import generate
from admn_ros.fusion.flops import encoder_block_costs
from admn_ros.quality_estimators.budget import (BUDGET_RANGE, ROUND_OFF_RTOL, UNITS, Budget,
                                                absolute_budget, select_layers, unit_costs)

SAMPLES = 125            # the quality estimators take at most 128 images per OpenCV call
RULES = {'naive': 40, 'every_other': 40, 'unimodal:rgb': 30, 'random': 40, 'share:2:1:1': 30,
         'heuristic': 8}  # policy -> budgets drawn per unit
CONTROLLER_DRAWS = 40_000  # per unit, each with its own budget and presence


@pytest.fixture(scope='module')
def shipped():
    from admn_ros.quality_estimators.inference import default_checkpoint, load_model
    torch.set_num_threads(1)
    return load_model(default_checkpoint('synthetic'), 'cpu')


@pytest.fixture(scope='module')
def setting(shipped):
    rng = np.random.default_rng(2024)
    mods = shipped.modalities
    enc = shipped.model.cfg.encoders
    true_cost = {'layers': np.ones((len(mods), shipped.depth)),
                 'flops': np.stack([encoder_block_costs(enc[m]) for m in mods])}   # [M, D]
    return rng, generate(SAMPLES, seed=11), true_cost


def presence(rng, n, m):
    """Per-draw presence: any non-empty subset, the full set most often."""
    mask = rng.random((n, m)) < 0.8
    mask[~mask.any(1), rng.integers(m, size=int((~mask.any(1)).sum()))] = True
    return mask


def check(keep, present, fractions, cost, what):
    """``keep`` [B, M, D] runs nothing absent and costs at most its budget; returns the largest
    spent share of a budget."""
    assert not (keep & ~present[:, :, None]).any(), what
    executed = (keep * cost).sum((1, 2))
    budget = np.asarray(fractions) * cost.sum()
    over = executed - budget * (1 + ROUND_OFF_RTOL)
    assert (over <= 0).all(), (what, float(over.max()))
    return float((executed / budget).max())


@pytest.mark.slow
def test_rule_policies_never_exceed_the_budget(shipped, setting):
    rng, batch, true_cost = setting
    mods = shipped.modalities
    draws, worst = 0, 0.0
    for spec, count in RULES.items():
        policy, _ = shipped.policy(spec, seed=3)
        for unit in UNITS:
            for fraction in np.r_[BUDGET_RANGE, rng.uniform(*BUDGET_RANGE, count - 2)]:
                present = presence(rng, SAMPLES, len(mods))
                alloc = policy.allocate(batch, Budget(float(fraction), unit), present)
                keep = np.stack([alloc[m] for m in mods], axis=1)
                worst = max(worst, check(keep, present, np.full(SAMPLES, fraction), true_cost[unit],
                                         (spec, unit, fraction)))
                draws += SAMPLES
    assert draws >= 45_000 and 0.9 < worst <= 1 + ROUND_OFF_RTOL   # spent, never overspent
    full, _ = shipped.policy('full')
    present = presence(rng, SAMPLES, len(mods))
    alloc = full.allocate(batch, Budget(0.1), present)   # the unconstrained reference
    assert (np.stack([alloc[m] for m in mods], axis=1) == present[:, :, None]).all()


@torch.inference_mode()
@pytest.mark.slow
def test_the_learned_controller_never_exceeds_the_budget(shipped, setting):
    """The controller's own scores for per-draw budgets, through the selector ``admn`` uses; a few
    budgets also through the policy itself, which must choose the same layers."""
    rng, batch, true_cost = setting
    mods, depth, ctrl = shipped.modalities, shipped.depth, shipped.controller
    scorer = shipped.scorer()
    views = {m: v for m, v in scorer.pre.controller_views(batch).items() if m in mods}
    order = [ctrl.cfg.modalities.index(m) for m in mods]
    draws, worst = 0, 0.0
    for unit in UNITS:
        picks = rng.integers(SAMPLES, size=CONTROLLER_DRAWS)
        fractions = np.r_[BUDGET_RANGE, rng.uniform(*BUDGET_RANGE, CONTROLLER_DRAWS - 2)]
        present = presence(rng, CONTROLLER_DRAWS, len(mods))
        logits = torch.cat([
            ctrl.allocate_logits(ctrl.encode({m: v[picks[i:i + 4000]] for m, v in views.items()},
                                             torch.as_tensor(fractions[i:i + 4000], dtype=torch.float32),
                                             unit))
            for i in range(0, CONTROLLER_DRAWS, 4000)])
        scores = torch.exp(logits - logits.amax((1, 2), keepdim=True)).numpy()[:, order]
        policy, _ = shipped.policy('admn')
        cost = unit_costs(Budget(0.5, unit), policy.block_cost)
        budget_abs = fractions * depth * cost.sum()   # absolute_budget, per draw
        keep = select_layers(scores, cost, budget_abs, present)
        worst = max(worst, check(keep, present, fractions, true_cost[unit], ('admn', unit)))
        draws += CONTROLLER_DRAWS
        # The policy, per budget, agrees with the vectorised path on the same samples.
        for f in fractions[2:5]:
            alloc = policy.allocate(batch, Budget(float(f), unit), mods)
            via_policy = np.stack([alloc[m] for m in mods], axis=1)
            sc = scorer.scores(batch, Budget(float(f), unit), mods)
            direct = select_layers(sc, cost, absolute_budget(Budget(float(f), unit), policy.block_cost,
                                                             depth, mods), np.ones((SAMPLES, len(mods)), bool))
            assert (via_policy == direct).all()
            check(via_policy, np.ones((SAMPLES, len(mods)), bool), np.full(SAMPLES, f),
                  true_cost[unit], ('admn policy', unit, f))
    assert draws >= 80_000 and 0.9 < worst <= 1 + ROUND_OFF_RTOL
