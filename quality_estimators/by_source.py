"""Leave-one-source-out evaluation: how the model does on a speaker, session or robot it never saw.

    admn eval --folds by-source --dataset avdigits --clean [--epochs 4] [--controller-epochs 2] \
              [--sources lucas,theo] [--budgets 0.33] [--policies admn,naive] [--out runs/by_source]

Per fold (:mod:`admn_ros.datasets.sources`; dataset ``heldout:SOURCE:BASE``): stage 1 is trained
from the shipped stage-1 config of the dataset on the other sources (train/val), then, unless
``--no-controller``, the controller from its shipped config on them too; both only ever load the
fold's train and val splits. The fold's test split (every sample of the held-out source; with
``--clean`` as recorded, else under ``admn eval``'s standard corruption mix) is scored for the fused model (``full``), each modality alone (``unimodal:<m>`` with the
whole model's budget, i.e. all of that modality's layers), the stage-1 run's linear baseline, and
each of ``--policies`` at each budget. Writes ``by_source.json`` + ``by_source.md`` under ``--out``
through :func:`admn_ros.benchmarks.report.write_result`, and each fold's run folders beside them.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from admn_ros.datasets.sources import fold_name, pool_sources, source_folds

REFERENCE_BUDGET = 1.0   # the single-modality and fused rows: every layer of what they run


@dataclass
class BySourceConfig:
    dataset: str = 'avdigits'
    sources: Tuple[str, ...] = ()          # empty: every source, each held out once
    budgets: Tuple[float, ...] = (0.33,)
    policies: Tuple[str, ...] = ('admn', 'naive')   # 'admn' needs the controller
    controller: bool = True
    clean: bool = False                    # True: the held-out source as recorded, no corruption mix
    test_size: Optional[int] = None        # a seeded subset of the held-out source
    seed: int = 0
    device: str = 'auto'
    data_root: Optional[str] = None
    force: bool = False                    # train the controller on a stage 1 that ended at chance


def _on_fold(data, name: str, seed: int, data_root):
    return dataclasses.replace(data, dataset=name, seed=seed,
                               data_root=data_root if data_root is not None else data.data_root)


def run_fold(cfg: BySourceConfig, source: str, out: Path, stage1, controller=None) -> Dict:
    """Train on every source but ``source`` and score on ``source``; one result dict."""
    from admn_ros.fusion.stage1 import train_stage1
    from admn_ros.fusion.checkpoint import read_checkpoint
    from admn_ros.quality_estimators.evaluate import evaluate
    from admn_ros.quality_estimators.train_controller import train_controller

    name = fold_name(source, cfg.dataset)
    t0 = time.time()
    s1 = dataclasses.replace(stage1, data=_on_fold(stage1.data, name, cfg.seed, cfg.data_root),
                             device=cfg.device)
    ckpt = train_stage1(s1, out / 'stage1', progress=False)
    stage1_seconds = time.time() - t0
    meta = read_checkpoint(ckpt).get('extra', {})   # the stage-1 run's: validation, baseline, modalities
    validation = meta.get('validation') or {}
    # full, linear and unimodal rows are the reference below; admn needs a controller
    policies = [p for p in cfg.policies if p not in ('full', 'linear') and not p.startswith('unimodal:')
                and (p != 'admn' or controller is not None)]
    if controller is not None and 'admn' in cfg.policies:
        c = dataclasses.replace(controller, data=_on_fold(controller.data, name, cfg.seed, cfg.data_root),
                                device=cfg.device)
        ckpt = train_controller(c, ckpt, out / 'controller', progress=False, force=cfg.force)
    train_seconds = time.time() - t0
    common = dict(seed=cfg.seed, size=cfg.test_size, device=cfg.device, data_root=cfg.data_root,
                  clean=cfg.clean)
    linear = ['linear'] if meta.get('linear_baseline') else []
    reference = ['full'] + linear + [f'unimodal:{m}' for m in meta.get('modalities') or []]
    report = evaluate(ckpt, name, [REFERENCE_BUDGET], reference, **common)
    rows, test_size = report['results'], report['test_size']
    if policies:
        rows += evaluate(ckpt, name, list(cfg.budgets), policies, **common)['results']
    return {'source': source, 'dataset': name, 'checkpoint': str(ckpt), 'test_size': test_size,
            'stage1_val_acc': validation.get('model_val_acc'), 'stage1_seconds': round(stage1_seconds, 1),
            'train_seconds': round(train_seconds, 1), 'seconds': round(time.time() - t0, 1),
            'results': rows}


def run_by_source(cfg: BySourceConfig, out, *, stage1, controller=None, json_path=None) -> Dict:
    """Every fold of ``cfg.dataset`` (or ``cfg.sources``); writes the JSON + table when
    ``json_path`` is given. ``stage1`` / ``controller``: the training configs, whose data section
    is pointed at each fold (their dataset is replaced)."""
    from admn_ros.benchmarks.report import write_result

    out = Path(out)
    pooled = pool_sources(cfg.dataset, seed=cfg.seed, data_root=cfg.data_root)
    folds = {f.source: f for f in source_folds(pooled.sources, seed=cfg.seed)}
    chosen = list(cfg.sources) or list(folds)
    unknown = [s for s in chosen if s not in folds]
    if unknown:
        raise ValueError(f'{cfg.dataset!r} has no source {", ".join(unknown)}; its sources: {", ".join(folds)}')
    results = []
    for source in chosen:
        fold = folds[source]
        print(f'fold {source}: train {len(fold.train)}, val {len(fold.val)}, test {len(fold.test)} '
              f'(held out)', flush=True)
        row = run_fold(cfg, source, out / source, stage1, controller if cfg.controller else None)
        row.update(train_samples=int(len(fold.train)), val_samples=int(len(fold.val)),
                   held_out_samples=int(len(fold.test)))
        results.append(row)
        print(fold_table([row]).splitlines()[-1], flush=True)
    report = {'benchmark': 'by_source', 'dataset': cfg.dataset, 'sources': pooled.names,
              'config': dataclasses.asdict(cfg), 'corruption': 'clean' if cfg.clean else 'standard',
              'folds': results}
    table = fold_table(results)
    if json_path:
        write_result(report, json_path, table)
    print(table, flush=True)
    return report


def _cell(row: Dict, policy: str, budget: float) -> Optional[float]:
    for r in row['results']:
        if r['policy'] == policy and abs(r['budget'] - budget) < 1e-9:
            return r['metric']
    return None


def _columns(rows: Sequence[Dict]) -> List[Tuple[str, str, float]]:
    seen, cols = set(), []
    for row in rows:
        for r in row['results']:
            key = (r['policy'], r['budget'])
            if key in seen:
                continue
            seen.add(key)
            label = r['policy'] if r['budget'] == REFERENCE_BUDGET and r['policy'] in (
                'full', 'linear') or r['policy'].startswith('unimodal:') else f'{r["policy"]}@{r["budget"]:g}'
            cols.append((label.replace('unimodal:', ''), r['policy'], r['budget']))
    return cols


def fold_table(rows: Sequence[Dict]) -> str:
    """Markdown: one row per held-out source (accuracy on it), and the mean over folds."""
    cols = _columns(rows)
    head = '| held out | samples | ' + ' | '.join(c[0] for c in cols) + ' | seconds |'
    lines = [head, '|' + '---|' * (len(cols) + 3)]

    def fmt(v):
        return '-' if v is None else f'{v:.3f}'

    for row in rows:
        cells = [fmt(_cell(row, p, b)) for _, p, b in cols]
        lines.append(f'| {row["source"]} | {row.get("held_out_samples", row["test_size"])} | '
                     + ' | '.join(cells) + f' | {row["seconds"]:.0f} |')
    if len(rows) > 1:
        means = []
        for _, p, b in cols:
            vals = [v for v in (_cell(r, p, b) for r in rows) if v is not None]
            means.append(fmt(float(np.mean(vals)) if vals else None))
        lines.append('| mean | | ' + ' | '.join(means) + ' | |')
    return '\n'.join(lines)


def run_by_source_cli(args) -> int:
    """``admn eval --folds by-source``: the training configs are the dataset's shipped ones
    (``config/training/{stage1,controller}_<dataset>.yaml``) unless given."""
    from admn_ros.fusion.stage1 import Stage1Config
    from admn_ros.fusion.validate import Range, parse_list
    from admn_ros.datasets.package_paths import config_dir
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig

    if args.folds != 'by-source':
        raise ValueError(f'--folds must be by-source, got {args.folds!r}')
    if args.conditions:
        raise ValueError('--folds and --conditions do not mix: folds score each held-out source as a whole')
    if not args.dataset:
        raise ValueError('--folds by-source needs --dataset (one that names its sources, e.g. avdigits)')

    def shipped(kind: str, given: Optional[str]) -> Optional[str]:
        path = Path(given) if given else config_dir() / 'training' / f'{kind}_{args.dataset}.yaml'
        return str(path) if given or path.is_file() else None

    stage1 = Stage1Config.from_yaml(shipped('stage1', args.stage1_config))
    controller = ControllerTrainConfig.from_yaml(shipped('controller', args.controller_config))
    if args.epochs is not None:
        stage1.epochs = args.epochs
    if args.controller_epochs is not None:
        controller.epochs = args.controller_epochs
    stage1.seed = controller.seed = args.seed
    cfg = BySourceConfig(
        dataset=args.dataset, sources=tuple(parse_list(args.sources, '--sources', str)) if args.sources else (),
        budgets=tuple(parse_list(args.budgets, '--budgets', float, limit=Range(0.0, 1.0, lo_open=True))),
        policies=tuple(parse_list(args.policies, '--policies', str)), controller=not args.no_controller,
        clean=args.clean, test_size=args.size, seed=args.seed, device=args.device, force=args.force)
    out = Path(args.out)
    run_by_source(cfg, out, stage1=stage1, controller=controller,
                  json_path=args.json or out / 'by_source.json')
    return 0
