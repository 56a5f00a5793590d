"""Accuracy against budget for every allocation policy on a fixed, cached, corrupted test set.

    admn eval [--checkpoint F] --dataset synthetic --budgets 0.25,0.33,0.5,0.75,1.0 \
              --policies admn,naive,every_other,random,heuristic,full --json out.json --plot out.png

Every policy is run with real layer skipping; ``gflops`` is the analytic cost of what ran (plus the
controller's own cost for ``admn``). ``budget`` is a fraction of the full model's encoder cost in
``budget_unit`` (layers or FLOPs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from datasets.cache import ArrayCache, content_digest, default_cache_root
from datasets.registry import load_dataset
from datasets.sample import RawBatch, take
from fusion.flops import CostModel
from quality_estimators.budget import Budget

def default_checkpoint(dataset: str) -> Path:
    """Where ``admn train defaults --dataset NAME`` puts the trained default for a built-in dataset."""
    packaged = Path(__file__).resolve().parent.parent / 'admn_ros' / 'models' / f'{dataset}.pt'
    if packaged.exists():
        return packaged
    local = default_cache_root() / 'models' / dataset / 'controller.pt'
    if local.exists():
        return local
    raise FileNotFoundError(
        f'no trained default for dataset {dataset!r} (looked in {packaged} and {local}); '
        f'make one with: admn train defaults --dataset {dataset}')


def corrupted_test_set(dataset: str, *, seed: int = 0, size: Optional[int] = None,
                       data_root: Optional[str] = None, clean: bool = False) -> RawBatch:
    """The test split with the standard corruption mix applied once, seeded, and cached on disk.

    ``clean=True`` gives the same split uncorrupted (with all-zero corruption labels).
    """
    from datasets.corruptions import CORRUPTION_VERSION, CorruptionSampler
    test = load_dataset(dataset, 'test', seed=seed, size=size, data_root=data_root).arrays
    # Keyed on the test arrays themselves: a folder or data root whose files changed, or a new
    # loader, gets a new set; no name or version could say that for data read from files.
    parts = {'test_content': content_digest(test), 'seed': seed,
             'mix': 'clean' if clean else 'standard', 'corruption_version': CORRUPTION_VERSION}

    def build():
        sampler = CorruptionSampler.standard(policy='clean') if clean else CorruptionSampler.standard()
        return sampler(test, np.random.default_rng(seed + 12345))

    return ArrayCache(default_cache_root() / 'eval', pcm_audio=False).get_or_create(parts, build)


@torch.inference_mode()
def evaluate_policy(model, pre, policy, test: RawBatch, budget: Budget, cost: CostModel, *,
                    batch_size: int = 128, extra_flops: float = 0.0, device=None) -> Dict:
    """One (policy, budget) cell: accuracy, mean GFLOPs and mean layers per modality."""
    device = device or next(model.parameters()).device
    mods = model.modalities
    present = tuple(m for m in mods if m in test)
    correct, flops, layers = 0, [], {m: [] for m in mods}
    n = len(test['label'])
    for start in range(0, n, batch_size):
        raw = take(test, slice(start, start + batch_size))
        inputs = {m: x.to(device) for m, x in pre(raw).items() if m in present}
        keep_np = policy.allocate(raw, budget, present, inputs)
        keep = {m: torch.as_tensor(np.asarray(keep_np[m], dtype=bool), device=device) for m in present}
        out = model(inputs, keep)
        correct += int((out.argmax(-1).cpu() == torch.as_tensor(raw['label'])).sum())
        flops.append(cost.total_flops({m: keep_np[m] for m in present}) + extra_flops)
        for m in mods:
            layers[m].append(np.asarray(keep_np[m]).sum(-1) if m in present else np.zeros(len(raw['label'])))
    return {'metric': correct / n, 'gflops': float(np.concatenate(flops).mean() / 1e9),
            'layers': {m: float(np.concatenate(v).mean()) for m, v in layers.items()},
            'per_sample_layers': {m: np.concatenate(v) for m, v in layers.items()}}


def evaluate(checkpoint, dataset: str, budgets: Sequence[float], policies: Sequence[str], *,
             unit: str = 'layers', seed: int = 0, size: Optional[int] = None, device: str = 'auto',
             data_root: Optional[str] = None, clean: bool = False) -> Dict:
    from fusion.device import resolve_device
    from quality_estimators.controller import controller_cost_flops
    from quality_estimators.policies import make_policy
    from quality_estimators.train_controller import load_controller, make_scorer
    dev = resolve_device(device)
    model, ctrl, meta = load_controller(checkpoint, map_location=dev)
    from fusion.checkpoint import checkpoint_preprocessor
    pre = checkpoint_preprocessor(meta)
    cost = CostModel.from_config(model.cfg)
    test = corrupted_test_set(dataset, seed=seed, size=size, data_root=data_root, clean=clean)
    results, allocations = [], {}
    for spec in policies:
        scorer = None
        extra = 0.0
        if spec == 'admn':
            if ctrl is None:
                raise ValueError(f'{checkpoint} has no controller: policy admn needs a controller checkpoint')
            scorer = make_scorer(ctrl, meta, model.modalities, dev)
            extra = controller_cost_flops(ctrl.cfg)
        for fraction in budgets:
            # A fresh policy per cell: a seeded random policy then gives a cell the same numbers
            # whichever other budgets are evaluated with it.
            policy = make_policy(spec, modalities=model.modalities, depth=model.depth, cost_model=cost,
                                 seed=seed, controller=scorer)
            cell = evaluate_policy(model, pre, policy, test, Budget(float(fraction), unit), cost,
                                   extra_flops=extra, device=dev)
            allocations[(spec, float(fraction))] = cell.pop('per_sample_layers')
            results.append({'policy': spec, 'budget': float(fraction), 'metric': round(cell['metric'], 5),
                            'gflops': round(cell['gflops'], 5),
                            'layers': {m: round(v, 3) for m, v in cell['layers'].items()}})
    return {'dataset': dataset, 'checkpoint': str(checkpoint), 'budget_unit': unit, 'metric_name': 'accuracy',
            'corruption': 'clean' if clean else 'standard', 'test_size': int(len(test['label'])), 'results': results, '_allocations': allocations,
            '_test': test}


def print_table(report: Dict) -> None:
    budgets = sorted({r['budget'] for r in report['results']})
    policies = list(dict.fromkeys(r['policy'] for r in report['results']))
    cell = {(r['policy'], r['budget']): r for r in report['results']}
    print(f"accuracy (GFLOPs) on {report['dataset']} test, budget unit: {report['budget_unit']}")
    print(f"{'policy':<14}" + ''.join(f'{b:>16}' for b in budgets))
    for p in policies:
        print(f'{p:<14}' + ''.join(f"{cell[p, b]['metric']:>9.3f} ({cell[p, b]['gflops']:.3f})" for b in budgets))


def plot_curves(report: Dict, path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in dict.fromkeys(r['policy'] for r in report['results']):
        rows = sorted((r for r in report['results'] if r['policy'] == p), key=lambda r: r['gflops'])
        ax.plot([r['gflops'] for r in rows], [r['metric'] for r in rows], marker='o', label=p)
    ax.set_xlabel('GFLOPs per sample')
    ax.set_ylabel('accuracy')
    ax.set_title(f"{report['dataset']}: accuracy vs compute")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_allocation(report: Dict, path, policy: str = 'admn', budget: Optional[float] = None) -> None:
    """Mean layers given to each modality against that modality's corruption severity."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    test = report['_test']
    keys = [k for k in report['_allocations'] if k[0] == policy]
    if not keys:
        raise ValueError(f'no results for policy {policy!r} to plot')
    budget = budget if budget is not None else sorted(k[1] for k in keys)[len(keys) // 2]
    layers = report['_allocations'][(policy, budget)]
    mods = [m for m in layers if f'severity_{m}' in test]
    fig, axes = plt.subplots(1, len(mods), figsize=(4 * len(mods), 3.2), sharey=True, squeeze=False)
    bins = np.linspace(0, 1, 6)
    for ax, m in zip(axes[0], mods):
        sev = test[f'severity_{m}']
        idx = np.clip(np.digitize(sev, bins[1:-1]), 0, len(bins) - 2)
        means = [layers[m][idx == i].mean() if (idx == i).any() else np.nan for i in range(len(bins) - 1)]
        ax.bar((bins[:-1] + bins[1:]) / 2, means, width=0.15)
        ax.set_title(m)
        ax.set_xlabel(f'{m} corruption severity')
    axes[0][0].set_ylabel('mean layers given')
    fig.suptitle(f'{policy} allocation at budget {budget}')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def public(report: Dict) -> Dict:
    return {k: v for k, v in report.items() if not k.startswith('_')}


def run_eval_cli(args) -> int:
    checkpoint = args.checkpoint or default_checkpoint(args.dataset)
    budgets = [float(b) for b in args.budgets.split(',') if b.strip()]
    policies = [p.strip() for p in args.policies.split(',') if p.strip()]
    report = evaluate(checkpoint, args.dataset, budgets, policies, unit=args.budget_unit, seed=args.seed,
                      size=args.size, device=args.device, clean=args.clean)
    write_report(report, json_path=args.json, plot=args.plot,
                 allocation_plot=getattr(args, 'allocation_plot', None))
    return 0


def write_report(report: Dict, *, json_path=None, plot=None, allocation_plot=None) -> None:
    """Print the table and write whichever of JSON, curve plot and allocation plot are asked for
    (the allocation plot only when the admn policy was evaluated)."""
    print_table(report)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, 'w') as f:
            json.dump(public(report), f, indent=2)
    if plot:
        plot_curves(report, plot)
    if allocation_plot and any(r['policy'] == 'admn' for r in report['results']):
        plot_allocation(report, allocation_plot)


__all__: List[str] = ['evaluate', 'corrupted_test_set', 'default_checkpoint', 'run_eval_cli', 'write_report']
