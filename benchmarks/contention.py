"""Latency under contention: the node graph while local load generators take 0, 1 or 2 cores.

    admn bench contention --json OUT [--seconds N] [--rounds R] [--rate HZ] [--deadline-ms MS]

For each budget mode the graph sensor_source -> admn_fusion -> evaluator runs (as ``admn bench
ros`` starts it), plus budget_manager where the mode needs it, and while it runs the load steps
through 0, 1 and 2 cores, ``--seconds`` each (so the deadline rule has to follow a competitor that
starts and stops, and the cases of one mode are measured within a minute of each other); ``--rounds``
repeats the whole sweep and pools the rounds, so slow drifts of a shared machine hit every case:

* ``full``: the budget fixed at 1.0;
* ``load``: budget_manager ``mode: load`` (budget from the machine's CPU utilisation);
* ``deadline``: the deadline rule (``deadline_ms``, p95, learned latency model), run in-process by
  admn_fusion (``deadline_ms`` parameter; the default, ``--deadline-via node``) or by budget_manager
  ``mode: deadline`` (``--deadline-via budget_manager``: one more process on the same cores).

Load (``load_cores``), started once the fusion node answers and stopped after its ``--seconds``,
each process bounded by an end time (and killed with it): 0 = none; 1 = one busy-loop process; 2 = that
plus a second model process running full-depth batch-1 inference of the same model in a loop (on
``--device``: with ``cuda`` it competes for the GPU). ``--fixed-budgets`` adds runs at fixed
budgets (not part of ``results``: they give the best fixed budget that meets the deadline, which
``deadline`` mode is compared with).

Measured per case over its windows (``--seconds`` from the moment its load runs, every round),
from the evaluator's per-frame timeline: latency p50/p95/p99 (source stamp to prediction publish),
deadline misses (frames slower than the deadline, plus frames the node never answered: gaps in the
source's stamp sequence, the keep-latest queue having replaced them), accuracy and mean budget.
JSON::

    {"deadline_ms": 40.0, "results": [{"mode", "load_cores", "latency_ms_p50", "latency_ms_p95",
      "latency_ms_p99", "deadline_miss_pct", "accuracy", "mean_budget"}, ...],
     "fixed": [...], "details": [...], "targets": {...}, "machine": {...}}

The table of ``results``, ``fixed`` and ``targets`` goes beside the JSON (``.md``).
``details`` holds each case's frames, drops, p95 per window (round) and the machine's 1-minute load
average at the start and end of each of its windows: the machine is shared, so read ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from admn_ros.benchmarks.report import write_result

MODES = ('full', 'load', 'deadline')
LOADS = (0, 1, 2)
RESULT_KEYS = ('mode', 'load_cores', 'latency_ms_p50', 'latency_ms_p95', 'latency_ms_p99',
               'deadline_miss_pct', 'accuracy', 'mean_budget')
MISS_TARGET_PCT = 5.0
P95_RATIO_TARGET = 1.5


# --------------------------------------------------------------------------- load generators
def _busy_loop(end: float, ready) -> None:
    ready.set()
    while time.time() < end:
        pass


def _model_loop(end: float, checkpoint: str, device: str, ready) -> None:
    """A second model process: full-depth batch-1 inference of ``checkpoint`` until ``end``."""
    import torch

    from admn_ros.benchmarks.latency import random_inputs
    from admn_ros.fusion.checkpoint import load_checkpoint
    from admn_ros.fusion.device import resolve_device
    from admn_ros.fusion.threads import apply_threads, choose_threads
    apply_threads(choose_threads('latency', sharers=2))
    dev = resolve_device(device)
    model, _ = load_checkpoint(checkpoint, map_location=dev)
    model.eval()
    x = {m: v.to(dev) for m, v in random_inputs(model.cfg, 1, torch.Generator().manual_seed(0)).items()}
    ready.set()
    with torch.inference_mode():
        while time.time() < end:
            model(x)
            if dev.type == 'cuda':
                torch.cuda.synchronize(dev)


class LoadGenerators:
    """The processes that hold ``cores`` cores until ``end`` (wall clock) or :meth:`stop`."""

    def __init__(self, cores: int, end: float, checkpoint: str, device: str = 'cpu'):
        if cores not in LOADS:
            raise ValueError(f'load_cores must be one of {LOADS}, got {cores}')
        self.cores, self.end = cores, end
        self.checkpoint, self.device = checkpoint, device
        self.procs: List[mp.Process] = []
        self.ready = None   # the busy loop's start event (set once it spins)

    def start(self, timeout: float = 120.0) -> 'LoadGenerators':
        ctx = mp.get_context('spawn')   # nothing of this process (rclpy, DDS) in the children
        events = []
        if self.cores >= 1:
            events.append(ctx.Event())
            self.procs.append(ctx.Process(target=_busy_loop, args=(self.end, events[-1]),
                                          daemon=True))
        if self.cores >= 2:
            events.append(ctx.Event())
            self.procs.append(ctx.Process(target=_model_loop, daemon=True, args=(
                self.end, self.checkpoint, self.device, events[-1])))
        for p in self.procs:
            p.start()
        give_up = time.monotonic() + timeout
        for event in events:   # measuring starts once every generator is at work
            if not event.wait(max(0.0, give_up - time.monotonic())):
                self.stop()
                raise RuntimeError(f'a load generator was not running within {timeout} s')
        self.ready = events[0] if events else None
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(5.0)
        self.procs = []


# --------------------------------------------------------------------------- one case
def case_overrides(args, checkpoint: Path, policy: str, report: Path, mode: str,
                   budget: float) -> Dict[str, Dict[str, Any]]:
    from admn_ros.benchmarks.ros_graph import overrides
    ns = argparse.Namespace(source='synthetic', dataset_size=args.dataset_size, rate=args.rate,
                            budget=budget, device=args.device)
    out = overrides(ns, checkpoint, policy, report)
    if args.threads:
        out['admn_fusion']['threads'] = int(args.threads)
    if mode == 'deadline' and args.deadline_via == 'node':
        out['admn_fusion'].update(deadline_ms=float(args.deadline_ms),
                                  deadline_min_budget=args.min_budget)
    elif mode in ('load', 'deadline'):
        out['budget_manager'] = {'mode': mode, 'min_budget': args.min_budget, 'max_budget': 1.0,
                                 'deadline_ms': float(args.deadline_ms), 'use_gpu': False}
    return out


def case_graph(mode: str, deadline_via: str = 'node'):
    from admn_ros.benchmarks.ros_graph import bench_graph
    from admn_ros.graph import GraphSpec, NodeSpec
    g = bench_graph()
    if mode in ('full', 'fixed') or (mode == 'deadline' and deadline_via == 'node'):
        return g
    return GraphSpec(name='contention_bench', description=g.description + ' + budget_manager',
                     nodes=g.nodes + (NodeSpec('budget_manager', 'budget_manager'),))


def run_session(args, checkpoint: Path, policy: str, mode: str, budget: float, loads: List[int],
                work: Path, tag: str) -> List[Dict[str, Any]]:
    """One graph: start it, wait for its first prediction, then for each load count in turn start
    the generators, measure ``--seconds``, stop them (a second's pause between loads); stop the
    graph. Returns one ``{'load_cores', 'window', 'loadavg', 'timeline'}`` per load."""
    import rclpy

    from admn_ros.bringup import Bringup
    from admn_ros.node_utils import make_executor
    from admn_ros.wire import PREDICTION, output_class

    report = work / f'{mode}_{budget:g}_{tag}.json'
    namespace = f'admn_contention_{os.getpid()}'
    log: List[str] = []
    bringup = Bringup(case_graph(mode, args.deadline_via),
                      case_overrides(args, checkpoint, policy, report, mode, budget),
                      namespace=namespace, sink=log.append)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node('contention_probe', namespace=namespace, context=ctx)
    executor = make_executor(context=ctx)
    executor.add_node(node)
    first: List[float] = []
    watch = node.create_subscription(output_class(PREDICTION), PREDICTION,
                                     lambda _: first or first.append(time.monotonic()), 10)
    pieces: List[Dict[str, Any]] = []
    load = None
    try:
        bringup.start()
        give_up = time.monotonic() + args.startup_timeout
        while not first and time.monotonic() < give_up and not bringup.all_exited():
            executor.spin_once(timeout_sec=0.1)
        if not first:
            raise RuntimeError(f'no prediction within {args.startup_timeout} s; graph log:\n'
                               + '\n'.join(log[-40:]))
        node.destroy_subscription(watch)
        for n in loads:
            load = LoadGenerators(n, time.time() + args.seconds + 60.0, str(checkpoint),
                                  args.device).start()
            avg = [os.getloadavg()[0]]
            start = time.time_ns()
            time.sleep(args.seconds)
            pieces.append({'load_cores': n, 'window': (start, time.time_ns())})
            load.stop()
            load = None
            avg.append(os.getloadavg()[0])
            pieces[-1]['loadavg'] = avg
            time.sleep(1.0)
    finally:
        if load is not None:
            load.stop()
        codes = bringup.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    if not report.is_file():
        raise RuntimeError(f'the evaluator wrote no report (exit codes {codes}); graph log:\n'
                           + '\n'.join(log[-40:]))
    if args.save_reports:
        keep = Path(args.save_reports)
        keep.mkdir(parents=True, exist_ok=True)
        (keep / report.name).write_text(report.read_text(), encoding='utf-8')
    timeline = json.loads(report.read_text())['timeline']
    for piece in pieces:
        piece['timeline'] = timeline
    return pieces


def summarise(pieces: List[Dict[str, Any]], rate_hz: float, deadline_ms: float, *,
              mode: str, load_cores: int) -> Dict[str, Any]:
    """One case's numbers from the evaluator's timelines: the frames stamped inside each piece's
    ``window`` (ns), all pieces (rounds) together."""
    period_ns = 1e9 / rate_hz
    frames: List[Dict[str, Any]] = []
    unanswered = 0
    p95_by_window = []
    for piece in pieces:
        start, end = piece['window']
        mine = sorted((f for f in piece['timeline']
                       if start <= f['stamp_ns'] <= end and 'latency_ms' in f),
                      key=lambda f: f['stamp_ns'])
        stamps = np.array([f['stamp_ns'] for f in mine], dtype=np.int64)
        # Frames the node never answered: each gap of k periods between answered stamps hides k - 1.
        unanswered += int(np.sum(np.maximum(np.round(np.diff(stamps) / period_ns) - 1, 0)))
        frames += mine
        if mine:
            p95_by_window.append(round(float(np.percentile([f['latency_ms'] for f in mine], 95)), 1))
    if not frames:
        raise RuntimeError(f'{mode}, {load_cores} load cores: no frame answered while measuring')
    latency = np.array([f['latency_ms'] for f in frames])
    late = int(np.sum(latency > deadline_ms))
    scored = [f['correct'] for f in frames if f.get('correct') is not None]
    budgets = [f['budget'] for f in frames if f.get('budget') is not None]
    rnd = (lambda v, n=3: None if v is None else round(float(v), n))
    result = {
        'mode': mode, 'load_cores': load_cores,
        'latency_ms_p50': rnd(np.percentile(latency, 50)),
        'latency_ms_p95': rnd(np.percentile(latency, 95)),
        'latency_ms_p99': rnd(np.percentile(latency, 99)),
        'deadline_miss_pct': rnd(100.0 * (late + unanswered) / (len(frames) + unanswered), 2),
        'accuracy': rnd(np.mean(scored)) if scored else None,
        'mean_budget': rnd(np.mean(budgets)) if budgets else None,
    }
    details = {'mode': mode, 'load_cores': load_cores, 'frames': len(frames),
               'unanswered': unanswered, 'late': late, 'scored': len(scored),
               'latency_ms_p95_by_window': p95_by_window,
               'loadavg_1min': [[round(v, 2) for v in p.get('loadavg', ())] for p in pieces]}
    return {'result': result, 'details': details}


# --------------------------------------------------------------------------- whole run
def targets(results: List[Dict[str, Any]], fixed: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The issue's targets, read from one run (None where a case was not run)."""
    by = {(r['mode'], r['load_cores']): r for r in results}
    out: Dict[str, Any] = {}
    idle, busy = by.get(('full', 0)), by.get(('full', 1))
    if idle and busy:
        out['full_p95_ratio_1_core_over_idle'] = round(busy['latency_ms_p95'] / idle['latency_ms_p95'], 3)
        out['full_p95_ratio_target'] = P95_RATIO_TARGET
    deadline = [r for r in results if r['mode'] == 'deadline']
    if deadline:
        out['deadline_miss_pct_max'] = max(r['deadline_miss_pct'] for r in deadline)
        out['deadline_miss_pct_target'] = MISS_TARGET_PCT
        gaps = {}
        for r in deadline:
            meeting = [f for f in fixed + [by.get(('full', r['load_cores']))]
                       if f and f['load_cores'] == r['load_cores']
                       and f['deadline_miss_pct'] <= MISS_TARGET_PCT and f['accuracy'] is not None]
            if meeting and r['accuracy'] is not None:
                best = max(meeting, key=lambda f: f['accuracy'])
                gaps[str(r['load_cores'])] = {
                    'deadline_accuracy': r['accuracy'], 'best_fixed_accuracy': best['accuracy'],
                    'best_fixed_budget': best.get('budget', 1.0)}
        out['deadline_vs_best_fixed_meeting_deadline'] = gaps
    return out


def run(args) -> Dict[str, Any]:
    from admn_ros.benchmarks.ros_graph import default_checkpoint, has_controller
    with tempfile.TemporaryDirectory(prefix='admn_bench_contention_') as tmp:
        work = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(work)
        policy = args.policy or ('admn' if has_controller(checkpoint) else 'naive')
        machine = {'cores': len(os.sched_getaffinity(0)), 'loadavg_at_start': [
            round(v, 2) for v in os.getloadavg()]}
        sessions = [(m, 1.0) for m in args.modes] + [('fixed', b) for b in args.fixed_budgets]
        pieces: Dict[tuple, List[Dict[str, Any]]] = {}
        for r in range(args.rounds):
            for mode, budget in sessions:
                t0 = time.monotonic()
                for piece in run_session(args, checkpoint, policy, mode, budget, args.load_cores,
                                         work, tag=str(r)):
                    pieces.setdefault((mode, budget, piece['load_cores']), []).append(piece)
                if not args.quiet:
                    name = mode if mode != 'fixed' else f'budget {budget:g}'
                    print(f'round {r + 1}/{args.rounds}: {name}, loads {args.load_cores} '
                          f'({time.monotonic() - t0:.0f} s)', flush=True)
        results, fixed, details = [], [], []
        for (mode, budget, n), parts in pieces.items():
            out = summarise(parts, args.rate, args.deadline_ms, mode=mode, load_cores=n)
            res, det = out['result'], out['details']
            if mode == 'fixed':
                res = {'budget': budget, **res}
                det['budget'] = budget
                fixed.append(res)
            else:
                results.append(res)
            details.append(det)
        order = {m: i for i, m in enumerate(MODES)}
        results.sort(key=lambda r: (r['load_cores'], order[r['mode']]))
        fixed.sort(key=lambda r: (r['load_cores'], r['budget']))
        machine['loadavg_at_end'] = [round(v, 2) for v in os.getloadavg()]
        return {'deadline_ms': float(args.deadline_ms), 'results': results, 'fixed': fixed,
                'details': details, 'targets': targets(results, fixed), 'machine': machine,
                'settings': {'seconds': args.seconds, 'rounds': args.rounds, 'rate_hz': args.rate,
                             'policy': policy,
                             'checkpoint': str(checkpoint), 'device': args.device,
                             'threads': args.threads or 'rule', 'min_budget': args.min_budget,
                             'deadline_via': args.deadline_via}}


def contention_table(out: Dict[str, Any]) -> str:
    """The result's cases (budget modes, then fixed budgets) and targets as markdown."""
    def cell(v):
        return '-' if v is None else f'{v:g}'
    lines = [f'deadline {out["deadline_ms"]:g} ms; load average '
             f'{out["machine"]["loadavg_at_start"][0]} at start', '',
             '| mode | load cores | p50 ms | p95 ms | p99 ms | misses % | accuracy | mean budget |',
             '|---|---|---|---|---|---|---|---|']
    rows = out['results'] + [{**f, 'mode': f'budget {f["budget"]:g}'} for f in out['fixed']]
    for r in rows:
        lines.append(f'| {r["mode"]} | {r["load_cores"]} | {r["latency_ms_p50"]:.1f} '
                     f'| {r["latency_ms_p95"]:.1f} | {r["latency_ms_p99"]:.1f} '
                     f'| {r["deadline_miss_pct"]:.1f} | {cell(r["accuracy"])} | {cell(r["mean_budget"])} |')
    gaps = out['targets'].get('deadline_vs_best_fixed_meeting_deadline', {})
    scalars = {k: v for k, v in out['targets'].items() if k != 'deadline_vs_best_fixed_meeting_deadline'}
    if scalars:
        lines += [''] + [f'- {k}: {v}' for k, v in scalars.items()]
    if gaps:
        lines += ['', '| load cores | deadline accuracy | best fixed budget meeting the deadline | its accuracy |',
                  '|---|---|---|---|']
        lines += [f'| {n} | {g["deadline_accuracy"]:g} | {g["best_fixed_budget"]:g} | {g["best_fixed_accuracy"]:g} |'
                  for n, g in gaps.items()]
    return '\n'.join(lines)


def _list(kind):
    def parse(text: str):
        return [kind(v) for v in text.split(',') if v.strip()]
    return parse


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='admn bench contention', description=__doc__.splitlines()[0])
    p.add_argument('--json', required=True, help='write the results here (and a .md table beside it)')
    p.add_argument('--seconds', type=float, default=10.0,
                   help='measured seconds per case and round')
    p.add_argument('--rounds', type=int, default=2,
                   help='rounds over every case (a graph per mode and round; the loads step inside it)')
    p.add_argument('--rate', type=float, default=20.0, help='source rate (Hz)')
    p.add_argument('--deadline-ms', type=float, default=40.0)
    p.add_argument('--modes', type=_list(str), default=list(MODES), help='comma-separated subset '
                   f'of {",".join(MODES)}')
    p.add_argument('--load-cores', type=_list(int), default=list(LOADS),
                   help='comma-separated subset of 0,1,2')
    p.add_argument('--fixed-budgets', type=_list(float), default=[0.25, 0.5, 0.75],
                   help="fixed budgets to compare with ('' = none)")
    p.add_argument('--min-budget', type=float, default=0.25, help='load / deadline modes')
    p.add_argument('--deadline-via', choices=('node', 'budget_manager'), default='node',
                   help='who runs the deadline rule: admn_fusion in-process, or budget_manager')
    p.add_argument('--checkpoint', help='model (default: the trained default, else untrained)')
    p.add_argument('--policy', help='allocation policy (default: admn with a controller, else naive)')
    p.add_argument('--threads', type=int, default=0, help="admn_fusion's threads (0 = its rule)")
    p.add_argument('--device', default='cpu')
    p.add_argument('--dataset-size', type=int, default=200)
    p.add_argument('--startup-timeout', type=float, default=120.0)
    p.add_argument('--save-reports', metavar='DIR',
                   help="keep each case's evaluator report (per-frame timeline) in DIR")
    p.add_argument('--quiet', action='store_true')
    args = p.parse_args(argv)
    bad = [m for m in args.modes if m not in MODES] + [n for n in args.load_cores if n not in LOADS]
    if bad:
        p.error(f'unknown modes or load counts {bad}')
    if not args.seconds > 0 or not args.rate > 0 or not args.deadline_ms > 0 or args.rounds < 1:
        p.error('--seconds, --rate, --deadline-ms and --rounds must be > 0')
    if any(not 0 < b <= 1 for b in args.fixed_budgets):
        p.error('--fixed-budgets must lie in (0, 1]')
    out = run(args)
    table = contention_table(out)
    write_result(out, args.json, table)
    print(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
