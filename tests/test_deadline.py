"""The deadline controller (quality_estimators/deadline.py) on synthetic latency traces.

The trace: latency = scale * (fixed + (1 - fixed) * budget) * lognormal noise, the budget applied one
frame late (as a ROS node applies it), and the machine's scale doubling at frame 300 (a competing
process starts) and returning at frame 600 (it stops). Stated settling, with the default config:
within 10 frames of the doubling the budget is at most one grid step above the largest budget
that meets the deadline at p95 (measured: 4 frames, the window restarting on the slowdown), and
within 60 frames of the release it is back at 0.9 or more (measured: 42-47; ``window`` 40 +
``hold_frames`` 10 bound it); after each of these it never changes direction.
"""
import numpy as np
import pytest

from admn_ros.quality_estimators.deadline import DeadlineConfig, DeadlineController

STEP_AT, RELEASE_AT, N = 300, 600, 900
SETTLE_DOWN, SETTLE_RELEASE = 10, 60


def run_trace(seed, cfg=DeadlineConfig(), fixed=0.2, sigma=0.08, idle_ms=30.0, busy_ms=60.0,
              spikes=0.0, lag=1, step_at=STEP_AT, release_at=RELEASE_AT):
    rng = np.random.default_rng(seed)
    ctrl = DeadlineController(cfg)
    applied = [ctrl.budget] * (lag + 1)
    budgets, latency = [], []
    for t in range(N):
        scale = busy_ms if step_at <= t < release_at else idle_ms
        b = applied[-1 - lag]
        lat = scale * (fixed + (1 - fixed) * b) * rng.lognormal(0.0, sigma)
        if rng.random() < spikes:
            lat *= 1.8
        applied.append(ctrl.update(b, lat))
        budgets.append(applied[-1])
        latency.append(lat)
    return ctrl, np.array(budgets), np.array(latency)


def first(condition, start, end):
    """Frames after ``start`` until ``condition`` (a boolean array) first holds (None: never)."""
    hits = np.flatnonzero(condition[start:end])
    return int(hits[0]) if len(hits) else None


def reversals(budgets):
    moves = np.sign(np.diff(budgets))
    moves = moves[moves != 0]
    return int(np.sum(moves[1:] != moves[:-1]))


@pytest.mark.parametrize('seed', range(6))
def test_step_change_settles_without_oscillating_and_meets_the_deadline(seed):
    cfg = DeadlineConfig(deadline_ms=40.0)
    ctrl, budgets, latency = run_trace(seed, cfg)
    assert budgets.min() >= cfg.min_budget and budgets.max() <= cfg.max_budget
    assert set(np.round(budgets, 6)) <= set(cfg.grid())
    # Idle: the full model fits (30 ms x noise), so the budget stays high.
    assert budgets[STEP_AT - 1] >= 0.9
    # The machine halves its speed: down within the stated frames, to a budget that fits (the
    # largest budget whose p95 latency at 60 ms full-budget scale meets 40 ms, plus one step).
    fits = (40.0 / (60.0 * np.exp(1.645 * 0.08)) - 0.2) / 0.8
    down = first(budgets <= fits + 0.05 + 1e-9, STEP_AT, RELEASE_AT)
    assert down is not None and down <= SETTLE_DOWN, down
    assert reversals(budgets[STEP_AT + down:RELEASE_AT]) == 0
    assert np.mean(latency[STEP_AT + down + 1:RELEASE_AT] > cfg.deadline_ms) <= 0.05
    # The competitor leaves: back up within the stated frames, and it stays there.
    back = first(budgets >= 0.9, RELEASE_AT, N)
    assert back is not None and back <= SETTLE_RELEASE, back
    assert reversals(budgets[RELEASE_AT + back:]) == 0 and budgets[-1] >= 0.9
    assert np.mean(latency[RELEASE_AT + back:] > cfg.deadline_ms) <= 0.05
    # Not a change per frame: the only changes are the settling steps (a handful per step).
    assert ctrl.changes <= 12 and ctrl.restarts >= 1   # the slowdown restarted the window


@pytest.mark.parametrize('seed', range(4))
def test_a_steady_machine_keeps_its_budget(seed):
    """No load change: after the first frames, at most one change and two window restarts
    (noise alone puts three frames in a row above p95 about once in 8000 frames)."""
    # Full budget misses at 50 ms: a lower one fits, found in the first frames.
    ctrl, budgets, _ = run_trace(seed, idle_ms=50.0, step_at=N, release_at=N)
    assert budgets[-1] < 1.0
    assert np.count_nonzero(np.diff(budgets[50:])) <= 1 and ctrl.restarts <= 2


def test_the_latency_model_learns_the_budget_independent_share():
    """``fixed`` starts at the prior and moves to the trace's true share through the steps up."""
    shares = []
    for seed in range(4):
        ctrl, _, _ = run_trace(seed, DeadlineConfig(fixed_prior=0.6), fixed=0.1)
        shares.append(ctrl.fixed)
    assert np.mean(shares) < 0.45   # from 0.6 towards 0.1 (two or three measured steps up)


@pytest.mark.parametrize('seed', range(3))
def test_spiky_latency_never_leaves_the_bounds(seed):
    cfg = DeadlineConfig(min_budget=0.3, max_budget=0.9)
    _, budgets, _ = run_trace(seed, cfg, sigma=0.15, spikes=0.05)
    assert budgets.min() >= 0.3 and budgets.max() <= 0.9


def test_infeasible_and_trivial_deadlines_pin_the_bounds():
    cfg = DeadlineConfig(deadline_ms=5.0, min_budget=0.25)
    ctrl = DeadlineController(cfg)
    for _ in range(50):
        b = ctrl.update(ctrl.budget, 30.0)
    assert b == 0.25   # nothing meets 5 ms: the lowest budget, never below it
    ctrl = DeadlineController(DeadlineConfig(deadline_ms=1000.0), initial=0.25)
    for _ in range(50):
        b = ctrl.update(ctrl.budget, 30.0)
    assert b == 1.0


def test_bad_samples_are_counted_not_used():
    ctrl = DeadlineController(DeadlineConfig())
    for sample in ((0.5, float('nan')), (0.5, -1.0), (0.0, 10.0), (2.0, 10.0), ('x', 10.0)):
        assert ctrl.update(*sample) == 1.0
    assert ctrl.rejected == 5 and ctrl.frames == 0


@pytest.mark.parametrize('field,value', [('deadline_ms', 0), ('percentile', 100), ('min_budget', 0),
                                         ('max_budget', 0.1), ('up_margin', 0.05), ('window', 1)])
def test_bad_config_is_refused_in_one_line(field, value):
    with pytest.raises(ValueError, match=field):
        DeadlineConfig(**{field: value})


def test_grid_includes_both_bounds():
    assert DeadlineConfig(min_budget=0.3, max_budget=0.82, step=0.1).grid() == [
        0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.82]
