"""The ``linear`` row of ``admn eval``: the stage-1 run's own linear baseline, scored beside the
model's policies on the same test samples under the same conditions.

It allocates no layers (it runs no encoder): its row has the baseline's accuracy at every budget,
the read-out's FLOPs and no layers. The fitted baseline travels in the checkpoint's metadata
(``linear_baseline``: plain tensors, loaded with ``weights_only``), written by every stage-1 run
(:mod:`admn_ros.fusion.linear_baseline`) and kept by the controller's checkpoint.
"""
from __future__ import annotations

from typing import Dict

from admn_ros.datasets.sample import RawBatch
from admn_ros.fusion.linear_baseline import LinearBaseline

POLICY_NAME = 'linear'


def linear_baseline_of(meta: Dict, checkpoint) -> LinearBaseline:
    """The fitted baseline in a checkpoint's metadata; ValueError when the run predates it."""
    state = meta.get('linear_baseline')
    if not state:
        raise ValueError(f'policy {POLICY_NAME}: {checkpoint} holds no linear baseline (trained before '
                         'stage 1 fitted one, or with linear_baseline: false); retrain stage 1 or drop it')
    return LinearBaseline.from_state(state)


def linear_cell(baseline: LinearBaseline, pre, test: RawBatch) -> Dict:
    """One cell in the shape :func:`admn_ros.quality_estimators.evaluate.evaluate_policy` gives."""
    return {'metric': baseline.accuracy(test, pre), 'gflops': baseline.flops / 1e9, 'layers': {}}
