"""The ``admn`` command-line tool: training, evaluation, data, benchmarks, bringup and the demo.

Each sub-command imports its module lazily so ``admn --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def _train_stage1(args) -> int:
    from admn_ros.fusion.stage1 import Stage1Config, train_stage1
    cfg = Stage1Config.from_yaml(args.config)
    if args.device:
        cfg.device = args.device
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.fine_tune_from:
        cfg.fine_tune_from = args.fine_tune_from
    if args.init:
        cfg.init = args.init
    for spec in args.init_encoder or ():
        modality, sep, path = spec.partition('=')
        if not sep or not path:
            raise ValueError(f'--init-encoder {spec}: expected MODALITY=FILE, e.g. rgb=vit_tiny.pth')
        cfg.init_encoders[modality] = path
    if args.freeze_blocks is not None:
        cfg.freeze_blocks = args.freeze_blocks
    if args.prune_to is not None:
        from admn_ros.fusion.prune import layerdrop_for_keep
        cfg.layerdrop = layerdrop_for_keep(args.prune_to, cfg.model.depth, cfg.layerdrop)
    _small_data_options(args, cfg)
    path = train_stage1(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f'stage-1 model: {path}')
    _repeat_verdict(path)
    return 0


def _small_data_options(args, cfg) -> None:
    """``--seed`` (every training command), ``--no-search`` (stage 1)."""
    if getattr(args, 'seed', None) is not None:
        cfg.seed = args.seed
        if hasattr(cfg, 'data'):
            cfg.data.seed = args.seed   # the training subset too, as a config's seed would not
    if getattr(args, 'no_search', False):
        cfg.search = False


def _repeat_verdict(path) -> None:
    """A stage-1 run at chance or below its linear baseline says so as the command's last line."""
    import json
    scores = Path(path).parent / 'baseline.json'
    if scores.is_file():
        line = json.loads(scores.read_text()).get('verdict')
        if line:
            print(line)


def _train_controller(args) -> int:
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig, train_controller
    cfg = ControllerTrainConfig.from_yaml(args.config)
    if args.device:
        cfg.device = args.device
    if args.epochs is not None:
        cfg.epochs = args.epochs
    _small_data_options(args, cfg)
    path = train_controller(cfg, args.stage1, args.out, resume=args.resume, progress=not args.no_progress,
                            force=args.force)
    print(f'controller: {path}')
    return 0


def _train_defaults(args) -> int:
    from admn_ros.quality_estimators.defaults import ship, train_defaults
    path = train_defaults(args.dataset, device=args.device, progress=not args.no_progress,
                          seed=args.seed, force=args.force)
    print(f'default for {args.dataset}: {path}')
    if args.ship:
        print(f'shipped as {ship(args.dataset, path)}')
    return 0


def _eval(args) -> int:
    from admn_ros.fusion.threads import apply_threads, choose_threads
    apply_threads(choose_threads('throughput'))
    if args.folds:
        from admn_ros.quality_estimators.by_source import run_by_source_cli
        return run_by_source_cli(args)
    from admn_ros.quality_estimators.evaluate import run_eval_cli
    return run_eval_cli(args)


def _bench_latency(args) -> int:
    from admn_ros.benchmarks.latency import main as bench
    return bench(['--json', args.json] + (['--checkpoint', args.checkpoint] if args.checkpoint else [])
                 + ['--runs', str(args.runs), '--threads', str(args.threads or 0)])


def _bench_contention(args) -> int:
    from admn_ros.benchmarks.contention import main as bench
    return bench(args.extra)


def add_threads_option(parser) -> None:
    """``--threads N``: torch intra-op threads for the whole command, instead of the rule in
    admn_ros.fusion.threads (``main`` puts it in ADMN_THREADS, which the rule reads)."""
    parser.add_argument('--threads', type=int, metavar='N',
                        help='torch intra-op threads (default: chosen from the cores this process '
                             'may use, see docs/results.md)')


def add_seed_option(parser) -> None:
    """``--seed N`` on a training command: the training seed and the data subset's."""
    parser.add_argument('--seed', type=int, metavar='N',
                        help='random seed of training and of the data subset (overrides the config)')


def _bench_ros(args) -> int:
    from admn_ros.benchmarks.ros_graph import main as bench
    return bench(args.extra)


def _bench_generation(args) -> int:
    from admn_ros.benchmarks.generation import main as bench
    return bench(args.extra)


def _data_preview(args) -> int:
    from admn_ros.datasets.preview import write_preview
    out = args.out_dir or args.out
    if not out:
        raise ValueError('admn data preview: give --out-dir DIR (the folder the PNG grids go into)')
    if args.out and not args.out_dir:
        print(f'note: --out is now --out-dir (a folder: {out}/<dataset>_clean.png, ..._corrupted.png)')
    if Path(out).suffix.lower() in ('.png', '.jpg', '.jpeg', '.pdf', '.svg'):
        raise ValueError(f'--out-dir {out}: names a file, but the previews are two PNGs written into a '
                         'folder; give a folder, e.g. --out-dir runs/preview')
    for path in write_preview(args.dataset, out, n=args.n, seed=args.seed):
        print(path)
    return 0


def _data_from_bag(args) -> int:
    from admn_ros.datasets.from_bag import import_bag
    report = import_bag(args.bag, args.out, **_import_options(args))
    print(report.describe())
    return 0


def _import_options(args) -> dict:
    """The keyword arguments of ``import_bag`` from :func:`add_import_options`' flags."""
    from admn_ros.datasets.from_bag import parse_splits
    topics = {k: getattr(args, k) for k in ('rgb', 'depth', 'audio', 'audio_info', 'label', 'corruption')
              if getattr(args, k)}
    return dict(topics=topics, rate_hz=args.rate, trigger=args.trigger,
                max_gap_s=args.max_gap, labels_csv=args.labels_csv, conditions_csv=args.conditions_csv,
                csv_time=args.csv_time, classes=args.classes.split(',') if args.classes else None,
                split=args.split, splits=parse_splits(args.splits) if args.splits else None,
                image_size=args.image_size or None, clip_seconds=args.clip_seconds,
                depth_format=args.depth_format,
                modalities=args.modalities.split(',') if args.modalities else None)


def _data_check(args) -> int:
    import tempfile
    from admn_ros.datasets.check import check_dataset
    with tempfile.TemporaryDirectory(prefix='admn_check_') as work:
        report, imported = check_dataset(args.dataset, work=Path(work) / 'imported',
                                         import_options=_import_options(args))
        if imported is not None:
            print(imported.describe())
        print(report.describe())
    return 0 if report.ok else 1


def add_data_check(dsub) -> None:
    ck = dsub.add_parser('check', help='counts per split, classes, modalities, tags, image sizes, depth '
                                       'validity, audio rates; exit 1 with the reasons when inconsistent')
    ck.add_argument('dataset', metavar='folder:PATH|BAG',
                    help='a folder dataset, or a bag (imported with the options below first)')
    add_import_options(ck)
    ck.set_defaults(func=_data_check)


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
        add_threads_option(s)
        add_seed_option(s)
        s.set_defaults(func=fn)
    s1.add_argument('--no-search', action='store_true',
                    help='below 1000 training samples, keep the recipe\'s freeze_blocks and lr instead '
                         'of choosing them on validation (search: false)')
    s2.add_argument('--force', action='store_true',
                    help='train on a stage-1 model that ended at chance (refused otherwise)')
    s1.add_argument('--fine-tune-from', metavar='CHECKPOINT',
                    help='continue training this whole model, head included (same classes)')
    s1.add_argument('--init', metavar='default|CHECKPOINT',
                    help='start the encoders the dataset shares with this checkpoint (a path, '
                         'default / synthetic / avdigits for a shipped model, or encoders for the '
                         'shipped pretrained encoders) from its weights, with a new head for your '
                         'classes (docs/your_data.md)')
    s1.add_argument('--init-encoder', action='append', metavar='MODALITY=FILE',
                    help="start one encoder from a ViT state dict in timm's layout (repeatable)")
    s1.add_argument('--freeze-blocks', type=int, metavar='N',
                    help='with --init: keep the lowest N blocks of the copied encoders fixed')
    s1.add_argument('--prune-to', type=int, metavar='R',
                    help="LayerDrop's preset for pruning to R blocks: drop rate 1 - R/depth")

    dflt = tsub.add_parser('defaults', help='stage 1 + controller with the shipped configs -> the eval default')
    dflt.add_argument('--dataset', default='synthetic', choices=['synthetic', 'avdigits'])
    dflt.add_argument('--device', default='auto')
    dflt.add_argument('--no-progress', action='store_true')
    dflt.add_argument('--ship', action='store_true',
                      help='also copy it into the package (admn_ros/models/, half precision, SHA256SUMS)')
    add_threads_option(dflt)
    add_seed_option(dflt)
    dflt.add_argument('--force', action='store_true',
                      help='train the controller even on a stage 1 that ended at chance')
    dflt.set_defaults(func=_train_defaults)


def _pretrain(args) -> int:
    from admn_ros.fusion.pretrain import PretrainConfig, pretrain
    cfg = PretrainConfig.from_yaml(args.config)
    if args.data:
        cfg.data = tuple(args.data)
    for key in ('init', 'epochs', 'batch_size', 'lr', 'seed', 'device', 'checkpoint_every'):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    if args.modalities:
        cfg.modalities = tuple(args.modalities.split(','))
    path = pretrain(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f'pretrained encoders: {path} (use: admn train stage1 --init {path})')
    if args.ship:
        from admn_ros.fusion.pretrained import SHIPPED_ENCODERS
        from admn_ros.quality_estimators.defaults import ship
        print(f'shipped as {ship(SHIPPED_ENCODERS["encoders"], path)} (--init encoders)')
    return 0


def add_pretrain(sub) -> None:
    """``admn pretrain``: masked-autoencoder pretraining on unlabelled recordings (docs/model.md)."""
    pt = sub.add_parser('pretrain', help='self-supervised (masked-autoencoder) pretraining of the '
                                         'encoders on unlabelled frames and clips, for --init')
    pt.add_argument('--data', action='append', metavar='SPEC',
                    help='folder:PATH (every split but val and test), a rosbag2 (imported without '
                         'labels), avdigits-unlabelled or synthetic; repeatable')
    pt.add_argument('--init', metavar='default|encoders|CHECKPOINT|none',
                    help='start the encoders from this model (default: the shipped synthetic one); '
                         'none: random weights with the --config model')
    pt.add_argument('--config', help='pretraining YAML (fusion/pretrain.py PretrainConfig)')
    pt.add_argument('--out', required=True, help='output directory (encoders.pt, last.pt, metrics.csv)')
    pt.add_argument('--modalities',
                    help='only these encoders, comma-separated (default: every one with data)')
    pt.add_argument('--epochs', type=int)
    pt.add_argument('--batch-size', type=int)
    pt.add_argument('--lr', type=float)
    add_seed_option(pt)
    pt.add_argument('--checkpoint-every', type=int, metavar='STEPS', help='write last.pt this often')
    pt.add_argument('--resume', action='store_true', help='continue from OUT/last.pt')
    pt.add_argument('--device', help='auto, cpu, cuda or cuda:N')
    pt.add_argument('--no-progress', action='store_true', help='no progress bar')
    pt.add_argument('--ship', action='store_true', help='also copy the encoders into the package as '
                    'the shipped pretrained encoders (--init encoders; half precision, SHA256SUMS)')
    add_threads_option(pt)
    pt.set_defaults(func=_pretrain)


def add_eval(sub) -> None:
    ev = sub.add_parser('eval', help='accuracy vs budget for allocation policies on a corrupted test set')
    ev.add_argument('--checkpoint', help='controller or stage-1 checkpoint (default: the dataset default)')
    ev.add_argument('--dataset', help="synthetic, avdigits or folder:PATH (default: the checkpoint's own dataset)")
    ev.add_argument('--budgets', default='0.25,0.33,0.5,0.75,1.0')
    ev.add_argument('--budget-unit', default='layers', choices=['layers', 'flops'])
    ev.add_argument('--policies', default='admn,naive,every_other,random,heuristic,full',
                    help='comma-separated; oracle_split (best fixed split per condition, chosen on the '
                         'validation split) needs --conditions; linear: the stage-1 run\'s logistic '
                         'regression on pooled inputs (no layers)')
    ev.add_argument('--conditions', metavar='PRESET|FILE',
                    help='evaluate by condition: single, pairs, recorded, or a YAML list of '
                         '{name, corrupted: [{modality, type, severity}]}')
    ev.add_argument('--oracle-val-size', type=int, default=300,
                    help='validation samples per condition for oracle_split (default 300)')
    ev.add_argument('--size', type=int, help='test-set size (default: the whole split)')
    ev.add_argument('--seed', type=int, default=0)
    ev.add_argument('--clean', action='store_true', help='evaluate on the clean test set (no corruption mix)')
    ev.add_argument('--device', default='auto')
    add_threads_option(ev)
    ev.add_argument('--allow-missing-modalities', action='store_true',
                    help='evaluate even when the dataset lacks some of the model\'s modalities')
    ev.add_argument('--json', help='write results JSON here')
    ev.add_argument('--plot', help='write a PNG of accuracy against GFLOPs (by condition: accuracy per '
                                   'condition) here')
    ev.add_argument('--allocation-plot', help='write a PNG of mean layers per modality vs severity (by '
                                              'condition: a heat map per condition) here')
    add_fold_options(ev)
    ev.set_defaults(func=_eval)


def add_fold_options(ev) -> None:
    """``admn eval --folds by-source``: leave-one-source-out training and scoring (docs/model.md)."""
    folds = ev.add_argument_group('leave-one-source-out (--folds by-source)')
    folds.add_argument('--folds', choices=['by-source'],
                       help='per source the dataset names (AV-digits: speakers), train stage 1 and the '
                            'controller on the others and score the held-out one')
    folds.add_argument('--sources', help='comma-separated sources to hold out (default: each in turn)')
    folds.add_argument('--epochs', type=int, help="stage-1 epochs (default: the dataset's shipped config)")
    folds.add_argument('--controller-epochs', type=int, help="controller epochs (default: its shipped config)")
    folds.add_argument('--no-controller', action='store_true', help='stage 1 only (no admn row)')
    folds.add_argument('--stage1-config', help='stage-1 YAML (default config/training/stage1_<dataset>.yaml)')
    folds.add_argument('--controller-config',
                       help='controller YAML (default config/training/controller_<dataset>.yaml)')
    folds.add_argument('--force', action='store_true',
                       help='train the controller even on a fold whose stage 1 ended at chance')
    folds.add_argument('--out', default='runs/by_source',
                       help='run folders per fold and by_source.json/.md (unless --json)')


def add_import_options(parser) -> None:
    """The options of a bag's import (``data from-bag``, and ``data check`` given a bag)."""
    when = parser.add_mutually_exclusive_group()
    when.add_argument('--rate', type=float, metavar='HZ', help='a sample every 1/HZ s '
                      '(default: every frame of the first image stream)')
    when.add_argument('--trigger', metavar='TOPIC', help='a sample at each message of TOPIC')
    parser.add_argument('--max-gap', type=float, metavar='S',
                        help='furthest a stream may be from the sample time (default: half a frame period)')
    parser.add_argument('--labels-csv', metavar='FILE', help='start,end,label rows (seconds); '
                        'default: the label topic (--label)')
    parser.add_argument('--conditions-csv', metavar='FILE',
                        help='start,end,modality,type,severity rows; default: the corruption topic '
                             '(--corruption) if recorded')
    parser.add_argument('--csv-time', default='bag', choices=['bag', 'absolute'],
                        help="CSV times in seconds from the bag's start, or UNIX seconds")
    parser.add_argument('--classes', help='class names in index order, comma-separated '
                        '(default: from the bag, or the CSV labels sorted)')
    parser.add_argument('--split', default='train', help='write every sample to this split')
    parser.add_argument('--splits', metavar='NAME=F,...', help='cut each class in time order, e.g. '
                        'train=0.7,val=0.15,test=0.15')
    parser.add_argument('--image-size', type=int, default=64, help="resize on load to the model's input "
                        'size (0 = keep full frames)')
    parser.add_argument('--clip-seconds', type=float, default=1.0, help='audio window per sample')
    parser.add_argument('--depth-format', default='png', choices=['png', 'npy'])
    parser.add_argument('--modalities', help='only these, comma-separated (default: every recorded one)')
    for stream in ('rgb', 'depth', 'audio', 'audio_info', 'label', 'corruption'):   # as `admn bag eval`
        parser.add_argument(f"--{stream.replace('_', '-')}", dest=stream, metavar='TOPIC',
                            help=f"this bag's {stream.replace('_', ' ')} topic")


def add_data(sub) -> None:
    data = sub.add_parser('data', help='dataset tools')
    dsub = data.add_subparsers(dest='data_command', required=True)
    pv = dsub.add_parser('preview', help='PNG grids of clean and corrupted samples, into a folder')
    pv.add_argument('--dataset', default='synthetic')
    pv.add_argument('--out-dir', metavar='DIR',
                    help='folder to write <dataset>_clean.png and <dataset>_corrupted.png into')
    pv.add_argument('--out', metavar='DIR', help=argparse.SUPPRESS)   # the old spelling of --out-dir
    pv.add_argument('--n', type=int, default=8)
    pv.add_argument('--seed', type=int, default=0)
    pv.set_defaults(func=_data_preview)
    fb = dsub.add_parser('from-bag', help='a recorded bag -> the folder format (docs/your_data.md)')
    fb.add_argument('bag', help='rosbag2 directory')
    fb.add_argument('--out', required=True, help='dataset root to write (classes.txt, <split>/...)')
    add_import_options(fb)
    fb.set_defaults(func=_data_from_bag)
    add_data_check(dsub)


def add_bench(sub) -> None:
    bench = sub.add_parser('bench', help='benchmarks (JSON + table)')
    bsub = bench.add_subparsers(dest='bench', required=True)
    lat = bsub.add_parser('latency', help='batch-1 latency and batched throughput vs budget')
    lat.add_argument('--checkpoint')
    lat.add_argument('--json', required=True)
    lat.add_argument('--runs', type=int, default=50)
    add_threads_option(lat)
    lat.set_defaults(func=_bench_latency)
    # These hand every option (and --help) to the benchmark's own parser: one definition each.
    for name, help_text, func in (
            ('ros', 'the node graph across processes at a given input rate', _bench_ros),
            ('generation', 'synthetic-world generation speed: samples/s and per-stage ms',
             _bench_generation),
            ('contention', 'latency, deadline misses and accuracy while other processes take '
                           '0, 1 or 2 cores', _bench_contention)):
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


def _prune(args) -> int:
    from admn_ros.fusion.prune import export_pruned
    info = export_pruned(_checkpoint_or_default(args), args.out, args.keep, args.strategy,
                         dataset=args.dataset, val_size=args.val_size, corrupt=not args.clean_val,
                         progress=print if args.verbose else None)
    print(f'pruned model ({args.strategy}, {args.keep} blocks per modality): {args.out}')
    for m, blocks in info['kept'].items():
        print(f'  {m}: kept blocks {blocks}')
    return 0


def _collapse(args) -> int:
    from admn_ros.fusion.collapse import collapse_checkpoint
    info = collapse_checkpoint(_checkpoint_or_default(args), args.out, blocks=args.blocks,
                               rounds=args.rounds, epochs=args.epochs, threshold=args.threshold,
                               lr=args.lr, pull=args.pull, train_size=args.train_size, device=args.device,
                               progress=not args.no_progress)
    print(f'collapsed model: {args.out}')
    for m, blocks in info['collapsed'].items():
        print(f'  {m}: collapsed blocks {blocks}')
    return 0


def _robustness(args) -> int:
    from admn_ros.benchmarks.compression import robustness_cli
    return robustness_cli(args, _checkpoint_or_default(args))


def _checkpoint_or_default(args) -> str:
    if args.checkpoint:
        return args.checkpoint
    from admn_ros.quality_estimators.inference import default_checkpoint
    return str(default_checkpoint(getattr(args, 'dataset', None) or 'synthetic'))


def add_compress(sub) -> None:
    """LayerDrop pruning, LayerCollapse and LayerShuffle's robustness evaluation (docs/model.md)."""
    pr = sub.add_parser('prune', help='export a static model of N blocks per modality (LayerDrop pruning)')
    pr.add_argument('--checkpoint', help='model to prune (default: the dataset default)')
    pr.add_argument('--keep', type=int, required=True, help='blocks kept per modality')
    pr.add_argument('--strategy', default='every_other', choices=['every_other', 'data_driven'])
    pr.add_argument('--out', required=True, help='pruned checkpoint to write')
    pr.add_argument('--dataset', help="validation data for data_driven (default: the checkpoint's)")
    pr.add_argument('--val-size', type=int, default=300, help='validation samples for data_driven')
    pr.add_argument('--clean-val', action='store_true',
                    help='choose on clean validation data (default: the standard corruption mix)')
    pr.add_argument('--verbose', action='store_true', help='print each greedy step')
    pr.set_defaults(func=_prune)

    co = sub.add_parser('collapse', help='LayerCollapse: fine-tune PReLU slopes toward 1 in the last '
                                         'blocks and merge their MLPs into one linear layer')
    co.add_argument('--checkpoint', help='model to collapse (default: the dataset default)')
    co.add_argument('--dataset', help='which default model when --checkpoint is omitted')
    co.add_argument('--out', required=True, help='collapsed checkpoint to write')
    co.add_argument('--blocks', type=int, default=4, help='last blocks per encoder made collapsible')
    co.add_argument('--rounds', type=int, default=2, help='rounds, from the last blocks backwards')
    co.add_argument('--epochs', type=int, default=1,
                    help='fine-tuning epochs per round (0: collapse without training)')
    co.add_argument('--threshold', type=float, default=0.05, help='collapse where |alpha - 1| < this')
    co.add_argument('--lr', type=float, default=3e-4)
    co.add_argument('--pull', type=float, default=200.0, help='weight of the (alpha - 1)^2 regulariser')
    co.add_argument('--train-size', type=int, help='training samples per round (default: the config)')
    co.add_argument('--device', default='auto')
    co.add_argument('--no-progress', action='store_true')
    co.set_defaults(func=_collapse)

    ro = sub.add_parser('robustness', help='accuracy in natural order, under random block orders '
                                           'and under random block failure (LayerShuffle)')
    ro.add_argument('--checkpoint', help='model (default: the dataset default)')
    ro.add_argument('--dataset', help="test data (default: the checkpoint's)")
    ro.add_argument('--orders', type=int, default=5, help='random orders / fault draws to average')
    ro.add_argument('--fault-rate', type=float, default=0.25, help='probability that a block fails')
    ro.add_argument('--size', type=int, help='test-set size (default: the whole split)')
    ro.add_argument('--clean', action='store_true', help='clean test set (default: the standard mix)')
    ro.add_argument('--seed', type=int, default=0)
    ro.add_argument('--device', default='auto')
    ro.add_argument('--json', help='write the results here')
    ro.set_defaults(func=_robustness)


def _noise_sweep(args) -> int:
    from admn_ros.quality_estimators.sweep import run_sweep_cli
    route = None
    if args.through_ros:
        from admn_ros.sweep_ros import ros_route as route
    return run_sweep_cli(args, route=route)


def add_experiment(sub) -> None:
    ex = sub.add_parser('experiment', help='experiments: noise-injection sweeps')
    esub = ex.add_subparsers(dest='experiment', required=True)
    ns = esub.add_parser('noise-sweep', help='modality x corruption x severity x budget x policy on a fixed '
                                             'seeded test set: one CSV row per cell, plots')
    ns.add_argument('--config', required=True, help='sweep YAML (see config/experiments/)')
    ns.add_argument('--out', help='output directory (default: runs/sweeps/<config name>)')
    ns.add_argument('--resume', action='store_true', help='skip the cells already in OUT/sweep.csv')
    ns.add_argument('--overwrite', action='store_true', help='start again where OUT holds a sweep')
    ns.add_argument('--through-ros', action='store_true',
                    help='score each cell through the replay_eval node graph (slow) instead of offline')
    ns.add_argument('--no-progress', action='store_true', help='no progress bar')
    ns.set_defaults(func=_noise_sweep)


def _bag(args) -> int:
    from admn_ros import bag_tools
    return {'record': bag_tools.cli_record, 'info': bag_tools.cli_info,
            'eval': bag_tools.cli_eval}[args.bag_command](args)


def add_bag(sub) -> None:
    bag = sub.add_parser('bag', help='record a dataset as a rosbag2, list a bag, score a bag '
                                     'offline or through the nodes')
    bsub = bag.add_subparsers(dest='bag_command', required=True)
    rec = bsub.add_parser('record', help='dataset samples with labels and applied corruption as a bag')
    rec.add_argument('--dataset', required=True, help='synthetic, avdigits or folder:PATH')
    rec.add_argument('--out', required=True, help='bag directory to create')
    rec.add_argument('--schedule', help='corruption schedule YAML (levels over time)')
    rec.add_argument('--mix', default='clean', choices=['clean', 'standard'],
                     help="without --schedule: clean, or the seeded corruption mix of 'admn eval'")
    rec.add_argument('--duration', type=float, default=10.0, help='seconds (default 10)')
    rec.add_argument('--rate', type=float, default=10.0, help='samples per second (default 10)')
    rec.add_argument('--storage', default='mcap', choices=['mcap', 'sqlite3'])
    rec.add_argument('--split', default='test', choices=['train', 'val', 'test'])
    rec.add_argument('--seed', type=int, default=0)
    rec.add_argument('--outputs', action='store_true',
                     help="also record admn_fusion's typed outputs (admn_msgs), from the model "
                          'run over each sample')
    rec.add_argument('--checkpoint', help="with --outputs: model (default: the dataset's shipped one)")
    rec.add_argument('--policy', default='admn', help='with --outputs: allocation policy')
    rec.add_argument('--budget', type=float, default=0.5, help='with --outputs: budget fraction')
    rec.add_argument('--budget-unit', default='layers', choices=['layers', 'flops'])
    info = bsub.add_parser('info', help='topics, types, message counts and duration of a bag')
    info.add_argument('bag')
    info.add_argument('--json', action='store_true', help='print JSON')
    info.add_argument('--no-verify', action='store_true',
                      help='skip recomputing the MCAP checksums (fast on a huge bag; counts only)')
    ev = bsub.add_parser('eval', help='score a bag per (policy, budget): offline, or through the nodes')
    ev.add_argument('bag')
    ev.add_argument('--checkpoint', help="model (default: the shipped default of the bag's dataset)")
    ev.add_argument('--dataset', help='whose default model to use when the bag does not say')
    ev.add_argument('--policies', default='admn', help='comma-separated (default admn)')
    ev.add_argument('--budgets', default='0.5', help='comma-separated fractions (default 0.5)')
    ev.add_argument('--budget-unit', default='layers', choices=['layers', 'flops'])
    ev.add_argument('--out', default='runs/bag_eval', help='report directory (JSON, Markdown, PNG)')
    ev.add_argument('--through-ros', action='store_true',
                    help='replay through bag_player -> admn_fusion -> evaluator, one graph per cell')
    ev.add_argument('--compare', action='store_true',
                    help='with --through-ros: score offline too and report the agreement per frame')
    ev.add_argument('--rate', type=float, default=1.0, help='ROS playback speed factor')
    ev.add_argument('--slop', type=float, help="ROS sync slop in seconds (default: the node's)")
    ev.add_argument('--namespace', default='', help='ROS namespace of the graph')
    ev.add_argument('--verbose', action='store_true', help="print the nodes' output")
    ev.add_argument('--device', default='auto', help='offline: auto, cpu, cuda[:N]; ROS: cpu unless given')
    ev.add_argument('--batch-size', type=int, default=64, help='offline frames per batch')
    ev.add_argument('--allow-missing-modalities', action='store_true',
                    help="offline: score a bag that lacks some of the model's modalities")
    for stream in ('rgb', 'depth', 'audio', 'audio_info', 'label', 'corruption'):
        ev.add_argument(f"--{stream.replace('_', '-')}", dest=stream, metavar='TOPIC',
                        help=f"this bag's {stream.replace('_', ' ')} topic")
    for parser in (rec, info, ev):
        parser.set_defaults(func=_bag)


def _soak(args) -> int:
    from admn_ros.soak import run_cli
    return run_cli(args)


def add_soak(sub) -> None:
    soak = sub.add_parser('soak', help='run the live graph for minutes: RSS growth, latency drift, '
                                       'drops and rejects (JSON)')
    from admn_ros.soak import add_arguments
    add_arguments(soak)
    soak.set_defaults(func=_soak)


# One function per command group; a new group adds its function here.
COMMAND_GROUPS = (add_train, add_pretrain, add_eval, add_data, add_bench, add_bringup, add_demo,
                  add_compress, add_experiment, add_bag, add_soak)


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
    if getattr(args, 'threads', None) is not None:
        import os
        if args.threads < 1:
            parser.error(f'--threads must be >= 1, got {args.threads}')
        os.environ['ADMN_THREADS'] = str(args.threads)   # read by every thread rule in the process
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
