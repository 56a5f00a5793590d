"""Transfer at small data: fine-tuning from a shipped model against training from scratch and
against a logistic regression on pooled pixels, on a task the shipped model never saw.

    python -m admn_ros.benchmarks.transfer --task avdigits --init synthetic --json results/transfer_avdigits.json
    python -m admn_ros.benchmarks.transfer --task newworld --init synthetic --json results/transfer_newworld.json

Tasks (``--train-size`` training samples, default 150; ``--val-size`` for early stopping):

``avdigits``  real handwritten MNIST digits with real spoken FSDD digits (10 classes, rgb + audio,
              test voice held out); the synthetic model has never seen a digit or heard speech.
``newworld``  a changed synthetic world - another camera (45 degree field of view), up to four
              distractors, a wall always, other seeds - labelled with other classes: which key
              object is nearer and whether the pair rises or falls (4 classes); colour, the
              synthetic model's first cue, says nothing here. Written as a ``folder:`` dataset.

Per seed (training subset and training seed alike) three models are scored on the clean test split:

``init``      ``admn train stage1 --init <model>`` with the small-data recipe (every encoder the
              dataset shares with the model copied, new head)
``scratch``   the same architecture and recipe from random weights (the recipe's conv stem)
``logreg``    the linear baseline of every stage-1 run (:mod:`admn_ros.fusion.linear_baseline`):
              scikit-learn's logistic regression on every modality pooled to 16 x 16 (images area-
              pooled per channel, the log-mel spectrogram average-pooled), standardised, its ``C``
              picked on the validation split
``pretrain``  (when asked for) ``admn pretrain`` on the task's unlabelled training pool (labels
              withheld: ``--pretrain-data``, default ``avdigits-unlabelled`` / the new world's
              ``folder:`` training split), starting from ``--pretrain-init`` (default: ``--init``),
              once for all seeds; then the ``init`` run from its encoders. Its pretraining
              throughput (samples/s, one thread) is reported beside it.

Each is also scored on one modality alone (``test_acc_<modality>``: the model given only that
input; a logistic regression fitted on that modality's features), which says where a gap comes from.

Targets (:data:`TARGETS`): ``init`` beats ``scratch`` by at least 15 points on average and
``logreg`` by at least 5 on every seed; the image encoder alone at least matches the image-only
``logreg`` on every seed. ``init`` is the documented path (docs/your_data.md): with the recipe's
small-data search of ``freeze_blocks`` and ``lr`` (``--set search=false`` without it).
Training runs with one torch thread (the shared 2-core machine); ``--epochs`` fixes the epochs
(no early stopping) and ``--set key=value`` changes a config field of both trained variants.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from admn_ros.benchmarks.report import write_result

TASKS = ('avdigits', 'newworld')
NEWWORLD_CLASSES = ('leftnear-rising', 'leftnear-falling', 'rightnear-rising', 'rightnear-falling')
NEWWORLD_SIZES = {'train': 600, 'val': 300, 'test': 600}


# ----------------------------------------------------------------------------------- the tasks

def newworld_folder(root: Path) -> Path:
    """Write (once) the changed synthetic world as a folder dataset under ``root``."""
    from admn_ros.datasets import synthetic
    from admn_ros.datasets.folder import write_folder
    from admn_ros.datasets.registry import split_seed

    done = root / 'test'
    if done.is_dir():
        return root
    cfg = synthetic.SyntheticConfig(fov_deg=45.0, max_distractors=4, wall_probability=1.0)
    for split, n in NEWWORLD_SIZES.items():
        arrays = synthetic.generate(n, cfg=replace(cfg, seed=split_seed(1234, split)))
        nearer_contour = synthetic.class_factors(arrays['label'])[:, 1:]
        arrays['label'] = (2 * nearer_contour[:, 0] + nearer_contour[:, 1]).astype(np.int64)
        write_folder(root, split, arrays, NEWWORLD_CLASSES, depth_format='npy')
    return root


def task_dataset(task: str, work: Path) -> str:
    if task == 'avdigits':
        return 'avdigits'
    return f'folder:{newworld_folder(work / "newworld_data")}'


# -------------------------------------------------------------------------------- the baseline

def only(data, modality: str):
    """``data`` (a LoadedDataset) with one modality (and the labels) left."""
    from admn_ros.datasets.registry import LoadedDataset
    keep = {k: v for k, v in data.arrays.items() if k in (modality, 'label')}
    return LoadedDataset(data.name, keep, data.class_names, (modality,))


def logreg_accuracy(train, val, test, pre) -> Dict[str, float]:
    """The linear baseline every stage-1 run fits (:mod:`admn_ros.fusion.linear_baseline`)."""
    from admn_ros.fusion.linear_baseline import fit_linear_baseline
    fit = fit_linear_baseline(train.arrays, val.arrays, pre)
    return {'test_acc': fit.accuracy(test.arrays, pre), 'C': fit.C, 'val_acc': fit.val_acc}


# ------------------------------------------------------------------------------------ training

def stage1_config(dataset: str, init_model: Path, train_size: int, val_size: int, seed: int,
                  init: bool, epochs: Optional[int], overrides: Optional[Dict] = None):
    """The run a user makes: the init model's architecture, the recipe for everything else."""
    from admn_ros.fusion.checkpoint import read_checkpoint
    from admn_ros.fusion.config import ModelConfig
    from admn_ros.fusion.stage1 import Stage1Config
    from admn_ros.fusion.training import DataConfig

    from admn_ros.fusion.config import from_dict
    model = ModelConfig.from_dict(read_checkpoint(init_model)['model_config'])
    cfg = Stage1Config(model=model, data=DataConfig(dataset=dataset, train_size=train_size,
                                                    val_size=val_size, seed=seed),
                       init=str(init_model) if init else None, epochs=epochs, seed=seed,
                       device='cpu')
    if overrides:
        data = asdict(cfg)
        for key, value in overrides.items():   # dotted keys: augment.policy=none
            *path, last = key.split('.')
            node = data
            for p in path:
                node = node[p]
            node[last] = value
        cfg = from_dict(Stage1Config, data)
    return cfg


def pretrain_encoders(task: str, dataset: str, work: Path, init_name: str, data: Optional[str],
                      epochs: int, overrides: Optional[Dict] = None) -> Dict:
    """One ``admn pretrain`` run on the task's unlabelled training pool (reused when finished);
    returns where its encoders are and how fast it ran."""
    import csv
    import os

    from admn_ros.fusion.config import from_dict
    from admn_ros.fusion.pretrain import PretrainConfig, pretrain

    spec = data or ('avdigits-unlabelled' if task == 'avdigits' else dataset)
    cfg = PretrainConfig(data=(spec,), init=init_name, epochs=epochs, device='cpu')
    if overrides:
        cfg = from_dict(PretrainConfig, {**plain_config(cfg), **overrides})
    out = work / f'{task}_pretrain'
    load = os.getloadavg()[0]
    t0 = time.time()
    path = out / 'encoders.pt'
    if not path.is_file():
        path = pretrain(cfg, out, resume=True, progress=False, threads=1)
    with open(out / 'metrics.csv') as f:
        rows = list(csv.DictReader(f))
    rates = [float(r['samples_per_s']) for r in rows]
    return {'path': str(path), 'data': spec, 'init': init_name, 'epochs': epochs,
            'overrides': overrides or {}, 'seconds': round(time.time() - t0, 1),
            'samples_per_s_median': round(statistics.median(rates), 1),
            'samples_per_s_max': round(max(rates), 1), 'load_average_at_start': round(load, 2),
            'load_average_at_end': round(os.getloadavg()[0], 2),
            'final_loss': {k: float(v) for k, v in rows[-1].items() if k.startswith('loss_')}}


def plain_config(cfg) -> Dict:
    from admn_ros.fusion.training import plain
    return plain(asdict(cfg))


def run(task: str, init_name: str, train_size: int, val_size: int, test_size: Optional[int],
        seeds: List[int], work: Path, epochs: Optional[int], variants: List[str],
        overrides: Optional[Dict] = None, pretraining: Optional[Dict] = None) -> Dict:
    import torch

    from admn_ros.datasets.preprocess import Preprocessor
    from admn_ros.datasets.registry import load_dataset
    from admn_ros.fusion.checkpoint import load_checkpoint
    from admn_ros.fusion.pretrained import resolve_init
    from admn_ros.fusion.stage1 import accuracy, train_stage1

    torch.set_num_threads(1)
    init_model = resolve_init(init_name)
    dataset = task_dataset(task, work)
    pre = Preprocessor()
    test = load_dataset(dataset, 'test', seed=0, size=test_size, image_size=pre.cfg.image_size)
    pretrained = None
    if 'pretrain' in variants:
        p = dict(pretraining or {})
        pretrained = pretrain_encoders(task, dataset, work, p.get('init') or init_name, p.get('data'),
                                       int(p.get('epochs') or 20), p.get('overrides'))
        print(f'pretrained: {pretrained}', flush=True)
    rows = []
    for seed in seeds:
        train = load_dataset(dataset, 'train', seed=seed, size=train_size)
        val = load_dataset(dataset, 'val', seed=seed, size=val_size)
        row = {'seed': seed}
        if 'logreg' in variants:
            row['logreg'] = logreg_accuracy(train, val, test, pre)
            for m in test.modalities:   # what each sensor alone gives a linear model
                row['logreg'][f'test_acc_{m}'] = logreg_accuracy(
                    only(train, m), only(val, m), only(test, m), pre)['test_acc']
            print(f'seed {seed} logreg {row["logreg"]["test_acc"]:.3f}', flush=True)
        for variant in ('init', 'scratch', 'pretrain'):
            if variant not in variants:
                continue
            start = Path(pretrained['path']) if variant == 'pretrain' else init_model
            cfg = stage1_config(dataset, start, train_size, val_size, seed, variant != 'scratch', epochs,
                                overrides)
            out = work / f'{task}_{variant}_s{seed}'
            shutil.rmtree(out, ignore_errors=True)   # a fresh run (metrics.csv would append)
            t0 = time.time()
            path = train_stage1(cfg, out, progress=False)
            model, _ = load_checkpoint(path)
            search = _read_json(out / 'search.json')
            row[variant] = {'test_acc': accuracy(model, pre, test.arrays),
                            'chosen': search.get('chosen'),
                            'validation': _read_json(out / 'baseline.json'),
                            'test_acc_quarter': accuracy(model, pre, test.arrays,
                                                         layers=max(1, model.depth // 4)),
                            'epochs_run': _epochs_run(out), 'seconds': round(time.time() - t0, 1)}
            for m in test.modalities:   # the model with that sensor's input alone
                row[variant][f'test_acc_{m}'] = accuracy(model, pre, only(test, m).arrays)
            print(f'seed {seed} {variant} {row[variant]["test_acc"]:.3f}', flush=True)
        rows.append(row)
    return {'task': task, 'dataset': dataset, 'init': str(init_model), 'train_size': train_size,
            'pretraining': pretrained,
            'val_size': val_size, 'test_size': len(test), 'seeds': seeds, 'epochs': epochs,
            'overrides': overrides or {}, 'runs': rows, **summarise(rows, variants)}


#: init - scratch on average; init - logreg on every seed; the rgb encoder alone - the rgb-only
#: logistic regression on every seed (the encoders have to transfer, not just the fusion);
#: pretraining on the task's own unlabelled pool above the logistic regression on every seed and
#: 3 points above the shipped-encoder path on average.
TARGETS = {'init_minus_scratch': 0.15, 'init_minus_logreg_min': 0.05, 'init_rgb_minus_logreg_rgb_min': 0.0,
           'pretrain_minus_logreg_min': 0.0, 'pretrain_minus_init': 0.03}


def summarise(rows: List[Dict], variants: List[str]) -> Dict:
    """``summary`` (mean and sd per variant), ``margins`` and their ``targets`` of per-seed ``rows``
    (the runs of one or several invocations, e.g. one seed each)."""
    summary = {v: _mean_sd([r[v]['test_acc'] for r in rows]) for v in variants}
    margins = {}
    if 'init' in variants and 'scratch' in variants:
        margins['init_minus_scratch'] = _mean_sd([r['init']['test_acc'] - r['scratch']['test_acc']
                                                  for r in rows])
    if 'init' in variants and 'logreg' in variants:
        margins['init_minus_logreg_min'] = round(min(r['init']['test_acc'] - r['logreg']['test_acc']
                                                     for r in rows), 4)
        if all('test_acc_rgb' in r['init'] for r in rows):
            margins['init_rgb_minus_logreg_rgb_min'] = round(min(
                r['init']['test_acc_rgb'] - r['logreg']['test_acc_rgb'] for r in rows), 4)
    if 'pretrain' in variants and 'logreg' in variants:
        margins['pretrain_minus_logreg_min'] = round(min(r['pretrain']['test_acc'] - r['logreg']['test_acc']
                                                         for r in rows), 4)
    if 'pretrain' in variants and 'init' in variants:
        margins['pretrain_minus_init'] = _mean_sd([r['pretrain']['test_acc'] - r['init']['test_acc']
                                                   for r in rows])
    return {'summary': summary, 'margins': margins, 'targets': {k: TARGETS[k] for k in margins}}


def _read_json(path: Path) -> Dict:
    import json
    return json.loads(path.read_text()) if path.is_file() else {}


def _epochs_run(out: Path) -> int:
    import csv
    with open(out / 'metrics.csv') as f:
        return len(list(csv.DictReader(f)))


def _mean_sd(values) -> Dict[str, float]:
    values = [float(v) for v in values]
    return {'mean': round(statistics.fmean(values), 4),
            'sd': round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def transfer_table(result: Dict) -> str:
    """Test accuracy per seed and variant (and with one sensor alone), the means, the margins
    against their targets and the pretraining throughput."""
    variants = list(result['summary'])
    mods = [k[len('test_acc_'):] for k in result['runs'][0][variants[0]] if k.startswith('test_acc_')
            and k != 'test_acc_quarter']
    alone = [v for v in variants if mods and all(f'test_acc_{m}' in result['runs'][0][v] for m in mods)]
    head = variants + [f'{v} {" / ".join(mods)}' for v in alone]
    lines = [f'| seed | {" | ".join(head)} |', '|---' * (len(head) + 1) + '|']
    for r in result['runs']:
        cells = [f'{r[v]["test_acc"]:.3f}' for v in variants]
        cells += [' / '.join(f'{r[v][f"test_acc_{m}"]:.3f}' for m in mods) for v in alone]
        lines.append(f'| {r["seed"]} | ' + ' | '.join(cells) + ' |')
    lines.append('| mean | ' + ' | '.join(f'{s["mean"]:.3f} +- {s["sd"]:.3f}'
                                         for s in result['summary'].values()) + ' |' * (len(alone) + 1))
    if result['margins']:
        lines.append('')
    for name, margin in result['margins'].items():   # init_minus_scratch has a mean and sd
        got = f'{margin["mean"]:.3f} +- {margin["sd"]:.3f}' if isinstance(margin, dict) else f'{margin:.3f}'
        lines.append(f'- {name}: {got} (target at least {result["targets"][name]:g})')
    p = result.get('pretraining')
    if p:
        lines.append(f'- pretraining: {p["data"]} from {p["init"]}, {p["epochs"]} epochs, '
                     f'{p["samples_per_s_median"]:.0f} samples/s median ({p["samples_per_s_max"]:.0f} '
                     f'best epoch), one thread, load average {p["load_average_at_start"]:.1f} at the start '
                     f'(shared machine)')
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m admn_ros.benchmarks.transfer', description=__doc__.splitlines()[0])
    p.add_argument('--task', choices=TASKS, required=True)
    p.add_argument('--init', default='default',
                   help='model to fine-tune from (default|synthetic|avdigits|encoders|PATH)')
    p.add_argument('--train-size', type=int, default=150)
    p.add_argument('--val-size', type=int, default=100)
    p.add_argument('--test-size', type=int, help='default: the whole test split')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--epochs', type=int, help='fixed epochs (default: the recipe decides)')
    p.add_argument('--set', action='append', default=[], metavar='KEY=YAML',
                   help='override a stage-1 config field for both trained variants, e.g. lr=3e-4')
    p.add_argument('--variants', default='init,scratch,logreg',
                   help='comma-separated: init, scratch, logreg, pretrain')
    p.add_argument('--pretrain-data', metavar='SPEC', help='pretrain arm: unlabelled data (default: '
                   "the task's training pool, labels withheld)")
    p.add_argument('--pretrain-init', help='pretrain arm: start from this model (default: --init)')
    p.add_argument('--pretrain-epochs', type=int, default=20)
    p.add_argument('--pretrain-set', action='append', default=[], metavar='KEY=YAML',
                   help='override a pretraining config field (fusion/pretrain.py), e.g. lr=1e-3')
    p.add_argument('--work', default='runs/transfer', help='runs and generated data go here')
    p.add_argument('--json', required=True, help='write the results here (and a .md table beside it)')
    args = p.parse_args(argv)
    import yaml
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition('=') for s in args.set)}
    pretraining = {'data': args.pretrain_data, 'init': args.pretrain_init, 'epochs': args.pretrain_epochs,
                   'overrides': {k: yaml.safe_load(v)
                                 for k, _, v in (s.partition('=') for s in args.pretrain_set)}}
    result = run(args.task, args.init, args.train_size, args.val_size, args.test_size, args.seeds,
                 Path(args.work), args.epochs, args.variants.split(','), overrides, pretraining)
    table = transfer_table(result)
    write_result(result, args.json, table)
    print(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
