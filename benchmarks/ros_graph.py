"""ROS overhead of the node graph: sensor_source -> admn_fusion -> evaluator, one process each.

    admn bench ros [--rate HZ] [--seconds S] --json OUT [--checkpoint model.pt] [--policy P]

The three nodes are started by :class:`admn_ros.bringup.Bringup` (as ``admn bringup`` would) in a
namespace of their own. This process watches ``admn/prediction``; once the first prediction
arrives (the model is loaded and warm) it measures for ``--seconds`` and then stops the graph,
whose evaluator writes its report. Results (``--json`` and a table beside it, ``.md``):

* ``rate_hz``: the source rate asked for; ``received_hz``: predictions per second at the evaluator;
* ``drops``: samples published after the first prediction that never got one (the fusion node
  keeps only the latest set, so a model slower than the input drops; ``fusion_dropped`` counts
  those), ``pending`` the samples still in flight when the graph stopped;
* ``overhead_ms_p50/p95``: source stamp to prediction publish minus the model's own time
  (allocation ``policy_ms`` + forward ``model_ms``): message building, transport, decoding, sync,
  queueing and preprocessing (``preprocess_ms_p50`` of it; ``intake_ms_p50`` is the part until
  the fusion node has the synchronised set: building, publishing, delivering, decoding);
* ``model_ms_p50``, ``policy_ms_p50``, ``latency_ms_p50/p95`` (stamp to publish, all included);
* ``executor``: what the nodes spin (``ADMN_ROS_EXECUTOR``, see
  :func:`admn_ros.node_utils.make_executor`).

Without ``--checkpoint`` the trained default (``admn train defaults``) is used, or, when there is
none, an untrained model of the default architecture (timings are then still meaningful, its
predictions are not). ``--policy`` defaults to ``admn`` for a controller checkpoint, else
``naive``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from admn_ros.benchmarks.report import write_result
from admn_ros.bringup import Bringup
from admn_ros.datasets.synthetic import CLASS_NAMES
from admn_ros.fusion.checkpoint import read_checkpoint, save_untrained
from admn_ros.fusion.config import ModelConfig
from admn_ros.graph import GraphSpec, NodeSpec
from admn_ros.node_utils import executor_kind, make_executor
from admn_ros.quality_estimators.inference import default_checkpoint as trained_default
from admn_ros.wire import PREDICTION, output_class

KEYS = ('rate_hz', 'received_hz', 'drops', 'overhead_ms_p50', 'overhead_ms_p95', 'model_ms_p50')


def bench_graph() -> GraphSpec:
    """The three-node graph (no parameter file: everything comes from :func:`overrides`)."""
    return GraphSpec(
        name='ros_bench', description='sensor_source -> admn_fusion -> evaluator (benchmark)',
        nodes=(NodeSpec('sensor_source', 'sensor_source'), NodeSpec('admn_fusion', 'admn_fusion'),
               NodeSpec('evaluator', 'evaluator')))


def default_checkpoint(out_dir: Path) -> Path:
    """The trained synthetic default, else an untrained default-architecture model in out_dir."""
    try:
        return trained_default('synthetic')
    except FileNotFoundError:
        print('no trained default (admn train defaults): timing an untrained model of the '
              'default architecture', file=sys.stderr)
        return save_untrained(out_dir / 'untrained.pt', ModelConfig(num_classes=len(CLASS_NAMES)),
                              dataset='synthetic', class_names=CLASS_NAMES)


def has_controller(path: Path) -> bool:
    return 'controller_state' in read_checkpoint(path).get('extra', {})


def overrides(args, checkpoint: Path, policy: str, report: Path) -> Dict[str, Dict]:
    return {
        'sensor_source': {'source': args.source, 'dataset_size': args.dataset_size,
                          'rate_hz': float(args.rate), 'loop': True},
        'admn_fusion': {'model_path': str(checkpoint), 'policy': policy,
                        'budget': float(args.budget), 'device': args.device},
        'evaluator': {'report_path': str(report), 'drop_after_s': 1.0},
    }


def run(args) -> Dict:
    with tempfile.TemporaryDirectory(prefix='admn_bench_ros_') as work:  # report, untrained model
        return _run(args, Path(work))


def _run(args, work: Path) -> Dict:
    import rclpy   # only when the graph runs: the core imports without ROS

    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(work)
    policy = args.policy or ('admn' if has_controller(checkpoint) else 'naive')
    report = work / 'report.json'
    namespace = f'admn_bench_{os.getpid()}'
    log: List[str] = []

    def sink(line: str) -> None:
        log.append(line)
        if not args.quiet:
            print(line, flush=True)

    bringup = Bringup(bench_graph(), overrides(args, checkpoint, policy, report),
                      namespace=namespace, sink=sink)
    # The probe must discover the nodes the way bringup configures them.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node('bench_probe', namespace=namespace, context=ctx)
    executor = make_executor(context=ctx)
    executor.add_node(node)
    first: List[float] = []
    watch = node.create_subscription(output_class(PREDICTION), PREDICTION,
                                     lambda _: first or first.append(time.monotonic()), 10)
    try:
        bringup.start()
        deadline = time.monotonic() + args.startup_timeout
        while not first and time.monotonic() < deadline and not bringup.all_exited():
            executor.spin_once(timeout_sec=0.1)
        if not first:
            raise RuntimeError(f'no prediction within {args.startup_timeout} s; graph log:\n'
                               + '\n'.join(log[-40:]))
        node.destroy_subscription(watch)  # measuring: this process should cost the graph nothing
        end = first[0] + args.seconds
        while time.monotonic() < end and not bringup.all_exited():
            executor.spin_once(timeout_sec=0.1)
    finally:
        codes = bringup.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    if not report.is_file():
        raise RuntimeError(f'the evaluator wrote no report (exit codes {codes}); graph log:\n'
                           + '\n'.join(log[-40:]))
    ev = json.loads(report.read_text())
    rnd = (lambda v: None if v is None else round(float(v), 3))
    return {
        'rate_hz': float(args.rate), 'received_hz': rnd(ev['received_hz']),
        'drops': int(ev['drops']), 'overhead_ms_p50': rnd(ev['overhead_ms_p50']),
        'overhead_ms_p95': rnd(ev['overhead_ms_p95']), 'model_ms_p50': rnd(ev['model_ms_p50']),
        'policy_ms_p50': rnd(ev['policy_ms_p50']),
        'preprocess_ms_p50': rnd(ev['preprocess_ms_p50']),
        'intake_ms_p50': rnd(ev['intake_ms_p50']),
        'latency_ms_p50': rnd(ev['latency_ms_p50']), 'latency_ms_p95': rnd(ev['latency_ms_p95']),
        'predictions': ev['predictions'], 'pending': ev['pending_labels'],
        'fusion_dropped': ev['fusion_dropped'], 'accuracy': rnd(ev['accuracy']),
        'mean_gflops': rnd(ev['mean_gflops']), 'seconds': float(args.seconds),
        'checkpoint': str(checkpoint), 'policy': policy, 'budget': float(args.budget),
        'device': args.device, 'executor': executor_kind(),
        'exit_codes': codes,
    }


def ros_graph_table(result: Dict) -> str:
    """The headline numbers as a two-column markdown table."""
    keys = KEYS + ('policy_ms_p50', 'preprocess_ms_p50', 'intake_ms_p50', 'latency_ms_p50',
                   'latency_ms_p95', 'predictions', 'fusion_dropped', 'pending', 'policy', 'budget',
                   'executor')
    return '\n'.join(['| metric | value |', '|---|---|'] + [
        f'| {k} | {"-" if result[k] is None else result[k]} |' for k in keys])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='admn bench ros', description=__doc__.splitlines()[0])
    p.add_argument('--rate', type=float, default=10.0, help='source rate (Hz)')
    p.add_argument('--seconds', type=float, default=10.0, help='measured time after warm-up')
    p.add_argument('--json', required=True, help='write the results here (and a .md table beside it)')
    p.add_argument('--checkpoint', help='model (default: the trained default, else untrained)')
    p.add_argument('--policy', help='allocation policy (default: admn with a controller, else '
                   'naive)')
    p.add_argument('--budget', type=float, default=0.5)
    p.add_argument('--device', default='cpu')
    p.add_argument('--source', default='synthetic', help="sensor_source 'source'")
    p.add_argument('--dataset-size', type=int, default=100)
    p.add_argument('--startup-timeout', type=float, default=120.0)
    p.add_argument('--quiet', action='store_true', help="do not echo the nodes' output")
    args = p.parse_args(argv)
    if not args.rate > 0 or not args.seconds > 0:
        p.error('--rate and --seconds must be > 0')
    result = run(args)
    table = ros_graph_table(result)
    write_result(result, args.json, table)
    print(table)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
