"""The ``admn`` command-line tool: training, evaluation, data, benchmarks, bringup and the demo.

Each sub-command imports its module lazily so ``admn --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _train_stage1(args) -> int:
    from admn_ros.fusion.stage1 import Stage1Config, train_stage1
    cfg = Stage1Config.from_yaml(args.config)
    if args.device:
        cfg.device = args.device
    if args.epochs is not None:
        cfg.epochs = args.epochs
    path = train_stage1(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f'stage-1 model: {path}')
    return 0


def _train_controller(args) -> int:
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig, train_controller
    cfg = ControllerTrainConfig.from_yaml(args.config)
    if args.device:
        cfg.device = args.device
    if args.epochs is not None:
        cfg.epochs = args.epochs
    path = train_controller(cfg, args.stage1, args.out, resume=args.resume, progress=not args.no_progress)
    print(f'controller: {path}')
    return 0


def _train_defaults(args) -> int:
    from admn_ros.quality_estimators.defaults import ship, train_defaults
    path = train_defaults(args.dataset, device=args.device, progress=not args.no_progress)
    print(f'default for {args.dataset}: {path}')
    if args.ship:
        print(f'shipped as {ship(args.dataset, path)}')
    return 0


def _eval(args) -> int:
    from admn_ros.quality_estimators.evaluate import run_eval_cli
    return run_eval_cli(args)


def _bench_latency(args) -> int:
    from admn_ros.benchmarks.latency import main as bench
    return bench(['--json', args.json] + (['--checkpoint', args.checkpoint] if args.checkpoint else [])
                 + ['--runs', str(args.runs)])


def _bench_ros(args) -> int:
    from admn_ros.benchmarks.ros_graph import main as bench
    return bench(args.extra)


def _bench_generation(args) -> int:
    from admn_ros.benchmarks.generation import main as bench
    return bench(args.extra)


def _data_preview(args) -> int:
    from admn_ros.datasets.preview import write_preview
    for path in write_preview(args.dataset, args.out, n=args.n, seed=args.seed):
        print(path)
    return 0


def _bringup(args) -> int:
    from admn_ros.bringup import main as bringup
    return bringup([args.graph] + args.extra)


def _demo(args) -> int:
    from admn_ros.demo import main as demo
    return demo(args)


def add_train(sub) -> None:
    train = sub.add_parser('train', help='train stage 1 (LayerDrop backbone) or stage 2 (controller)')
    tsub = train.add_subparsers(dest='stage', required=True)
    s1 = tsub.add_parser('stage1', help='multimodal LayerDrop training of the fusion model')
    s2 = tsub.add_parser('controller', help='train the quality-aware layer-allocation controller')
    s2.add_argument('--stage1', required=True, help='stage-1 checkpoint (model.pt)')
    for s, fn in ((s1, _train_stage1), (s2, _train_controller)):
        s.add_argument('--config', help='YAML config (defaults when omitted)')
        s.add_argument('--out', required=True, help='output directory (checkpoints + metrics.csv)')
        s.add_argument('--resume', action='store_true', help='continue from OUT/last.pt')
        s.add_argument('--device', help='auto, cpu, cuda or cuda:N (overrides the config)')
        s.add_argument('--epochs', type=int, help='override the number of epochs')
        s.add_argument('--no-progress', action='store_true', help='no progress bar')
        s.set_defaults(func=fn)

    dflt = tsub.add_parser('defaults', help='stage 1 + controller with the shipped configs -> the eval default')
    dflt.add_argument('--dataset', default='synthetic', choices=['synthetic', 'avdigits'])
    dflt.add_argument('--device', default='auto')
    dflt.add_argument('--no-progress', action='store_true')
    dflt.add_argument('--ship', action='store_true',
                      help='also copy it into the package (admn_ros/models/, half precision, SHA256SUMS)')
    dflt.set_defaults(func=_train_defaults)


def add_eval(sub) -> None:
    ev = sub.add_parser('eval', help='accuracy vs budget for allocation policies on a corrupted test set')
    ev.add_argument('--checkpoint', help='controller or stage-1 checkpoint (default: the dataset default)')
    ev.add_argument('--dataset', help="synthetic, avdigits or folder:PATH (default: the checkpoint's own dataset)")
    ev.add_argument('--budgets', default='0.25,0.33,0.5,0.75,1.0')
    ev.add_argument('--budget-unit', default='layers', choices=['layers', 'flops'])
    ev.add_argument('--policies', default='admn,naive,every_other,random,heuristic,full',
                    help='comma-separated; oracle_split (best fixed split per condition, chosen on the '
                         'validation split) needs --conditions')
    ev.add_argument('--conditions', metavar='PRESET|FILE',
                    help='evaluate by condition: single, pairs, recorded, or a YAML list of '
                         '{name, corrupted: [{modality, type, severity}]}')
    ev.add_argument('--oracle-val-size', type=int, default=300,
                    help='validation samples per condition for oracle_split (default 300)')
    ev.add_argument('--size', type=int, help='test-set size (default: the whole split)')
    ev.add_argument('--seed', type=int, default=0)
    ev.add_argument('--clean', action='store_true', help='evaluate on the clean test set (no corruption mix)')
    ev.add_argument('--device', default='auto')
    ev.add_argument('--json', help='write results JSON here')
    ev.add_argument('--plot', help='write a PNG of accuracy against GFLOPs (by condition: accuracy per '
                                   'condition) here')
    ev.add_argument('--allocation-plot', help='write a PNG of mean layers per modality vs severity (by '
                                              'condition: a heat map per condition) here')
    ev.set_defaults(func=_eval)


def add_data(sub) -> None:
    data = sub.add_parser('data', help='dataset tools')
    dsub = data.add_subparsers(dest='data_command', required=True)
    pv = dsub.add_parser('preview', help='PNG grid of clean and corrupted samples')
    pv.add_argument('--dataset', default='synthetic')
    pv.add_argument('--out', required=True)
    pv.add_argument('--n', type=int, default=8)
    pv.add_argument('--seed', type=int, default=0)
    pv.set_defaults(func=_data_preview)


def add_bench(sub) -> None:
    bench = sub.add_parser('bench', help='benchmarks (JSON + table)')
    bsub = bench.add_subparsers(dest='bench', required=True)
    lat = bsub.add_parser('latency', help='batch-1 latency and batched throughput vs budget')
    lat.add_argument('--checkpoint')
    lat.add_argument('--json', required=True)
    lat.add_argument('--runs', type=int, default=50)
    lat.set_defaults(func=_bench_latency)
    # These two hand every option (and --help) to the benchmark's own parser: one definition each.
    for name, help_text, func in (
            ('ros', 'the node graph across processes at a given input rate', _bench_ros),
            ('generation', 'synthetic-world generation speed: samples/s and per-stage ms',
             _bench_generation)):
        bsub.add_parser(name, help=help_text, add_help=False).set_defaults(
            func=func, passthrough=True, extra=[])


def add_bringup(sub) -> None:
    up = sub.add_parser('bringup', help='start a node graph as processes (no ros2 launch needed)')
    up.add_argument('graph', help='admn, replay_eval or noise_experiment')
    up.add_argument('extra', nargs=argparse.REMAINDER, help='graph options, e.g. bag:=PATH')
    up.set_defaults(func=_bringup)


def add_demo(sub) -> None:
    demo = sub.add_parser('demo', help='the main job: a scripted scenario through the node graph, '
                                       'with a live status and a report in words')
    demo.add_argument('--out', default='runs/demo')
    demo.add_argument('--scenario', help='scenario YAML (default: config/scenarios/demo.yaml)')
    demo.add_argument('--duration', type=float,
                      help='play the scenario in this many seconds (its phases scaled alike)')
    demo.add_argument('--checkpoint', help='model (default: the shipped synthetic default)')
    demo.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N for the fusion node')
    demo.add_argument('--no-offline', action='store_true',
                      help='skip the offline table (each sensor destroyed alone)')
    demo.add_argument('--quick', action='store_true',
                      help='smaller offline test set (and a tiny model when none is trained)')
    demo.set_defaults(func=_demo)


# One function per command group; a new group adds its function here.
COMMAND_GROUPS = (add_train, add_eval, add_data, add_bench, add_bringup, add_demo)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='admn', description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest='command', required=True)
    for add in COMMAND_GROUPS:
        add(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if not getattr(args, 'passthrough', False):
            parser.error(f'unrecognized arguments: {" ".join(unknown)}')
        args.extra = unknown
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Clear one-line errors for user mistakes; tracebacks only with ADMN_DEBUG=1.
        import os
        if os.environ.get('ADMN_DEBUG'):
            raise
        print(f'admn: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
