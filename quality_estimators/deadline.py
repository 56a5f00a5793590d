"""Deadline-driven budget: the largest budget predicted to keep a latency percentile under a target.

Fed one ``(budget, latency_ms)`` pair per frame (what the fusion node publishes on
``admn/inference``), :class:`DeadlineController` returns the budget for the next frames. Used by
``budget_manager`` (``mode: deadline``), by admn_fusion in-process (``deadline_ms`` > 0) and by
``admn bench contention``; it has no ROS or torch dependency.

**Latency model, per budget** ``b`` (fraction of the full model):

    latency_q(b) = scale * (fixed + (1 - fixed) * b)

``fixed`` is the share of full-budget latency that does not shrink with the budget (sensor
messages, preprocessing, patch embeddings, fusion, head); ``scale`` is the ``percentile``-th
percentile of the last ``window`` latencies, each divided by its own budget's relative cost, so it
is the full-budget latency the machine gives *now*. When a competing process starts, latencies grow
and the percentile follows within a few frames (about ``window * (1 - percentile/100)`` slow frames
move it); and once each of the last ``restart_frames`` frames lies above the percentile of the
frames before them (by chance: one time in 8000 at p95), the machine has changed: the window
restarts from those frames, so the next decision already sees the new regime instead of walking
down a step per slow frame (and no step up is taken until the window is half full again: a few
frames give a pessimistic percentile). When the competitor stops, the slow frames leave the window
(the safe direction is the slow one).

``fixed`` starts at ``fixed_prior`` and is learned from each step *up* of at least
``shape_min_step``: the median latency of the ``shape_samples`` frames before the step and of as
many after it (same machine state: a step up only follows ``hold_frames`` quiet frames) give the
latency ratio of the two budgets, which fixes ``fixed``; it is smoothed with weight
``fit_weight``. Steps down are not used: they follow a change of the machine's load, which would
read as a change of shape. A step up that overshoots teaches at once that the budget costs more.

**Decision** on the grid ``min_budget, min_budget + step, ..., max_budget`` (never outside it):

* down, at once: when the current budget is predicted above ``(1 - margin) * deadline_ms``, to the
  largest budget predicted under it (``min_budget`` when none is);
* up, once a larger budget has been predicted under ``(1 - up_margin) * deadline_ms`` for
  ``hold_frames`` frames in a row: to the largest such budget.

``up_margin`` > ``margin`` is the hysteresis band: a budget chosen on the way up is predicted
``up_margin - margin`` of the deadline below the level that would send it down again, so noise
inside that band changes nothing, and a step up needs the slow frames out of the window first.
"""
from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import numpy as np


@dataclass(frozen=True)
class DeadlineConfig:
    deadline_ms: float = 40.0
    percentile: float = 95.0      # of frame latency kept under the deadline
    min_budget: float = 0.25
    max_budget: float = 1.0
    step: float = 0.05            # budget grid
    margin: float = 0.1           # down when the prediction passes (1 - margin) * deadline
    up_margin: float = 0.2        # up only to a budget predicted under (1 - up_margin) * deadline
    window: int = 40              # latency samples the percentile is taken over
    min_samples: int = 5          # no decision before this many samples
    restart_frames: int = 3       # this many frames in a row above the percentile: a slowdown
    hold_frames: int = 10         # frames in a row a step up must be predicted safe
    fixed_prior: float = 0.25     # share of full-budget latency independent of the budget
    shape_samples: int = 8        # frames each side of a step up that measure `fixed`
    shape_min_step: float = 0.2   # smaller steps up say too little about the shape
    fit_weight: float = 0.3       # weight of a new measurement in the smoothed `fixed`

    def __post_init__(self):
        checks = [
            ('deadline_ms', self.deadline_ms > 0, '> 0'),
            ('percentile', 50 <= self.percentile < 100, 'in [50, 100)'),
            ('min_budget', 0 < self.min_budget <= 1, 'in (0, 1]'),
            ('max_budget', self.min_budget <= self.max_budget <= 1, 'in [min_budget, 1]'),
            ('step', 0 < self.step <= 1, 'in (0, 1]'),
            ('margin', 0 <= self.margin < 1, 'in [0, 1)'),
            ('up_margin', self.margin <= self.up_margin < 1, 'in [margin, 1)'),
            ('window', self.window >= 2, '>= 2'),
            ('min_samples', 1 <= self.min_samples <= self.window, 'in [1, window]'),
            ('restart_frames', 1 <= self.restart_frames < self.window, 'in [1, window)'),
            ('hold_frames', self.hold_frames >= 0, '>= 0'),
            ('fixed_prior', 0 <= self.fixed_prior < 1, 'in [0, 1)'),
            ('shape_samples', self.shape_samples >= 1, '>= 1'),
            ('shape_min_step', 0 < self.shape_min_step <= 1, 'in (0, 1]'),
            ('fit_weight', 0 <= self.fit_weight <= 1, 'in [0, 1]'),
        ]
        for name, ok, allowed in checks:
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f'deadline {name} = {value!r}: allowed: {allowed}')

    def grid(self) -> List[float]:
        """Budgets the controller chooses from, ascending, ``max_budget`` always included."""
        n = int(math.floor((self.max_budget - self.min_budget) / self.step + 1e-9))
        levels = [round(self.min_budget + i * self.step, 6) for i in range(n + 1)]
        if levels[-1] < self.max_budget - 1e-9:
            levels.append(round(self.max_budget, 6))
        return levels


class DeadlineController:
    """See the module docstring. ``update(budget, latency_ms)`` -> budget for the next frames."""

    def __init__(self, cfg: DeadlineConfig = DeadlineConfig(), initial: Optional[float] = None):
        self.cfg = cfg
        self.levels = cfg.grid()
        self.budget = self._clip(cfg.max_budget if initial is None else float(initial))
        self.fixed = cfg.fixed_prior
        self._samples: collections.deque = collections.deque(maxlen=cfg.window)
        self.frames = 0
        self.changes = 0
        self.rejected = 0
        self.restarts = 0       # window restarts on a slowdown
        self._up_streak = 0     # frames in a row a larger budget was predicted safe
        self._step_up = None   # (low, high, latencies before, latencies after) of the last step up

    def _clip(self, budget: float) -> float:
        return min(self.cfg.max_budget, max(self.cfg.min_budget, budget))

    # ------------------------------------------------------------------ model
    def relative_cost(self, budget: float) -> float:
        """Latency at ``budget`` over latency at the full budget, under the same machine load."""
        return self.fixed + (1.0 - self.fixed) * budget

    def scale_ms(self) -> float:
        """Predicted ``percentile`` latency at the full budget now (NaN before any sample)."""
        if not self._samples:
            return float('nan')
        normalised = [lat / self.relative_cost(b) for b, lat in self._samples]
        return float(np.percentile(normalised, self.cfg.percentile))

    def predict_ms(self, budget: float) -> float:
        """Predicted ``percentile`` latency at ``budget`` (NaN before any sample)."""
        return self.scale_ms() * self.relative_cost(budget)

    @staticmethod
    def fixed_from_ratio(low: float, high: float, ratio: float) -> float:
        """The ``fixed`` share for which latency(high) / latency(low) = ``ratio``, in [0, 0.95]."""
        denom = ratio * (1 - low) - (1 - high)
        if denom <= 0:
            return 0.95   # no growth at all (or less): as flat as the model allows
        return min(0.95, max(0.0, (high - ratio * low) / denom))

    def _learn_shape(self, budget: float) -> None:
        """After a step up, measure the latency ratio of the two budgets (module docstring)."""
        step = self._step_up
        if step is None:
            return
        low, high, before, after = step
        if budget == high:
            after.append(self._samples[-1][1])
        if budget in (low, high) and len(after) < self.cfg.shape_samples:
            return   # frames still in flight under the old budget, or more to collect
        self._step_up = None
        if len(after) < 2 or not before:
            return
        ratio = float(np.median(after)) / max(float(np.median(before)), 1e-9)
        w = self.cfg.fit_weight
        self.fixed = (1 - w) * self.fixed + w * self.fixed_from_ratio(low, high, ratio)

    def _restart_on_slowdown(self) -> None:
        """Keep only the newest ``restart_frames`` frames when every one of them is slower than the
        window's percentile before them: a step in the machine's load, not noise."""
        k = self.cfg.restart_frames
        if len(self._samples) < max(2 * k, self.cfg.min_samples + k):
            return
        normalised = [lat / self.relative_cost(b) for b, lat in self._samples]
        if min(normalised[-k:]) > np.percentile(normalised[:-k], self.cfg.percentile):
            recent = list(self._samples)[-k:]
            self._samples.clear()
            self._samples.extend(recent)
            self.restarts += 1

    # ------------------------------------------------------------------ decision
    def largest_under(self, limit_ms: float) -> float:
        """The largest grid budget predicted under ``limit_ms`` (``min_budget`` when none is)."""
        scale = self.scale_ms()
        best = self.levels[0]
        for level in self.levels:
            if scale * self.relative_cost(level) <= limit_ms:
                best = level
        return best

    def update(self, budget: float, latency_ms: float) -> float:
        """Record one frame (the budget it ran under, its latency) and return the budget to use.

        A sample that is not a finite non-negative latency or whose budget is not a positive
        fraction is counted in ``rejected`` and changes nothing."""
        try:
            budget, latency_ms = float(budget), float(latency_ms)
        except (TypeError, ValueError):
            self.rejected += 1
            return self.budget
        if not (math.isfinite(budget) and 0 < budget <= 1 and math.isfinite(latency_ms)
                and latency_ms >= 0):
            self.rejected += 1
            return self.budget
        self._samples.append((budget, latency_ms))
        self.frames += 1
        self._restart_on_slowdown()
        self._learn_shape(budget)
        if len(self._samples) < self.cfg.min_samples:
            return self.budget
        cfg = self.cfg
        new = self.budget
        if self.predict_ms(self.budget) > (1 - cfg.margin) * cfg.deadline_ms:
            new = min(self.budget, self.largest_under((1 - cfg.margin) * cfg.deadline_ms))
            self._up_streak = 0
        else:
            up = self.largest_under((1 - cfg.up_margin) * cfg.deadline_ms)
            refilling = len(self._samples) < self.cfg.window // 2 and self.restarts
            self._up_streak = self._up_streak + 1 if up > self.budget and not refilling else 0
            if self._up_streak >= max(1, cfg.hold_frames):
                new = up
        new = self._clip(new)
        if new != self.budget:
            if new - self.budget >= cfg.shape_min_step - 1e-9:
                before = [lat for b, lat in self._samples if b == self.budget][-cfg.shape_samples:]
                self._step_up = (self.budget, new, before, [])
            else:
                self._learn_shape(float('nan'))   # any other change ends a measurement early
            self.budget = new
            self.changes += 1
            self._up_streak = 0
        return self.budget

    def state(self) -> Dict[str, Any]:
        """For diagnostics: the budget, the model and the counts."""
        scale = self.scale_ms()
        return {'budget': self.budget, 'deadline_ms': self.cfg.deadline_ms,
                'percentile': self.cfg.percentile,
                'predicted_ms': None if math.isnan(scale) else round(self.predict_ms(self.budget), 3),
                'full_budget_ms': None if math.isnan(scale) else round(scale, 3),
                'fixed_share': round(self.fixed, 3), 'frames': self.frames,
                'changes': self.changes, 'restarts': self.restarts, 'rejected': self.rejected}

    def config_dict(self) -> Dict[str, Any]:
        return asdict(self.cfg)
