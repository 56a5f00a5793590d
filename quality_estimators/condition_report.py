"""Output of evaluation by condition: summary, printed tables, JSON and plots.

Works on the report of :func:`admn_ros.quality_estimators.evaluate.evaluate_conditions` only (plain JSON
data), so a saved report can be re-plotted without the model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from admn_ros.datasets.portable_paths import portable
from admn_ros.datasets.conditions import DESTROYING
from admn_ros.datasets.figures import agg_figure

# A change of mean layers smaller than this is no move (it would print as the same count).
MOVED = 0.05
# Policies whose allocation the tables and the heat map show next to their accuracy.
ALLOCATION_POLICIES = ('admn', 'oracle_split')


def _budgets(results) -> List[float]:
    return sorted({r['budget'] for r in results})


def _ordered(results, key: str) -> List:
    return list(dict.fromkeys(r[key] for r in results))


def _corruptions(row) -> tuple:
    return tuple((c['modality'], c['type'], float(c['severity'])) for c in row['corrupted'])


def summarise(results: Sequence[Dict]) -> List[Dict]:
    """Per budget and policy: mean accuracy over the single-modality conditions and over the
    destroying ones (:data:`admn_ros.datasets.conditions.DESTROYING`, those evaluated), with counts;
    cells without a metric are left out, a mean over nothing is None."""
    out = []
    for budget in _budgets(results):
        for policy in _ordered(results, 'policy'):
            rows = [r for r in results if r['budget'] == budget and r['policy'] == policy
                    and r['metric'] is not None]
            single = [r['metric'] for r in rows if len(r['corrupted']) == 1]
            destroying = [r['metric'] for r in rows if len(r['corrupted']) == 1
                          and _corruptions(r)[0] in DESTROYING]
            out.append({'budget': budget, 'policy': policy,
                        'single_mean': _mean(single), 'single_count': len(single),
                        'destroying_mean': _mean(destroying), 'destroying_count': len(destroying)})
    return out


def _mean(values) -> Optional[float]:
    return round(float(np.mean(values)), 5) if values else None


def _layers_text(row, modalities) -> str:
    if row['policy'] == 'oracle_split' and row.get('split'):
        return '/'.join(str(row['split'].get(m, 0)) for m in modalities) + ' ' + row['realisation'][0]
    if not row['layers']:
        return '-'
    return '/'.join(f"{row['layers'].get(m, 0.0):.1f}" for m in modalities)


def print_condition_table(report: Dict) -> None:
    """One table per budget: a row per condition, accuracy per policy, and for admn and
    oracle_split the layers per modality (oracle: its split, e = evenly spaced, n = naive)."""
    results = report['results']
    policies = _ordered(results, 'policy')
    conditions = [c['name'] for c in report['conditions']]
    mods = _modalities(report)
    cell = {(r['condition'], r['policy'], r['budget']): r for r in results}
    width = max([len(c) for c in conditions] + [9]) + 2
    shown = [p for p in ALLOCATION_POLICIES if p in policies]
    for budget in _budgets(results):
        print(f"\naccuracy by condition on {report['dataset']} test, budget {budget:g} {report['budget_unit']}"
              + (f" (layers {'/'.join(mods)})" if shown else ''))
        head = f"{'condition':<{width}}" + ''.join(f'{p[:14]:>15}' for p in policies)
        print(head + ''.join(f'{p + " layers":>22}' for p in shown))
        for name in conditions:
            rows = [cell[name, p, budget] for p in policies]
            line = f'{name:<{width}}' + ''.join(f"{_fmt(r['metric']):>15}" for r in rows)
            print(line + ''.join(f'{_layers_text(cell[name, p, budget], mods):>22}' for p in shown))
    for s in report.get('summary', []):
        print(f"summary budget {s['budget']:g} {s['policy']}: single-modality mean {_fmt(s['single_mean'])} "
              f"({s['single_count']}), destroying mean {_fmt(s['destroying_mean'])} ({s['destroying_count']})")


def _fmt(value) -> str:
    return '-' if value is None else f'{value:.3f}'


def _modalities(report) -> List[str]:
    for r in report['results']:
        if r['layers']:
            return list(r['layers'])
    return []


def plot_condition_accuracy(report: Dict, path) -> None:
    """Grouped bars: accuracy per condition, one bar per policy, one panel per budget."""
    results = report['results']
    budgets, policies = _budgets(results), _ordered(results, 'policy')
    conditions = [c['name'] for c in report['conditions']]
    cell = {(r['condition'], r['policy'], r['budget']): r['metric'] for r in results}
    width = max(6.0, 0.12 * len(conditions) * (len(policies) + 1) + 2)
    fig = agg_figure((width, 3.2 * len(budgets) + 1.5))
    axes = fig.subplots(len(budgets), 1, squeeze=False, sharex=True)
    x = np.arange(len(conditions))
    bar = 0.8 / len(policies)
    for ax, budget in zip(axes[:, 0], budgets):
        for i, p in enumerate(policies):
            values = [np.nan if cell[c, p, budget] is None else cell[c, p, budget] for c in conditions]
            ax.bar(x - 0.4 + (i + 0.5) * bar, values, bar, label=p)
        ax.set_ylabel('accuracy')
        ax.set_ylim(0, 1)
        ax.set_title(f"budget {budget:g} ({report['budget_unit']})")
        ax.grid(axis='y', alpha=0.3)
    axes[0, 0].legend(ncol=min(len(policies), 6), fontsize='small')
    axes[-1, 0].set_xticks(x)
    axes[-1, 0].set_xticklabels(conditions, rotation=90, fontsize='small')
    fig.suptitle(f"{report['dataset']}: accuracy by condition")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_condition_layers(report: Dict, path) -> bool:
    """Heat maps of mean layers per modality (columns) per condition (rows): one panel per
    budget, one row of panels per allocation policy evaluated (admn, oracle_split). Returns False
    (and writes nothing) when neither was evaluated."""
    results = report['results']
    policies = [p for p in ALLOCATION_POLICIES if p in _ordered(results, 'policy')]
    if not policies:
        return False
    budgets, mods = _budgets(results), _modalities(report)
    conditions = [c['name'] for c in report['conditions']]
    cell = {(r['condition'], r['policy'], r['budget']): r['layers'] for r in results}
    vmax = max((v for r in results if r['layers'] for v in r['layers'].values()), default=1.0)
    fig = agg_figure((1.2 * len(mods) * len(budgets) + 3, 0.28 * len(conditions) * len(policies) + 2))
    axes = fig.subplots(len(policies), len(budgets), squeeze=False)
    for row, p in enumerate(policies):
        for col, budget in enumerate(budgets):
            ax = axes[row, col]
            grid = np.array([[np.nan if not cell[c, p, budget] else cell[c, p, budget].get(m, 0.0) for m in mods]
                             for c in conditions])
            image = ax.imshow(grid, aspect='auto', cmap='viridis', vmin=0, vmax=vmax)
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):   # dark text on the light end of the colour map
                    ax.text(j, i, f'{v:.1f}', ha='center', va='center', fontsize=6,
                            color='black' if v > 0.6 * vmax else 'white')
            ax.set_xticks(range(len(mods)))
            ax.set_xticklabels(mods)
            ax.set_yticks(range(len(conditions)))
            ax.set_yticklabels(conditions if col == 0 else [], fontsize=6)
            ax.set_title(f'{p}, budget {budget:g}', fontsize='small')
    fig.colorbar(image, ax=axes.ravel().tolist(), label='mean layers')
    fig.savefig(path, dpi=120, bbox_inches='tight')
    return True


def quality_awareness(report: Dict, policy: str = 'admn', fixed: Sequence[str] = ('naive', 'every_other'),
                      reference: str = 'oracle_split') -> List[Dict]:
    """Per budget, what says whether ``policy`` follows quality, from a saved report:

    * ``shift``: per destroyed modality of each condition evaluated (one sensor or several at
      once), its mean layers against its clean count (``ratio``), whether it is at most half of
      that (or 1, its always-on first layer, where half would be less: ``follows``) and which way
      it moved (``move``: ``halved``, ``not halved`` or ``increased``, layers moved *toward*
      the destroyed sensor);
    * ``single_vs_reference``: mean accuracy over the single-modality conditions, minus
      ``reference``'s (when evaluated);
    * ``destroying_vs_fixed``: mean over the destroying conditions, minus the better of the
      ``fixed`` policies' means over the same conditions;
    * ``clean_vs_fixed``: clean accuracy minus the best fixed policy's;
    * ``worst_vs_naive``: the lowest per-condition difference to ``naive`` and where it is;
    * ``worst_multi_vs_fixed``: over the conditions with several sensors degraded at once, the
      lowest difference to the better of the ``fixed`` policies there, and where it is.
    Differences are in accuracy (0.01 = 1 point).
    """
    results = [r for r in report['results'] if r['metric'] is not None]
    summary = {(r['budget'], r['policy']): r for r in summarise(results)}
    out = []
    for budget in _budgets(results):
        cell = {(r['condition'], r['policy']): r for r in results if r['budget'] == budget}
        if ('clean', policy) not in cell:
            continue
        clean = cell['clean', policy]
        shift = []
        for r in results:
            if r['budget'] != budget or r['policy'] != policy or not r['layers']:
                continue
            for m, t, sev in _corruptions(r):
                if (m, t, sev) in DESTROYING:
                    shift.append(_shift(r['condition'], m, clean['layers'][m], r['layers'][m]))
        row = {'budget': budget, 'policy': policy, 'shift': shift}
        mine = summary[budget, policy]
        if (budget, reference) in summary and mine['single_mean'] is not None:
            row['single_vs_reference'] = round(mine['single_mean'] - summary[budget, reference]['single_mean'], 5)
        means = [summary[budget, f]['destroying_mean'] for f in fixed if (budget, f) in summary]
        if means and None not in means and mine['destroying_mean'] is not None:
            row['destroying_vs_fixed'] = round(mine['destroying_mean'] - max(means), 5)
        clean_fixed = [cell['clean', f]['metric'] for f in fixed if ('clean', f) in cell]
        if clean_fixed:
            row['clean_vs_fixed'] = round(clean['metric'] - max(clean_fixed), 5)
        gaps = [(cell[c, policy]['metric'] - cell[c, 'naive']['metric'], c)
                for c, p in cell if p == policy and (c, 'naive') in cell]
        if gaps:
            gap, where = min(gaps)
            row['worst_vs_naive'] = {'difference': round(gap, 5), 'condition': where}
        multi = [(cell[c, policy]['metric'] - max(cell[c, f]['metric'] for f in fixed), c)
                 for c, p in cell if p == policy and len(cell[c, p]['corrupted']) > 1
                 and all((c, f) in cell for f in fixed)]
        if multi:
            gap, where = min(multi)
            row['worst_multi_vs_fixed'] = {'difference': round(gap, 5), 'condition': where}
        out.append(row)
    return out


def _shift(condition: str, modality: str, before: float, after: float) -> Dict:
    """How a destroyed ``modality``'s mean layers moved from ``before`` (clean) to ``after``."""
    follows = bool(after <= max(1.0, before / 2) + 1e-9)
    move = 'halved' if follows else 'increased' if after >= before + MOVED else 'not halved'
    return {'condition': condition, 'modality': modality, 'clean_layers': before, 'layers': after,
            'ratio': round(after / before, 3) if before else None, 'follows': follows, 'move': move}


def print_quality_awareness(rows: Sequence[Dict]) -> None:
    for row in rows:
        moved = ', '.join(f"{s['modality']} {s['clean_layers']:.1f}->{s['layers']:.1f} in {s['condition']}"
                          f"{'' if s['follows'] else ' (' + s['move'] + ')'}" for s in row['shift'])
        print(f"budget {row['budget']:g} {row['policy']}: layers {moved or '-'}")
        parts = [f"{k.replace('_', ' ')} {row[k] * 100:+.1f} pts" for k in
                 ('single_vs_reference', 'destroying_vs_fixed', 'clean_vs_fixed') if k in row]
        for key, text in (('worst_vs_naive', 'worst vs naive'), ('worst_multi_vs_fixed', 'worst multi vs fixed')):
            if key in row:
                w = row[key]
                parts.append(f"{text} {w['difference'] * 100:+.1f} pts ({w['condition']})")
        print('  ' + '; '.join(parts))


def write_condition_report(report: Dict, *, json_path=None, plot=None, allocation_plot=None) -> None:
    """Print the tables and summary; write the JSON, the accuracy plot (``plot``) and the layer
    heat map (``allocation_plot``, when admn or oracle_split was evaluated) where asked."""
    print_condition_table(report)
    if any(r['policy'] == 'admn' for r in report['results']):
        report = dict(report, quality_awareness=quality_awareness(report))
        print_quality_awareness(report['quality_awareness'])
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, 'w') as f:
            json.dump(portable(report), f, indent=2)
    if plot:
        plot_condition_accuracy(report, plot)
    if allocation_plot:
        plot_condition_layers(report, allocation_plot)


__all__ = ['summarise', 'quality_awareness', 'print_condition_table', 'plot_condition_accuracy', 'plot_condition_layers',
           'write_condition_report']
