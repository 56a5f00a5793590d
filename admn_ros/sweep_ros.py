"""``admn experiment noise-sweep --through-ros``: the sweep's cells scored by the node graph.

Per condition the input set the offline route scores (the same arrays) is written once to a
rosbag2 with whole per-sample audio clips (:func:`admn_ros.datasets.bags.write_bag`); each
(budget, policy) cell then replays it through the ``replay_eval`` graph exactly as ``admn bag eval
--through-ros`` does (:func:`admn_ros.bag_tools.run_replay`: bag_player on ``/clock`` ->
admn_fusion with that policy and budget -> evaluator, stopped once every frame is scored) and
takes accuracy, mean GFLOPs and mean layers per modality from the evaluator's report. With whole clips the fusion node sees every
sample as the offline route does, so both routes give the same cell (tests/test_sweep.py).

Slow by design: every cell starts the three node processes (a few seconds each, the model loaded
once per cell) and plays its bag in bag time (``samples / rate_hz / rate`` seconds). ``/clock`` is
a global topic: run one ROS sweep per ``ROS_DOMAIN_ID`` at a time. ``oracle_split`` has no node
form (it picks a split knowing the condition) and is refused.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List

from admn_ros.bag_tools import replay_plan, run_replay
from admn_ros.datasets.bags import write_bag
from admn_ros.quality_estimators.budget import Budget
from admn_ros.quality_estimators.oracle import POLICY_NAME as ORACLE_SPLIT
from admn_ros.quality_estimators.sweep import RosSweepConfig



class RosCells:
    """The ROS route of :func:`admn_ros.quality_estimators.sweep.run_sweep`."""

    route = 'ros'

    def __init__(self, scorer, work_dir, cfg: RosSweepConfig = RosSweepConfig(), *, namespace: str = '',
                 log=print):
        self.scorer, self.cfg, self.log = scorer, cfg, log
        self.work = Path(work_dir)
        self.namespace = namespace or f'admn_sweep_{os.getpid()}'
        self.checkpoint = str(Path(scorer.setup.checkpoint).resolve())
        self.device = str(scorer.setup.device)
        self.bag = None
        self.slug = ''
        self.n = 0

    def begin(self, condition, test) -> None:
        self.slug = condition.name.replace(':', '_').replace('+', '__')
        path = self.work / 'bags' / self.slug
        if path.exists():          # left by an interrupted run: rewritten, never trusted
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.bag = write_bag(path, test, class_names=self.scorer.setup.test.class_names,
                             rate_hz=self.cfg.rate_hz)
        self.n = int(len(test['label']))

    def score(self, policy: str, budget: Budget) -> Dict[str, Any]:
        work = self.work / 'reports' / f'{self.slug}_{policy.replace(":", "_")}_{budget.fraction:g}'
        lines: List[str] = []
        plan = replay_plan(self.bag, self.scorer.setup.model.modalities)
        try:
            report = run_replay(self.bag, model=self.checkpoint, policy=policy,
                                budget=float(budget.fraction), unit=budget.unit, plan=plan,
                                work_dir=work, rate=float(self.cfg.rate), device=self.device,
                                namespace=self.namespace, timeout_s=float(self.cfg.timeout_s),
                                sink=lines.append)
        finally:
            work.mkdir(parents=True, exist_ok=True)
            (work / 'graph.log').write_text('\n'.join(lines) + '\n', encoding='utf-8')
        matched = int(report.get('matched') or 0)
        if matched != self.n:
            self.log(f'warning: {self.slug} {policy} {budget.fraction:g}: {matched} of {self.n} samples scored '
                     f"through ROS (drops {report.get('drops')}, pending {report.get('pending_labels')}); "
                     f"the row counts what was scored (node output: {work / 'graph.log'})")
        return {'metric': report.get('accuracy'), 'gflops': report.get('mean_gflops'),
                'layers': report.get('mean_layers') or {}, 'n': matched}

    def end(self) -> None:
        if self.bag is not None and not self.cfg.keep_bags:
            shutil.rmtree(self.bag, ignore_errors=True)
        self.bag = None


def ros_route(scorer, cfg, out) -> RosCells:
    """The ``route`` of :func:`admn_ros.quality_estimators.sweep.run_sweep` for ``--through-ros``:
    bags and per-cell reports under ``OUT/ros``. Refuses ``oracle_split`` before any cell runs."""
    if ORACLE_SPLIT in cfg.policies:
        raise ValueError(f'policy {ORACLE_SPLIT} has no node form: leave it out of a --through-ros sweep')
    return RosCells(scorer, Path(out) / 'ros', cfg.ros)
