"""The sibling methods measured against their targets: LayerDrop pruning, LayerShuffle, LayerCollapse.

    python -m admn_ros.benchmarks.compression prune    --json results/prune.json
    python -m admn_ros.benchmarks.compression shuffle  --json results/layershuffle.json [--epochs 2]
    python -m admn_ros.benchmarks.compression collapse --collapsed runs/collapse/synthetic.pt \\
                                                       --json results/collapse.json

Each writes JSON and prints a markdown table (also saved beside the JSON as ``.md``); every model
defaults to the shipped synthetic default.

* ``prune``: the model pruned to ``--keep`` blocks per modality by the every-other rule and by the
  data-driven greedy choice, against the adaptive model at the same layer budget (``admn``,
  evenly spaced ``every_other``): accuracy (standard corrupted and clean test sets) and GFLOPs;
  batch-1 latency of each pruned model against the adaptive model run with the same keep-mask
  (alternating runs, medians), the largest output difference between them, and the file sizes.
  Targets: data-driven >= every-other; latency within 5% of the masked adaptive model; a file about
  half the size.
* ``shuffle``: fine-tunes the source model's stage-1 weights (its own training config, ``--epochs``
  at ``--lr``, same seed and data) four ways - plain LayerDrop, LayerShuffle, LS + position embedding,
  LS + position prediction - skipping runs already done, then evaluates each (and the source) in
  natural order, under random block orders and under random block failure (``--fault-rate``).
  Targets: LayerShuffle within 5 points of its natural order under random orders; under failure at
  least as accurate as plain LayerDrop.
* ``collapse``: source against collapsed model (``admn collapse``): collapsed MLP blocks, parameters,
  GFLOPs, batch-1 latency and accuracy. Target: a quarter of all MLP blocks collapsed for at most 1
  point of accuracy.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from admn_ros.benchmarks.report import write_result
from admn_ros.fusion.checkpoint import checkpoint_preprocessor, load_checkpoint
from admn_ros.fusion.flops import CostModel
from admn_ros.fusion.layershuffle import robustness

SHUFFLE_VARIANTS = {
    'layerdrop': {},
    'layershuffle': {'enabled': True},
    'ls_pos_embed': {'enabled': True, 'position_embed_dim': 32},
    'ls_pos_pred': {'enabled': True, 'position_loss': 1.0},
}


def _default(checkpoint: Optional[str], dataset: str = 'synthetic') -> str:
    if checkpoint:
        return checkpoint
    from admn_ros.quality_estimators.inference import default_checkpoint
    return str(default_checkpoint(dataset))


def _test_sets(meta, size: Optional[int], seed: int = 0) -> Dict[str, dict]:
    from admn_ros.quality_estimators.evaluate import corrupted_test_set
    name = meta['dataset']
    return {'corrupted': corrupted_test_set(name, seed=seed, size=size),
            'clean': corrupted_test_set(name, seed=seed, size=size, clean=True)}


def _batch1(cfg, device='cpu'):
    gen = torch.Generator().manual_seed(0)
    return {m: torch.randn(1, e.in_chans, *e.input_size, generator=gen).to(device) for m, e in cfg.encoders.items()}


@torch.inference_mode()
def paired_latency_ms(fns: Dict[str, callable], runs: int = 200, warmup: int = 10) -> Dict[str, float]:
    """Median ms of each function, runs alternating between them so machine load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: round(1000 * statistics.median(v), 4) for k, v in times.items()}


def _acc(model, pre, arrays, **kw) -> float:
    return robustness(model, pre, arrays, modes=('natural',), **kw)['natural']['mean']


def _write(result: dict, path: Optional[str], table: str) -> None:
    print(table)
    if path:
        write_result(result, path, table)


# --------------------------------------------------------------------------- prune
def bench_prune(checkpoint: Optional[str], keep: int, out_dir: str, *, size: Optional[int] = None,
                val_size: int = 300, runs: int = 200) -> dict:
    from admn_ros.fusion.prune import export_pruned, keep_masks
    from admn_ros.quality_estimators.evaluate import evaluate
    src = _default(checkpoint)
    model, meta = load_checkpoint(src)
    model.eval()
    depth = model.depth
    budget = keep / depth
    rows, pruned = [], {}
    for strategy in ('every_other', 'data_driven'):
        path = Path(out_dir) / f'pruned_{strategy}_{keep}.pt'
        t0 = time.perf_counter()
        info = export_pruned(src, path, keep, strategy, val_size=val_size)
        pruned[strategy] = (path, info, time.perf_counter() - t0)
    tests = {}
    for strategy, (path, info, seconds) in pruned.items():
        cells = {}
        for kind in ('corrupted', 'clean'):
            res = evaluate(str(path), None, [1.0], ['full'], size=size, clean=kind == 'clean', device='cpu')
            cells[kind] = res['results'][0]
            tests[kind] = res['test_size']
        rows.append({'model': f'pruned {strategy}', 'kept': info['kept'], 'budget': 1.0,
                     'accuracy': cells['corrupted']['metric'], 'accuracy_clean': cells['clean']['metric'],
                     'gflops': cells['corrupted']['gflops'], 'choose_s': round(seconds, 1)})
    for policy in ('admn', 'every_other'):
        cells = {kind: evaluate(src, None, [budget], [policy], size=size, clean=kind == 'clean',
                                device='cpu')['results'][0] for kind in ('corrupted', 'clean')}
        rows.append({'model': f'adaptive {policy}', 'budget': round(budget, 4),
                     'accuracy': cells['corrupted']['metric'], 'accuracy_clean': cells['clean']['metric'],
                     'gflops': cells['corrupted']['gflops']})
    full = {kind: evaluate(src, None, [1.0], ['full'], size=size, clean=kind == 'clean', device='cpu')['results'][0]
            for kind in ('corrupted', 'clean')}
    rows.append({'model': 'adaptive full depth', 'budget': 1.0, 'accuracy': full['corrupted']['metric'],
                 'accuracy_clean': full['clean']['metric'], 'gflops': full['corrupted']['gflops']})

    # Latency and equality: each pruned model against the adaptive model with the same keep-mask.
    timing = {}
    src_bytes = Path(src).stat().st_size
    for strategy, (path, info, _) in pruned.items():
        small, _ = load_checkpoint(path)
        small.eval()
        x = _batch1(model.cfg)
        masks = keep_masks(info['kept'], depth)
        with torch.inference_mode():
            diff = float((small(x) - model(x, masks)).abs().max())
        ms = paired_latency_ms({'pruned': lambda: small(x), 'adaptive_masked': lambda: model(x, masks)}, runs)
        params = sum(p.numel() for p in small.parameters())
        timing[strategy] = {'latency_ms': ms, 'latency_ratio': round(ms['pruned'] / ms['adaptive_masked'], 4),
                            'max_abs_output_diff': diff, 'file_bytes': path.stat().st_size,
                            'file_ratio': round(path.stat().st_size / src_bytes, 4),
                            'parameters': params}
    full_params = sum(p.numel() for p in model.parameters())
    eo, dd = rows[0], rows[1]
    result = {
        'source': src, 'keep': keep, 'depth': depth, 'test_size': tests, 'val_size': val_size,
        'threads': torch.get_num_threads(), 'rows': rows, 'timing': timing,
        'source_file_bytes': src_bytes, 'source_parameters': full_params,
        'targets': {
            'data_driven_minus_every_other': round(dd['accuracy'] - eo['accuracy'], 4),
            'data_driven_minus_every_other_clean': round(dd['accuracy_clean'] - eo['accuracy_clean'], 4),
            'latency_ratio': {s: t['latency_ratio'] for s, t in timing.items()},
            'file_ratio': {s: t['file_ratio'] for s, t in timing.items()},
        }}
    return result


def prune_table(r: dict) -> str:
    lines = [f"| model ({r['keep']} of {r['depth']} blocks per modality) | accuracy (corrupted) | accuracy (clean) "
             f"| GFLOPs |", '|---|---|---|---|']
    for row in r['rows']:
        name = row['model'] + ('' if row['model'].startswith('pruned') else f" @ {row['budget']:g}")
        lines.append(f"| {name} | {row['accuracy']:.3f} | {row['accuracy_clean']:.3f} | {row['gflops']:.4f} |")
    lines += ['', '| pruned | kept blocks | batch-1 ms pruned / adaptive with the same mask | ratio '
                  '| max output diff | file (source) | parameters (source) |', '|---|---|---|---|---|---|---|']
    for s, t in r['timing'].items():
        kept = next(row['kept'] for row in r['rows'] if row['model'] == f'pruned {s}')
        kept_s = '; '.join(f"{m} {','.join(map(str, v))}" for m, v in kept.items())
        lines.append(f"| {s} | {kept_s} | {t['latency_ms']['pruned']:.2f} / {t['latency_ms']['adaptive_masked']:.2f} "
                     f"| {t['latency_ratio']:.3f} | {t['max_abs_output_diff']:.1e} "
                     f"| {t['file_bytes'] / 1e6:.2f} MB ({r['source_file_bytes'] / 1e6:.2f} MB, "
                     f"{t['file_ratio']:.2f}x) | {t['parameters']:,} ({r['source_parameters']:,}) |")
    return '\n'.join(lines)


# --------------------------------------------------------------------------- shuffle
def train_shuffle_variants(checkpoint: str, out_dir: str, *, epochs: int, lr: float,
                           train_size: Optional[int], variants: List[str], progress: bool = False) -> Dict[str, str]:
    """Fine-tune ``checkpoint`` once per variant (same config, data, seed and budget); a variant
    whose ``model.pt`` exists is not trained again."""
    from admn_ros.fusion.collapse import fine_tune_config
    from admn_ros.fusion.config import from_dict
    from admn_ros.fusion.layershuffle import LayerShuffleConfig
    from admn_ros.fusion.stage1 import train_stage1
    _, meta = load_checkpoint(checkpoint)
    paths = {}
    for name in variants:
        run = Path(out_dir) / name
        if not (run / 'model.pt').exists():
            cfg = fine_tune_config(meta, checkpoint, epochs=epochs, lr=lr, train_size=train_size, device='cpu')
            cfg.shuffle = from_dict(LayerShuffleConfig, SHUFFLE_VARIANTS[name])
            t0 = time.perf_counter()
            train_stage1(cfg, run, progress=progress)
            (run / 'seconds.txt').write_text(f'{time.perf_counter() - t0:.1f}\n')
        paths[name] = str(run / 'model.pt')
    return paths


def bench_shuffle(checkpoint: Optional[str], out_dir: str, *, epochs: int, lr: float,
                  train_size: Optional[int], size: Optional[int], orders: int, fault_rate: float,
                  variants: List[str]) -> dict:
    src = _default(checkpoint)
    paths = {'source (no fine-tuning)': src,
             **train_shuffle_variants(src, out_dir, epochs=epochs, lr=lr, train_size=train_size,
                                      variants=variants)}
    _, meta = load_checkpoint(src)
    tests = _test_sets(meta, size)
    rows = []
    for name, path in paths.items():
        model, m = load_checkpoint(path)
        pre = checkpoint_preprocessor(m)
        row = {'model': name, 'checkpoint': path}
        for kind, arrays in tests.items():
            res = robustness(model, pre, arrays, orders=orders, fault_rate=fault_rate,
                             modes=('natural', 'shuffled', 'faults', 'shuffled_faults'))
            row[kind] = res
        seconds = Path(path).parent / 'seconds.txt'
        row['train_seconds'] = float(seconds.read_text()) if seconds.exists() else None
        rows.append(row)
    by = {r['model']: r for r in rows}
    targets = {}
    if 'layershuffle' in by and 'layerdrop' in by:
        for kind in tests:
            ls, ld = by['layershuffle'][kind], by['layerdrop'][kind]
            targets[kind] = {
                'layershuffle_natural_minus_shuffled': round(ls['natural']['mean'] - ls['shuffled']['mean'], 4),
                'layerdrop_natural_minus_shuffled': round(ld['natural']['mean'] - ld['shuffled']['mean'], 4),
                'layershuffle_minus_layerdrop_under_faults': round(ls['faults']['mean'] - ld['faults']['mean'], 4)}
    return {'source': src, 'epochs': epochs, 'lr': lr, 'train_size': train_size, 'fault_rate': fault_rate,
            'orders': orders, 'test_size': {k: len(v['label']) for k, v in tests.items()},
            'threads': torch.get_num_threads(), 'rows': rows, 'targets': targets}


def shuffle_table(r: dict) -> str:
    out = []
    for kind in r['test_size']:
        out += [f"{kind} test set ({r['test_size'][kind]} samples; random orders and failures: mean ± std "
                f"over {r['orders']} draws; failure rate {r['fault_rate']:g} per block)", '',
                '| model | natural order | random order | block failure | random order + failure |',
                '|---|---|---|---|---|']
        for row in r['rows']:
            c = row[kind]
            cells = [f"{c['natural']['mean']:.3f}"] + [f"{c[k]['mean']:.3f} ± {c[k]['std']:.3f}"
                                                       for k in ('shuffled', 'faults', 'shuffled_faults')]
            out.append(f"| {row['model']} | " + ' | '.join(cells) + ' |')
        out.append('')
    return '\n'.join(out).rstrip()


# --------------------------------------------------------------------------- collapse
def bench_collapse(source: Optional[str], collapsed: str, *, size: Optional[int], runs: int = 200,
                   extra: Optional[Dict[str, str]] = None) -> dict:
    from admn_ros.fusion.collapse import count_parameters
    src = _default(source)
    models = {'source': src, 'collapsed': collapsed, **(extra or {})}
    _, meta = load_checkpoint(src)
    tests = _test_sets(meta, size)
    rows, loaded = [], {}
    for name, path in models.items():
        model, m = load_checkpoint(path)
        model.eval()
        loaded[name] = model
        cost = CostModel.from_config(model.cfg)
        full = {mod: torch.ones(1, model.depth, dtype=torch.bool).numpy() for mod in model.modalities}
        pre = checkpoint_preprocessor(m)
        blocks = sum(len(e.collapsed_blocks) for e in model.cfg.encoders.values())
        total = sum(e.depth for e in model.cfg.encoders.values())
        rows.append({'model': name, 'checkpoint': path, 'collapsed_blocks': blocks, 'mlp_blocks': total,
                     'collapsed': {mod: list(e.collapsed_blocks) for mod, e in model.cfg.encoders.items()},
                     'parameters': count_parameters(model),
                     'gflops': round(float(cost.total_flops(full)[0]) / 1e9, 5),
                     'accuracy': {k: _acc(model, pre, a) for k, a in tests.items()},
                     'file_bytes': Path(path).stat().st_size})
    x = _batch1(loaded['source'].cfg)
    ms = paired_latency_ms({name: (lambda mdl=mdl: mdl(x)) for name, mdl in loaded.items()}, runs)
    for row in rows:
        row['latency_ms'] = ms[row['model']]
    s, c = rows[0], rows[1]
    return {'test_size': {k: len(v['label']) for k, v in tests.items()}, 'threads': torch.get_num_threads(),
            'rows': rows,
            'targets': {'collapsed_share': round(c['collapsed_blocks'] / c['mlp_blocks'], 4),
                        'accuracy_drop_points': {k: round(100 * (s['accuracy'][k] - c['accuracy'][k]), 2)
                                                 for k in tests}}}


def collapse_table(r: dict) -> str:
    kinds = list(r['test_size'])
    head = ('| model | MLP blocks collapsed | parameters | GFLOPs | batch-1 ms | '
            + ' | '.join(f'accuracy ({k})' for k in kinds) + ' |')
    lines = [head, '|' + '---|' * (5 + len(kinds))]
    for row in r['rows']:
        lines.append(f"| {row['model']} | {row['collapsed_blocks']} of {row['mlp_blocks']} | {row['parameters']:,} "
                     f"| {row['gflops']:.4f} | {row['latency_ms']:.2f} | "
                     + ' | '.join(f"{row['accuracy'][k]:.3f}" for k in kinds) + ' |')
    return '\n'.join(lines)


# --------------------------------------------------------------------------- admn robustness
def robustness_cli(args, checkpoint: str) -> int:
    """``admn robustness``: one model in natural order, random orders and random block failure."""
    from admn_ros.fusion.device import resolve_device
    from admn_ros.quality_estimators.evaluate import checkpoint_dataset, corrupted_test_set
    if not 0 <= args.fault_rate <= 1:
        raise ValueError(f'--fault-rate must lie in [0, 1], got {args.fault_rate}')
    model, meta = load_checkpoint(checkpoint, map_location=resolve_device(args.device))
    dataset = args.dataset or checkpoint_dataset(meta, checkpoint)
    test = corrupted_test_set(dataset, seed=args.seed, size=args.size, clean=args.clean)
    res = robustness(model, checkpoint_preprocessor(meta), test, orders=args.orders,
                     fault_rate=args.fault_rate, seed=args.seed,
                     modes=('natural', 'shuffled', 'faults', 'shuffled_faults'))
    result = {'checkpoint': checkpoint, 'dataset': dataset, 'clean': bool(args.clean),
              'test_size': int(len(test['label'])), 'fault_rate': args.fault_rate, 'orders': args.orders,
              'accuracy': res}
    table = '\n'.join(['| mode | accuracy (mean ± std) |', '|---|---|']
                      + [f"| {k} | {v['mean']:.3f} ± {v['std']:.3f} |" for k, v in res.items()])
    _write(result, args.json, table)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest='what', required=True)
    pr = sub.add_parser('prune')
    pr.add_argument('--checkpoint')
    pr.add_argument('--keep', type=int, default=6)
    pr.add_argument('--out-dir', default='runs/prune')
    pr.add_argument('--val-size', type=int, default=300)
    pr.add_argument('--runs', type=int, default=200)
    sh = sub.add_parser('shuffle')
    sh.add_argument('--checkpoint')
    sh.add_argument('--out-dir', default='runs/layershuffle')
    sh.add_argument('--epochs', type=int, default=2)
    sh.add_argument('--lr', type=float, default=3e-4)
    sh.add_argument('--train-size', type=int)
    sh.add_argument('--orders', type=int, default=5)
    sh.add_argument('--fault-rate', type=float, default=0.25)
    sh.add_argument('--variants', default=','.join(SHUFFLE_VARIANTS))
    co = sub.add_parser('collapse')
    co.add_argument('--checkpoint', help='the source model')
    co.add_argument('--collapsed', required=True, help='its collapsed version (admn collapse)')
    co.add_argument('--also', action='append', default=[], metavar='NAME=PATH', help='more models to compare')
    co.add_argument('--runs', type=int, default=200)
    for s in (pr, sh, co):
        s.add_argument('--size', type=int, help='test-set size (default: the whole split)')
        s.add_argument('--json', help='write the results here (and a .md table beside it)')
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.what == 'prune':
        r = bench_prune(a.checkpoint, a.keep, a.out_dir, size=a.size, val_size=a.val_size, runs=a.runs)
        _write(r, a.json, prune_table(r))
    elif a.what == 'shuffle':
        unknown = set(a.variants.split(',')) - set(SHUFFLE_VARIANTS)
        if unknown:
            p.error(f'unknown variants {sorted(unknown)}; known: {list(SHUFFLE_VARIANTS)}')
        r = bench_shuffle(a.checkpoint, a.out_dir, epochs=a.epochs, lr=a.lr, train_size=a.train_size,
                          size=a.size, orders=a.orders, fault_rate=a.fault_rate,
                          variants=a.variants.split(','))
        _write(r, a.json, shuffle_table(r))
    else:
        extra = dict(item.split('=', 1) for item in a.also)
        r = bench_collapse(a.checkpoint, a.collapsed, size=a.size, runs=a.runs, extra=extra)
        _write(r, a.json, collapse_table(r))
    print(json.dumps(r['targets'], indent=2))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
