"""``make demo`` / ``admn demo``: the main job on the embedded synthetic world.

1. Load the trained default (shipped in ``admn_ros/models/``, else the local cache; with neither,
   train it first with the shipped configs, as ``admn train defaults --dataset synthetic`` does).
2. Offline: each sensor destroyed alone over the whole test split (and clean), the learned
   controller against the fixed rules at a quarter and a third of the layers: accuracy and the
   layers each sensor got (table, JSON and plots in ``--out``).
3. Online: the ROS 2 node graph ``noise_experiment`` (synthetic camera, depth and microphone ->
   noise injector following a corruption schedule -> admn_fusion at a fixed third of the layers ->
   evaluator) across processes,
   then the evaluator's report in words: what each corruption phase did to the layers, whether
   layers left each degraded sensor, and where the timeline plot is.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List


def _ensure_default(out: Path, quick: bool) -> Path:
    from admn_ros.quality_estimators.defaults import train_defaults
    from admn_ros.quality_estimators.evaluate import default_checkpoint
    try:
        return default_checkpoint('synthetic')
    except FileNotFoundError:
        pass
    if not quick:
        # The first run makes the real default (the model behind the README's tables), once.
        print('No trained default found: training it now, once (about 15 minutes on 2 cores;\n'
              'the same as `admn train defaults --dataset synthetic`).', flush=True)
        return train_defaults('synthetic')
    print('No trained default found: --quick trains a tiny one (near chance; the real default is made\n'
          'by `admn demo` without --quick or `admn train defaults --dataset synthetic`).', flush=True)

    def shrink(s1, c):
        s1.data.train_size, s1.data.val_size, s1.epochs = 600, 200, 2
        c.data.train_size, c.epochs = 600, 1
    return train_defaults('synthetic', out=out / 'quick_model', shrink=shrink)


def demo_conditions():
    """Clean, then each sensor destroyed alone (the conditions of the README's headline table)."""
    from admn_ros.datasets.conditions import DESTROYING, Condition, condition_name
    conditions = [Condition('clean', ())]
    for corruption in DESTROYING:
        conditions.append(Condition(condition_name([corruption]), (corruption,)))
    return conditions


def graph_overrides(checkpoint, schedule, report_path, samples: int) -> List[str]:
    """The ``noise_experiment`` overrides of the demo run."""
    # The injector takes a modality the schedule has no events for from its fixed levels, which
    # the graph's config sets to corrupted ones: clean here, so the schedule alone decides and the
    # report has all-clean frames to compare with.
    clean = [f'noise_injector.{m}.{k}={v}' for m in ('rgb', 'depth', 'audio')
             for k, v in (('type', 'clean'), ('severity', 0.0))]
    budget = Path(schedule).with_name('demo_budget.yaml')   # a fixed third of the layers
    return [f'model:={checkpoint}', f'schedule:={schedule}', f'evaluator.report_path={report_path}',
            f'sensor_source.dataset_size={samples}', f'budget_manager.schedule_file={budget}',
            'budget_manager.mode=schedule'] + clean


def ros_summary(ros: dict, report_path: Path) -> str:
    """The evaluator's report in words: headline numbers, what happened in each corruption phase,
    whether layers left each degraded sensor, and where the plot is."""
    def num(key, fmt='.3f'):
        value = ros.get(key)
        return '-' if value is None else format(value, fmt) if isinstance(value, float) else value
    lines = [f"accuracy {num('accuracy')} over {num('matched')} matched predictions "
             f"({num('drops')} drops), received {num('received_hz', '.2f')} Hz, "
             f"{num('mean_gflops', '.3f')} GFLOPs/frame, "
             f"latency p50 {num('latency_ms_p50', '.1f')} ms"]
    phases = ros.get('phases') or []
    if phases:
        lines.append('By corruption phase:')
        lines += [f"  {p['index']}. {p['sentence']}" for p in phases]
    else:
        lines.append('No corruption record reached the evaluator: '
                     'the run cannot be split by phase.')
    shift = ros.get('shift') or {}
    if shift:
        lines.append('Did layers leave the degraded sensors?')
        lines += [f"  {entry['verdict']}" for entry in shift.values()]
    plot = ros.get('timeline_plot')
    if plot:
        lines.append(f'Layers and corruption over time: {plot}')
    lines.append(f"Full report: {report_path} and {report_path.with_suffix('.md')}")
    return '\n'.join(lines)


def main(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    checkpoint = _ensure_default(out, args.quick)
    print(f'[1/3] model: {checkpoint}', flush=True)

    from admn_ros.quality_estimators.condition_report import write_condition_report
    from admn_ros.quality_estimators.evaluate import evaluate_conditions
    print('[2/3] offline: one sensor destroyed at a time, the whole synthetic test split each', flush=True)
    report = evaluate_conditions(checkpoint, 'synthetic', [0.25, 0.33], ['admn', 'naive', 'every_other', 'full'],
                                 demo_conditions(), size=200 if args.quick else 1000)
    write_condition_report(report, json_path=out / 'eval.json', plot=out / 'accuracy_by_condition.png',
                           allocation_plot=out / 'layers_by_condition.png')

    print('[3/3] ROS 2 graph: sensor_source -> noise_injector -> admn_fusion -> evaluator', flush=True)
    from admn_ros.bringup import run_graph
    from admn_ros.graph import parse_overrides
    from admn_ros.paths import config_dir
    report_path = out / 'ros_report.json'
    samples = 40 if args.quick else 150
    schedule = config_dir() / 'scenarios' / 'demo_schedule.yaml'  # the source tree's, or share/ once installed
    code = run_graph('noise_experiment', parse_overrides(
        graph_overrides(checkpoint, schedule, report_path, samples)))
    if report_path.exists():
        print(ros_summary(json.loads(report_path.read_text()), report_path), flush=True)
    print(f'demo finished in {time.time() - t0:.0f} s; outputs in {out}/', flush=True)
    return code
