"""A robot that only runs inference never imports the trainers or the evaluation code.

Checked in a fresh interpreter, so nothing another test imported can hide an import: the shipped
default is loaded for inference, a frame is run through the fusion engine (no rclpy needed) and
through the shared allocate -> run -> FLOPs path, and then no training or evaluation module is
in ``sys.modules``.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Training and evaluation: none of them may load for inference.
NOT_FOR_INFERENCE = (
    'admn_ros.fusion.stage1', 'admn_ros.fusion.training', 'admn_ros.quality_estimators.train_controller',
    'admn_ros.quality_estimators.defaults', 'admn_ros.quality_estimators.evaluate',
    'admn_ros.quality_estimators.oracle', 'admn_ros.quality_estimators.condition_report',
)

PROBE = '''
import json, sys
import numpy as np
import torch
torch.set_num_threads(1)
from admn_ros.datasets.synthetic import generate
from admn_ros.quality_estimators.budget import Budget
from admn_ros.quality_estimators.inference import (allocate_and_run, default_checkpoint, executed_flops,
                                                   load_model)
from admn_ros.runtime.engine import EngineConfig, FusionEngine
from admn_ros.runtime.frame_queue import Frame

raw = generate(2, seed=3)
loaded = load_model(default_checkpoint('synthetic'))
policy, extra = loaded.policy('admn')
present = loaded.modalities
inputs = loaded.preprocessor(raw)
run = allocate_and_run(loaded.model, policy, raw, inputs, Budget(0.25), present)
flops = executed_flops(loaded.cost, run.keep, present, extra)

engine = FusionEngine(EngineConfig(dataset='synthetic', policy='admn'))
frame = Frame(stamp_ns=1, frame_id='camera', data={m: raw[m][0] for m in engine.modalities})
inf = engine.infer(frame, Budget(0.25))
print(json.dumps({
    'layers': [int(run.keep[m].sum()) for m in present], 'logits': list(run.logits.shape),
    'flops': flops.tolist(), 'full_flops': float(loaded.cost.total_flops(
        {m: np.ones((1, loaded.depth), bool) for m in present})[0]),
    'engine_layers': sum(inf.layers.values()), 'engine_prob_sum': float(inf.probs.sum()),
    'loaded': sorted(m for m in sys.modules if m.startswith('admn_ros.')),
}))
'''


@pytest.mark.slow
def test_loading_and_running_a_shipped_model_imports_no_training_or_evaluation_module():
    for name in NOT_FOR_INFERENCE:   # the names are real modules, so the check below means something
        assert importlib.util.find_spec(name) is not None, name
    out = subprocess.run([sys.executable, '-c', PROBE], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # It really ran: a quarter of 3 x 12 layers for each of the two samples, fewer FLOPs than the
    # full model even with the controller's own, one prediction from the engine.
    assert report['logits'] == [2, 12]
    assert 3 <= sum(report['layers']) <= 2 * 9
    assert all(0 < f < report['full_flops'] for f in report['flops'])
    assert 3 <= report['engine_layers'] <= 9 and abs(report['engine_prob_sum'] - 1) < 1e-4
    assert 'admn_ros.quality_estimators.inference' in report['loaded']
    assert 'admn_ros.runtime.engine' in report['loaded']
    leaked = sorted(set(NOT_FOR_INFERENCE) & set(report['loaded']))
    assert not leaked, f'inference imported training/evaluation modules: {leaked}'
