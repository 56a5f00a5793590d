"""Accuracy against budget for every allocation policy on a fixed, cached, corrupted test set,
or by condition (``--conditions``).

    admn eval [--checkpoint F] [--dataset synthetic] --budgets 0.25,0.33,0.5,0.75,1.0 \
              --policies admn,naive,every_other,random,heuristic,full --json out.json --plot out.png
    admn eval --conditions single|pairs|recorded|FILE.yaml --policies admn,naive,oracle_split ...

Every policy is run with real layer skipping; ``gflops`` is the analytic cost of what ran (plus the
controller's own cost for ``admn``). ``budget`` is a fraction of the full model's encoder cost in
``budget_unit`` (layers or FLOPs). Without ``--dataset`` the checkpoint's own dataset is used; a
checkpoint whose number of classes differs from the dataset's is refused.

By condition (:func:`evaluate_conditions`, conditions from :mod:`admn_ros.datasets.conditions`): each
condition is applied to the whole clean test split (recorded ones select their tagged samples) and
every (policy, budget) cell is scored on it; ``oracle_split`` (:mod:`admn_ros.quality_estimators.oracle`)
is available there only, since it picks a fixed split per condition on the validation split.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from admn_ros.datasets.portable_paths import portable
from admn_ros.datasets.cache import ArrayCache, content_digest, default_cache_root
from admn_ros.datasets.conditions import apply_condition, resolve_conditions
from admn_ros.datasets.corruptions import CORRUPTION_VERSION, CorruptionSampler
from admn_ros.datasets.registry import LoadedDataset, load_dataset
from admn_ros.datasets.sample import RawBatch, take
from admn_ros.fusion.flops import CostModel
from admn_ros.fusion.validate import Range, parse_list
from admn_ros.quality_estimators.budget import Budget
from admn_ros.datasets.figures import agg_figure
from admn_ros.quality_estimators.condition_report import summarise, write_condition_report
from admn_ros.quality_estimators.inference import (LoadedModel, allocate_and_run, default_checkpoint,
                                                   executed_flops, load_model)
from admn_ros.quality_estimators.oracle import POLICY_NAME as ORACLE_SPLIT
from admn_ros.quality_estimators.oracle import FixedSplitPolicy, OracleConfig, OracleSearch
from admn_ros.quality_estimators.policies import policy_spec_error
from admn_ros.quality_estimators import linear_policy


def corrupted_test_set(dataset: str, *, seed: int = 0, size: Optional[int] = None,
                       data_root: Optional[str] = None, clean: bool = False) -> RawBatch:
    """The test split with the standard corruption mix applied once, seeded, and cached on disk.

    ``clean=True`` gives the same split uncorrupted (all-zero corruption labels). Either way
    samples the dataset itself tags as degraded keep their data and tags (recorded conditions).
    """
    test = load_dataset(dataset, 'test', seed=seed, size=size, data_root=data_root).arrays
    return _mixed(test, seed, clean)


def _mixed(test: RawBatch, seed: int, clean: bool) -> RawBatch:
    # Keyed on the test arrays themselves: a folder or data root whose files changed, or a new
    # loader, gets a new set; no name or version could say that for data read from files.
    parts = {'test_content': content_digest(test), 'seed': seed,
             'mix': 'clean' if clean else 'standard', 'corruption_version': CORRUPTION_VERSION}

    def build():
        sampler = CorruptionSampler.standard(policy='clean') if clean else CorruptionSampler.standard()
        return sampler(test, np.random.default_rng(seed + 12345))

    return ArrayCache(default_cache_root() / 'eval', pcm_audio=False).get_or_create(parts, build)


def checkpoint_dataset(meta: Dict[str, Any], checkpoint) -> str:
    """The dataset a checkpoint was trained on (its metadata, else its training config's data)."""
    name = meta.get('dataset') or (meta.get('train_config') or {}).get('data', {}).get('dataset')
    if not name:
        raise ValueError(f'{checkpoint} does not say which dataset it was trained on; pass --dataset')
    return str(name)


@dataclass
class _Setup:
    """What every evaluation cell needs, loaded once."""

    checkpoint: str
    dataset: str
    model: Any
    ctrl: Any
    meta: Dict[str, Any]
    pre: Any
    cost: CostModel
    device: torch.device
    test: LoadedDataset
    loaded: LoadedModel


def _setup(checkpoint, dataset: Optional[str], *, seed: int, size: Optional[int], device: str,
           data_root: Optional[str], allow_missing: bool = False) -> _Setup:
    checkpoint = checkpoint or default_checkpoint(dataset or 'synthetic')
    loaded = load_model(checkpoint, device)
    model, meta = loaded.model, loaded.meta
    warning = (meta.get('validation') or {}).get('verdict')
    if warning:   # stage 1 at chance or below its linear baseline: no table without saying so
        print(f'{checkpoint}: {warning}', flush=True)
    name = dataset or checkpoint_dataset(meta, checkpoint)
    test = load_dataset(name, 'test', seed=seed, size=size, data_root=data_root)
    if model.cfg.num_classes != test.num_classes:
        trained_on = meta.get('dataset')
        raise ValueError(f'{checkpoint} predicts {model.cfg.num_classes} classes but dataset {name!r} has '
                         f'{test.num_classes}' + (f'; it was trained on {trained_on!r}' if trained_on else ''))
    missing = [m for m in model.modalities if m not in test.modalities]
    if missing and not allow_missing:
        # Every sample would run without them: the numbers would not describe the model.
        raise ValueError(f'dataset {name!r} has no {", ".join(missing)} for the model\'s '
                         f'{", ".join(model.modalities)} (missing from every sample); pass '
                         '--allow-missing-modalities to evaluate without them')
    return _Setup(str(checkpoint), name, model, loaded.controller, meta, loaded.preprocessor, loaded.cost,
                  loaded.device, test, loaded)


def _check_policies(policies: Sequence[str], *, by_condition: bool) -> None:
    for spec in policies:
        if spec == linear_policy.POLICY_NAME:   # the stage-1 run's linear baseline, no allocation
            continue
        if spec == ORACLE_SPLIT:
            if not by_condition:
                raise ValueError(f'policy {ORACLE_SPLIT} picks a split per condition: it needs '
                                 '--conditions PRESET|FILE')
            continue
        error = policy_spec_error(spec)
        if error:
            raise ValueError(error)


class _Policies:
    """Makes each cell's policy (:meth:`admn_ros.quality_estimators.inference.LoadedModel.policy`;
    the controller scorer is built once, on first use)."""

    def __init__(self, s: _Setup, seed: int):
        self.s, self.seed = s, seed

    def make(self, spec: str):
        """(policy, extra GFLOP-counted FLOPs per sample) for one cell: a fresh policy per cell,
        so a seeded random policy gives a cell the same numbers whatever else is evaluated."""
        return self.s.loaded.policy(spec, seed=self.seed)

    def linear(self, test: RawBatch) -> Dict:
        """The ``linear`` row's cell (:mod:`admn_ros.quality_estimators.linear_policy`)."""
        if not hasattr(self, '_linear'):
            self._linear = linear_policy.linear_baseline_of(self.s.meta, self.s.checkpoint)
        return linear_policy.linear_cell(self._linear, self.s.pre, test)


def _row(spec: str, fraction: float, cell: Optional[Dict]) -> Dict:
    if cell is None:   # nothing to score (oracle_split without validation samples)
        return {'policy': spec, 'budget': float(fraction), 'metric': None, 'gflops': None, 'layers': None}
    return {'policy': spec, 'budget': float(fraction), 'metric': round(cell['metric'], 5),
            'gflops': round(cell['gflops'], 5), 'layers': {m: round(v, 3) for m, v in cell['layers'].items()}}


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
        run = allocate_and_run(model, policy, raw, inputs, budget, present, device)
        keep_np = run.keep
        correct += int((run.logits.argmax(-1).cpu() == torch.as_tensor(raw['label'])).sum())
        flops.append(executed_flops(cost, keep_np, present, extra_flops))
        for m in mods:
            layers[m].append(np.asarray(keep_np[m]).sum(-1) if m in present else np.zeros(len(raw['label'])))
    return {'metric': correct / n, 'gflops': float(np.concatenate(flops).mean() / 1e9),
            'layers': {m: float(np.concatenate(v).mean()) for m, v in layers.items()},
            'per_sample_layers': {m: np.concatenate(v) for m, v in layers.items()}}


def evaluate(checkpoint, dataset: Optional[str], budgets: Sequence[float], policies: Sequence[str], *,
             unit: str = 'layers', seed: int = 0, size: Optional[int] = None, device: str = 'auto',
             data_root: Optional[str] = None, clean: bool = False, allow_missing: bool = False) -> Dict:
    """Every (policy, budget) cell on the standard corrupted (or the clean) test set.

    ``checkpoint=None`` is the dataset's trained default; ``dataset=None`` the checkpoint's own.
    """
    _check_policies(policies, by_condition=False)
    s = _setup(checkpoint, dataset, seed=seed, size=size, device=device, data_root=data_root,
               allow_missing=allow_missing)
    test = _mixed(s.test.arrays, seed, clean)
    make = _Policies(s, seed)
    results, allocations = [], {}
    for spec in policies:
        for fraction in budgets:
            if spec == linear_policy.POLICY_NAME:
                results.append(_row(spec, fraction, make.linear(test)))
                continue
            policy, extra = make.make(spec)
            cell = evaluate_policy(s.model, s.pre, policy, test, Budget(float(fraction), unit), s.cost,
                                   extra_flops=extra, device=s.device)
            allocations[(spec, float(fraction))] = cell.pop('per_sample_layers')
            results.append(_row(spec, fraction, cell))
    return {'dataset': s.dataset, 'checkpoint': s.checkpoint, 'budget_unit': unit, 'metric_name': 'accuracy',
            'corruption': 'clean' if clean else 'standard', 'test_size': int(len(test['label'])),
            'results': results, '_allocations': allocations, '_test': test}


def evaluate_conditions(checkpoint, dataset: Optional[str], budgets: Sequence[float], policies: Sequence[str],
                        conditions: Union[str, Sequence], *, unit: str = 'layers', seed: int = 0,
                        size: Optional[int] = None, device: str = 'auto', data_root: Optional[str] = None,
                        oracle: OracleConfig = OracleConfig()) -> Dict:
    """Every (condition, policy, budget) cell; see the module docstring.

    ``conditions`` is a preset name or YAML file (:func:`admn_ros.datasets.conditions.resolve_conditions`)
    or a list of :class:`admn_ros.datasets.conditions.Condition`. The model is loaded once; each condition
    set is built once and scored with :func:`evaluate_policy` for every cell (:class:`ConditionScorer`).
    ``oracle_split`` chooses on up to ``oracle.val_size`` validation samples under the same condition.
    """
    scorer = ConditionScorer(checkpoint, dataset, policies, seed=seed, size=size, device=device,
                             data_root=data_root, oracle=oracle)
    s = scorer.setup
    conds = resolve_conditions(conditions, s.test.arrays) if isinstance(conditions, str) else list(conditions)
    names = [c.name for c in conds]
    if not conds or len(set(names)) != len(names):
        raise ValueError(f'conditions must be a non-empty list with unique names, got {names}')
    results = []
    for cond in conds:
        test = scorer.under(cond)
        search = scorer.search(cond)
        where = {'condition': cond.name, 'corrupted': cond.describe(), 'samples': int(len(test['label']))}
        for spec in policies:
            for fraction in budgets:
                results.append({**where, **scorer.score(test, spec, Budget(float(fraction), unit), search)})
    return {'dataset': s.dataset, 'budget_unit': unit, 'checkpoint': s.checkpoint, 'metric_name': 'accuracy',
            'test_size': int(len(s.test)), 'seed': seed,
            'conditions': [{'name': c.name, 'corrupted': c.describe(), 'recorded': c.recorded} for c in conds],
            'results': results, 'summary': summarise(results)}


class ConditionScorer:
    """One loaded model scoring (policy, budget) cells on the test split under conditions: what
    :func:`evaluate_conditions` and the noise sweep (:mod:`admn_ros.quality_estimators.sweep`) share.

    Per condition: :meth:`under` builds the test set once, :meth:`search` runs the
    ``oracle_split`` search once (its encoder outputs serve every budget), and :meth:`score`
    scores each (policy, budget) cell on them.
    """

    def __init__(self, checkpoint, dataset: Optional[str], policies: Sequence[str], *, seed: int = 0,
                 size: Optional[int] = None, device: str = 'auto', data_root: Optional[str] = None,
                 oracle: OracleConfig = OracleConfig()):
        _check_policies(policies, by_condition=True)
        self.setup = _setup(checkpoint, dataset, seed=seed, size=size, device=device, data_root=data_root)
        self.seed, self.oracle = seed, oracle
        self.val = (_ValidationSource(self.setup.dataset, seed, data_root, oracle.val_size)
                    if ORACLE_SPLIT in policies else None)
        self._policies = _Policies(self.setup, seed)

    def under(self, condition) -> RawBatch:
        """The test split under ``condition`` (:func:`admn_ros.datasets.conditions.apply_condition`)."""
        return apply_condition(self.setup.test.arrays, condition, self.seed)

    def search(self, condition):
        """The ``oracle_split`` search under ``condition``; None without ``oracle_split`` or when
        no validation sample carries the condition."""
        if self.val is None:
            return None
        val = self.val.under(condition)
        if not len(val['label']):
            return None
        s = self.setup
        return OracleSearch(s.model, s.pre, val, config=self.oracle, device=s.device)

    def score(self, test: RawBatch, spec: str, budget: Budget, search=None) -> Dict:
        """One cell: ``{policy, budget, metric, gflops, layers}`` (plus the split chosen, for
        ``oracle_split``; a ``note`` and no metric when it had no validation samples)."""
        s, fields = self.setup, {}
        if spec == linear_policy.POLICY_NAME:
            return _row(spec, budget.fraction, self._policies.linear(test))
        if spec != ORACLE_SPLIT:
            policy, extra = self._policies.make(spec)
        elif search is None:
            return {**_row(spec, budget.fraction, None), 'note': 'no validation samples under this condition'}
        else:
            choice = search.choose(budget, s.cost)
            policy = FixedSplitPolicy(choice.candidate, s.model.modalities, s.model.depth, s.cost)
            extra = 0.0
            fields = {'split': dict(choice.candidate.split), 'realisation': choice.candidate.realisation,
                      'val_metric': round(choice.val_metric, 5), 'val_size': choice.val_size}
        cell = evaluate_policy(s.model, s.pre, policy, test, budget, s.cost, extra_flops=extra, device=s.device)
        cell.pop('per_sample_layers')
        return {**_row(spec, budget.fraction, cell), **fields}


class _ValidationSource:
    """Validation samples for ``oracle_split``: the val split, loaded once, under each condition."""

    def __init__(self, dataset: str, seed: int, data_root: Optional[str], size: int):
        self.arrays = load_dataset(dataset, 'val', seed=seed, data_root=data_root).arrays
        self.seed, self.size = seed, size

    def under(self, condition) -> RawBatch:
        """At most ``size`` samples (a seeded subset) with ``condition`` applied; recorded conditions
        select their tagged samples from the whole split first."""
        if condition.recorded:
            return self._subset(apply_condition(self.arrays, condition, self.seed))
        return apply_condition(self._subset(self.arrays), condition, self.seed)

    def _subset(self, arrays: RawBatch) -> RawBatch:
        n = len(arrays['label'])
        if n <= self.size:
            return arrays
        index = np.sort(np.random.default_rng([self.seed, 0x0AC1E]).permutation(n)[:self.size])
        return take(arrays, index)


def print_table(report: Dict) -> None:
    budgets = sorted({r['budget'] for r in report['results']})
    policies = list(dict.fromkeys(r['policy'] for r in report['results']))
    cell = {(r['policy'], r['budget']): r for r in report['results']}
    print(f"accuracy (GFLOPs) on {report['dataset']} test, budget unit: {report['budget_unit']}")
    print(f"{'policy':<14}" + ''.join(f'{b:>16}' for b in budgets))
    for p in policies:
        print(f'{p:<14}' + ''.join(f"{cell[p, b]['metric']:>9.3f} ({cell[p, b]['gflops']:.3f})" for b in budgets))


def plot_curves(report: Dict, path) -> None:
    fig = agg_figure((6, 4))
    ax = fig.subplots()
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


def plot_allocation(report: Dict, path, policy: str = 'admn', budget: Optional[float] = None) -> None:
    """Mean layers given to each modality against that modality's corruption severity."""
    test = report['_test']
    keys = [k for k in report['_allocations'] if k[0] == policy]
    if not keys:
        raise ValueError(f'no results for policy {policy!r} to plot')
    budget = budget if budget is not None else sorted(k[1] for k in keys)[len(keys) // 2]
    layers = report['_allocations'][(policy, budget)]
    mods = [m for m in layers if f'severity_{m}' in test]
    fig = agg_figure((4 * len(mods), 3.2))
    axes = fig.subplots(1, len(mods), sharey=True, squeeze=False)
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


def public(report: Dict) -> Dict:
    return {k: v for k, v in report.items() if not k.startswith('_')}


def run_eval_cli(args) -> int:
    budgets = list(parse_list(args.budgets, '--budgets', float, limit=Range(0.0, 1.0, lo_open=True)))
    policies = list(parse_list(args.policies, '--policies', str))
    conditions = getattr(args, 'conditions', None)
    if conditions:
        if args.clean:
            raise ValueError('--clean and --conditions do not mix: every condition preset has a clean row')
        report = evaluate_conditions(args.checkpoint, args.dataset, budgets, policies, conditions,
                                     unit=args.budget_unit, seed=args.seed, size=args.size, device=args.device,
                                     oracle=OracleConfig(val_size=getattr(args, 'oracle_val_size', 300)))
        write_condition_report(report, json_path=args.json, plot=args.plot,
                               allocation_plot=getattr(args, 'allocation_plot', None))
        return 0
    report = evaluate(args.checkpoint, args.dataset, budgets, policies, unit=args.budget_unit, seed=args.seed,
                      size=args.size, device=args.device, clean=args.clean,
                      allow_missing=getattr(args, 'allow_missing_modalities', False))
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
            json.dump(portable(public(report)), f, indent=2)
    if plot:
        plot_curves(report, plot)
    if allocation_plot and any(r['policy'] == 'admn' for r in report['results']):
        plot_allocation(report, allocation_plot)


__all__: List[str] = ['evaluate', 'evaluate_conditions', 'ConditionScorer', 'evaluate_policy', 'corrupted_test_set',
                       'checkpoint_dataset', 'run_eval_cli', 'write_report']
