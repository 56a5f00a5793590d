"""Noise-injection sweep: accuracy, compute and layers per modality over modality x corruption
type x severity x budget x policy, on one fixed seeded test split.

    admn experiment noise-sweep --config config/experiments/ci.yaml [--out DIR] [--resume]
                                [--overwrite] [--through-ros] [--no-progress]

The grid (:class:`SweepConfig`, a YAML file): every listed corruption type of every listed
modality that has it, at every severity, under every budget and policy. One *cell* is one
(modality, corruption, severity, budget, policy) and one CSV row.

How cells are scored. A *condition* is one (modality, corruption, severity); severity 0 is the
clean split, one condition shared by every (modality, corruption). The model is loaded once; each
condition's input set is built once (:func:`admn_ros.datasets.conditions.apply_condition`, the
seeded corruption ``admn eval --conditions`` applies, so a cell here has the numbers of the same
cell there) and every (budget, policy) cell is scored on it, batched, with
:class:`admn_ros.quality_estimators.evaluate.ConditionScorer`. ``oracle_split`` searches once per
condition on validation samples. ``--through-ros`` scores the same input sets through the node
graph instead (:mod:`admn_ros.sweep_ros`: each condition written to a bag and replayed through
``replay_eval``); this module never imports rclpy.

Output in ``--out`` (default ``runs/sweeps/<config file stem>``):

* ``sweep.csv``: one row per cell (:data:`COLUMNS`, plus ``layers_<modality>`` per modality of
  the model), appended and flushed to disk as each cell finishes;
* ``sweep_meta.json``: the config, its hash (config + checkpoint SHA-256 + route), the checkpoint;
* when every cell is done: ``sweep.json`` (rows, per-condition results, summary as
  ``admn eval --conditions`` gives it), ``sweep.md`` (tables per budget) and three plots
  (:data:`PLOTS`): accuracy against severity per policy, accuracy against GFLOPs, layers per
  modality against severity.

Resuming: an interrupted sweep (Ctrl-C, a kill, a crash) keeps every finished row; ``--resume``
skips them (a row cut short by a kill is dropped and redone) and refuses an output directory made
by a different config or checkpoint. Without ``--resume`` an output directory that holds rows is
refused unless ``--overwrite``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from admn_ros.datasets.portable_paths import portable
from admn_ros.datasets.corruptions import CORRUPTION_TYPES
from admn_ros.datasets.sample import MODALITIES
from admn_ros.fusion.validate import (ConfigError, Each, Range, at_least, fraction, from_yaml, one_of,
                                      positive)
from admn_ros.quality_estimators.budget import UNITS, Budget
from admn_ros.datasets.figures import agg_figure
from admn_ros.quality_estimators.condition_report import summarise
from admn_ros.quality_estimators.oracle import POLICY_NAME as ORACLE_SPLIT

COLUMNS = ('modality', 'corruption', 'severity', 'budget', 'policy', 'accuracy', 'gflops')
CSV_NAME, META_NAME = 'sweep.csv', 'sweep_meta.json'
PLOTS = {'severity': 'accuracy_vs_severity.png', 'gflops': 'accuracy_vs_gflops.png',
         'layers': 'layers_vs_severity.png'}
ALL = 'all'
# Severities and budgets are compared at this many decimals (CSV text round trip).
_DECIMALS = 6


@dataclass
class RosSweepConfig:
    """``--through-ros``: how each condition's bag is played through ``replay_eval``."""

    rate_hz: float = 10.0        # samples per second of bag time
    rate: float = 1.0            # playback speed factor (bag time per wall time)
    timeout_s: float = 600.0     # per cell, the graph is stopped after this long
    keep_bags: bool = False      # keep each condition's bag in OUT/ros/ (else removed when done)

    LIMITS: ClassVar[dict] = {'rate_hz': positive(), 'rate': Range(0.01, 1000.0), 'timeout_s': positive()}


@dataclass
class SweepConfig:
    """One sweep: what to vary, on which model and data (module docstring)."""

    dataset: str = 'synthetic'
    checkpoint: Optional[str] = None      # None: the dataset's trained default (shipped)
    seed: int = 0                         # test split, corruption draws and the random policy
    size: Optional[int] = None            # test samples; None = the whole split
    modalities: Tuple[str, ...] = MODALITIES
    corruptions: Union[str, Tuple[str, ...]] = ALL   # 'all' or type names (each of a listed modality)
    severities: Tuple[float, ...] = (0.0, 0.5, 1.0)  # 0 = clean
    budgets: Tuple[float, ...] = (0.25, 0.33, 0.5, 1.0)
    budget_unit: str = 'layers'
    policies: Tuple[str, ...] = ('admn', 'naive', 'every_other', 'full')
    oracle_val_size: int = 300            # validation samples per condition for oracle_split
    device: str = 'cpu'
    ros: RosSweepConfig = field(default_factory=RosSweepConfig)

    LIMITS: ClassVar[dict] = {
        'seed': at_least(0), 'size': at_least(1),
        'modalities': Each(one_of(*MODALITIES), min_len=1),
        'severities': Each(fraction(), min_len=1), 'budgets': Each(fraction(open_low=True), min_len=1),
        'budget_unit': one_of(*UNITS), 'policies': Each(min_len=1), 'oracle_val_size': at_least(1)}

    def check(self) -> None:
        from admn_ros.quality_estimators.policies import policy_spec_error
        for name in ('modalities', 'severities', 'budgets', 'policies'):
            values = getattr(self, name)
            keys = [_key(v) if isinstance(v, float) else v for v in values]
            if len(set(keys)) != len(keys):
                raise ConfigError(name, list(values), 'no value twice')
        for spec in self.policies:
            error = spec != ORACLE_SPLIT and policy_spec_error(spec)
            if error:
                raise ConfigError('policies', list(self.policies), error)
        if isinstance(self.corruptions, str):
            if self.corruptions != ALL:
                raise ConfigError('corruptions', self.corruptions, f"'{ALL}' or a list of corruption types")
        else:
            known = {t for m in self.modalities for t in CORRUPTION_TYPES[m][1:]}
            for name in self.corruptions:
                if name not in known:
                    raise ConfigError('corruptions', list(self.corruptions),
                                      f'types of {"/".join(self.modalities)}: {", ".join(sorted(known))}')
            if not self.corruptions or len(set(self.corruptions)) != len(self.corruptions):
                raise ConfigError('corruptions', list(self.corruptions), 'a non-empty list, no type twice')
        from admn_ros.fusion.device import check_device
        check_device(self.device)

    @classmethod
    def from_yaml(cls, path) -> 'SweepConfig':
        """Safe YAML, every key checked; a refusal is one line starting with the path."""
        return from_yaml(cls, path)

    # ------------------------------------------------------------------ the grid
    def pairs(self) -> List[Tuple[str, str]]:
        """(modality, corruption type) in config order."""
        out = []
        for m in self.modalities:
            types = CORRUPTION_TYPES[m][1:]
            wanted = types if self.corruptions == ALL else [t for t in self.corruptions if t in types]
            out += [(m, t) for t in wanted]
        return out

    def cells(self) -> List['Cell']:
        return [Cell(m, t, s, b, p) for m, t in self.pairs() for s in self.severities
                for b in self.budgets for p in self.policies]


def _key(x: float) -> float:
    return round(float(x), _DECIMALS)


@dataclass(frozen=True)
class Cell:
    """One point of the grid; severity 0 is the clean split."""

    modality: str
    corruption: str
    severity: float
    budget: float
    policy: str

    @property
    def key(self) -> Tuple:
        return (self.modality, self.corruption, _key(self.severity), _key(self.budget), self.policy)

    @property
    def condition(self) -> Tuple:
        """What the input set depends on: () for clean, else ((modality, type, severity),)."""
        return () if self.severity == 0 else ((self.modality, self.corruption, float(self.severity)),)


# --------------------------------------------------------------------------- scoring routes
class OfflineCells:
    """Cells scored in this process, batched (the default route)."""

    route = 'offline'

    def __init__(self, scorer):
        self.scorer = scorer
        self._test, self._condition, self._search = None, None, None

    def begin(self, condition, test) -> None:
        self._condition, self._test, self._search = condition, test, None

    def score(self, policy: str, budget: Budget) -> Dict[str, Any]:
        """``{metric, gflops, layers, n}`` of one cell on the current condition."""
        if policy == ORACLE_SPLIT and self._search is None:
            self._search = self.scorer.search(self._condition)   # once per condition
        row = self.scorer.score(self._test, policy, budget, self._search)
        return {**row, 'n': int(len(self._test['label']))}

    def end(self) -> None:
        self._test = self._search = None


# --------------------------------------------------------------------------- the run
@dataclass
class SweepResult:
    out: Path
    rows: List[Dict[str, Any]]
    computed: int                 # cells scored by this run
    skipped: int                  # cells found finished (--resume)
    files: Dict[str, Path] = field(default_factory=dict)
    curves: Dict[str, Dict] = field(default_factory=dict)   # per plot: what it draws (_drawn)


def config_hash(cfg: SweepConfig, checkpoint_sha256: str, route: str) -> str:
    """What makes two sweeps' rows comparable: every config field (the ROS settings only on that
    route), the checkpoint's content and the route."""
    data = asdict(cfg)
    if route != 'ros':
        data.pop('ros')
    text = json.dumps({'config': data, 'checkpoint_sha256': checkpoint_sha256, 'route': route},
                      sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_sha256(path) -> str:
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


def default_out(config_path) -> Path:
    return Path('runs') / 'sweeps' / Path(config_path).stem


def run_sweep(cfg: SweepConfig, out, *, resume: bool = False, overwrite: bool = False,
              route=None, progress: bool = True, progress_bar=None, log=print) -> SweepResult:
    """Score every cell of ``cfg`` not yet in ``out`` (see the module docstring).

    ``route(scorer, cfg, out)`` makes the object that scores cells (default :class:`OfflineCells`;
    the ROS route is :func:`admn_ros.sweep_ros.ros_route`). ``progress_bar(total, initial)`` replaces the
    progress display (anything with ``update(n)`` and ``close()``).
    """
    from admn_ros.datasets.conditions import Condition, condition_name
    from admn_ros.quality_estimators.evaluate import ConditionScorer
    from admn_ros.quality_estimators.oracle import OracleConfig
    out = Path(out)
    csv_path = out / CSV_NAME
    policies = list(cfg.policies)
    scorer = ConditionScorer(cfg.checkpoint, cfg.dataset, policies, seed=cfg.seed, size=cfg.size,
                             device=cfg.device, oracle=OracleConfig(val_size=cfg.oracle_val_size))
    cells_route = route(scorer, cfg, out) if route is not None else OfflineCells(scorer)
    setup = scorer.setup
    missing = [m for m in cfg.modalities if m not in setup.test.modalities]
    if missing:
        raise ValueError(f'dataset {setup.dataset!r} has no {", ".join(missing)} '
                         f'(it has {", ".join(setup.test.modalities)}): leave it out of modalities')
    columns = list(COLUMNS) + [f'layers_{m}' for m in setup.model.modalities] + ['n']
    meta = {'config': asdict(cfg), 'config_hash': config_hash(cfg, _file_sha256(setup.checkpoint),
                                                              cells_route.route),
            'route': cells_route.route, 'checkpoint': setup.checkpoint, 'dataset': setup.dataset,
            'columns': columns}
    done = _prepare_out(out, meta, resume=resume, overwrite=overwrite)

    grid = cfg.cells()
    todo = [c for c in grid if c.key not in done]
    log(f'noise sweep: {len(grid)} cells ({len(done)} done, {len(todo)} to score) on '
        f'{setup.dataset} test ({len(setup.test)} samples), route {cells_route.route}; rows -> {csv_path}')
    by_condition: Dict[Tuple, List[Cell]] = {}
    for cell in todo:
        by_condition.setdefault(cell.condition, []).append(cell)
    bar = (progress_bar or (lambda total, initial: _progress(total, initial, progress)))(len(grid), len(done))
    computed = 0
    try:
        with open(csv_path, 'a', newline='', encoding='utf-8') as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator='\n')
            if not done and f.tell() == 0:
                writer.writeheader()
            for corrupted, cells in by_condition.items():
                condition = Condition(condition_name(corrupted), corrupted)
                cells_route.begin(condition, scorer.under(condition))
                try:
                    # Severity 0 is one clean condition: each (budget, policy) is scored once and
                    # written for every (modality, corruption) that asks for it.
                    for budget, policy in dict.fromkeys((c.budget, c.policy) for c in cells):
                        scored = cells_route.score(policy, Budget(float(budget), cfg.budget_unit))
                        for cell in (c for c in cells if (c.budget, c.policy) == (budget, policy)):
                            writer.writerow(_csv_row(cell, scored, setup.model.modalities))
                            f.flush()
                            os.fsync(f.fileno())
                            computed += 1
                            bar.update(1)
                finally:
                    cells_route.end()
    except KeyboardInterrupt:
        bar.close()
        log(f'\ninterrupted: {len(done) + computed} of {len(grid)} cells are in {csv_path}; '
            f'continue with --resume')
        raise
    bar.close()
    rows = read_rows(csv_path)
    keys = [r['key'] for r in rows]
    if sorted(keys) != sorted(c.key for c in grid):
        raise RuntimeError(f'{csv_path} does not hold one row per cell of the grid after the sweep')
    order = {c.key: i for i, c in enumerate(grid)}
    rows.sort(key=lambda r: order[r['key']])
    result = SweepResult(out, rows, computed, len(done))
    result.files, result.curves = write_outputs(rows, meta, out, log=log)
    return result


def _prepare_out(out: Path, meta: Dict, *, resume: bool, overwrite: bool) -> set:
    """Cell keys already finished in ``out`` (empty for a new sweep); writes the meta file."""
    csv_path, meta_path = out / CSV_NAME, out / META_NAME
    has_rows = csv_path.is_file() and csv_path.stat().st_size > 0
    if resume and has_rows:
        if not meta_path.is_file():
            raise ValueError(f'{out}: {CSV_NAME} without {META_NAME}; cannot tell which config made it')
        old = json.loads(meta_path.read_text(encoding='utf-8'))
        if old.get('config_hash') != meta['config_hash']:
            raise ValueError(f'{out} was made by a different config, checkpoint or route (hash '
                             f'{old.get("config_hash")}, now {meta["config_hash"]}): resume with the same '
                             'config, or write to another --out')
        _drop_partial_line(csv_path)
        return {r['key'] for r in read_rows(csv_path)}
    if has_rows and not overwrite:
        raise ValueError(f'{csv_path} already holds a sweep: --resume to continue it, --overwrite to '
                         'start again, or another --out')
    out.mkdir(parents=True, exist_ok=True)
    for name in [CSV_NAME, 'sweep.json', 'sweep.md'] + list(PLOTS.values()):
        (out / name).unlink(missing_ok=True)
    meta_path.write_text(json.dumps(portable(meta), indent=2) + '\n', encoding='utf-8')
    return set()


def _drop_partial_line(path: Path) -> None:
    """A row cut short by a kill has no newline: cut it off so it is scored again."""
    data = path.read_bytes()
    if data and not data.endswith(b'\n'):
        with open(path, 'r+b') as f:
            f.truncate(data.rfind(b'\n') + 1)


def _csv_row(cell: Cell, scored: Dict[str, Any], modalities: Sequence[str]) -> Dict[str, Any]:
    layers = scored.get('layers') or {}
    row = {'modality': cell.modality, 'corruption': cell.corruption, 'severity': repr(float(cell.severity)),
           'budget': repr(float(cell.budget)), 'policy': cell.policy,
           'accuracy': '' if scored['metric'] is None else f"{scored['metric']:.5f}",
           'gflops': '' if scored['gflops'] is None else f"{scored['gflops']:.5f}", 'n': scored['n']}
    for m in modalities:
        row[f'layers_{m}'] = f'{layers[m]:.3f}' if m in layers else ''
    return row


def read_rows(path) -> List[Dict[str, Any]]:
    """The rows of a sweep CSV, typed (None for an empty number), each with its cell ``key``."""
    rows = []
    with open(path, newline='', encoding='utf-8') as f:
        for i, raw in enumerate(csv.DictReader(f), 2):
            try:
                row = {k: raw[k] for k in ('modality', 'corruption', 'policy')}
                row['severity'], row['budget'] = float(raw['severity']), float(raw['budget'])
                for k in ('accuracy', 'gflops'):
                    row[k] = float(raw[k]) if raw[k] else None
                row['layers'] = {k[len('layers_'):]: float(v) for k, v in raw.items()
                                 if k.startswith('layers_') and v}
                row['n'] = int(raw['n'])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f'{path}: line {i} is not a sweep row ({exc}): {raw}') from None
            row['key'] = (row['modality'], row['corruption'], _key(row['severity']), _key(row['budget']),
                          row['policy'])
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- progress
def _progress(total: int, initial: int, enabled: bool):
    """A tqdm bar with ETA, or a line every 10 s where tqdm is missing; nothing when disabled."""
    if not enabled:
        return _Quiet()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines(total, initial)
    return tqdm(total=total, initial=initial, desc='cells', unit='cell', dynamic_ncols=True,
                smoothing=0.1)


class _Quiet:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Lines:
    def __init__(self, total: int, initial: int, every_s: float = 10.0):
        self.total, self.done, self.start_done = total, initial, initial
        self.started = self.last = time.monotonic()
        self.every_s = every_s

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = (self.done - self.start_done) / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float('nan')
            print(f'cells {self.done}/{self.total}, ETA {eta:.0f} s', file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- outputs
def conditions_report(rows: Sequence[Dict], meta: Dict) -> Dict:
    """The rows as :func:`admn_ros.quality_estimators.evaluate.evaluate_conditions` reports them
    (one condition per (modality, corruption, severity), clean once), with its summary."""
    from admn_ros.datasets.conditions import condition_name
    conditions, results = {}, []
    seen = set()
    for r in rows:
        corrupted = () if r['severity'] == 0 else ((r['modality'], r['corruption'], r['severity']),)
        name = condition_name(corrupted)
        if (name, r['budget'], r['policy']) in seen:
            continue           # the clean rows repeated per (modality, corruption)
        seen.add((name, r['budget'], r['policy']))
        described = [{'modality': m, 'type': t, 'severity': s} for m, t, s in corrupted]
        conditions.setdefault(name, {'name': name, 'corrupted': described, 'recorded': False})
        results.append({'condition': name, 'corrupted': described, 'samples': r['n'], 'policy': r['policy'],
                        'budget': r['budget'], 'metric': r['accuracy'], 'gflops': r['gflops'],
                        'layers': r['layers']})
    return {'dataset': meta['dataset'], 'checkpoint': meta['checkpoint'],
            'budget_unit': meta['config']['budget_unit'], 'metric_name': 'accuracy', 'route': meta['route'],
            'conditions': list(conditions.values()), 'results': results, 'summary': summarise(results)}


def write_outputs(rows: Sequence[Dict], meta: Dict, out: Path, *, log=print) -> Tuple[Dict[str, Path], Dict]:
    """``sweep.json``, ``sweep.md`` and the plots of a finished sweep; returns their paths and,
    per plot, the curves it draws."""
    report = conditions_report(rows, meta)
    public = [{k: v for k, v in r.items() if k != 'key'} for r in rows]
    files = {'json': out / 'sweep.json', 'md': out / 'sweep.md'}
    files['json'].write_text(json.dumps(portable({**meta, 'rows': public, 'by_condition': report}),
                                        indent=2) + '\n', encoding='utf-8')
    files['md'].write_text(markdown(report) + '\n', encoding='utf-8')
    plots = {'severity': plot_accuracy_vs_severity, 'gflops': plot_accuracy_vs_gflops,
             'layers': plot_layers_vs_severity}
    curves = {}
    for kind, name in PLOTS.items():
        files[kind] = out / name
        curves[kind] = plots[kind](rows, files[kind])
    log(f'sweep done: {out / CSV_NAME}, ' + ', '.join(str(p) for p in files.values()))
    return files, curves


def markdown(report: Dict) -> str:
    """A table per budget: accuracy per condition and policy, layers of the adaptive policies,
    then the means over single-sensor conditions (and the destroying ones) as the summary has them."""
    results = report['results']
    policies = list(dict.fromkeys(r['policy'] for r in results))
    budgets = sorted({r['budget'] for r in results})
    mods = next((list(r['layers']) for r in results if r['layers']), [])
    shown = [p for p in ('admn', ORACLE_SPLIT) if p in policies]
    cell = {(r['condition'], r['policy'], r['budget']): r for r in results}
    lines = [f"Noise sweep on {report['dataset']} ({report['route']}), budget unit {report['budget_unit']}; "
             f"layers {'/'.join(mods)}.", '']
    for b in budgets:
        head = [f'condition (budget {b:g})'] + policies + [f'{p} layers' for p in shown]
        lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for c in report['conditions']:
            row = [cell.get((c['name'], p, b)) for p in policies]
            text = [c['name']] + ['-' if r is None or r['metric'] is None else f"{r['metric']:.3f}" for r in row]
            for p in shown:
                r = cell.get((c['name'], p, b))
                text.append('-' if r is None or not r['layers'] else
                            '/'.join(f"{r['layers'].get(m, 0.0):.1f}" for m in mods))
            lines.append('| ' + ' | '.join(text) + ' |')
        for label, key, count in (('single-sensor conditions', 'single_mean', 'single_count'),
                                  ('destroying conditions', 'destroying_mean', 'destroying_count')):
            means = {s['policy']: s for s in report['summary'] if s['budget'] == b}
            n = max((s[count] for s in means.values()), default=0)
            if n:
                lines.append(f'| *mean, {n} {label}* | ' + ' | '.join(
                    '-' if means[p][key] is None else f'{means[p][key]:.3f}' for p in policies)
                    + ' |' * (len(shown) + 1))
        lines.append('')
    return '\n'.join(lines).rstrip()


def _drawn(axes) -> Dict[str, Dict[str, Tuple[List[float], List[float]]]]:
    """``{panel title: {line label: (x, y)}}``: what a figure shows, for callers and tests."""
    out = {}
    for ax in axes:
        if ax.get_visible() and ax.get_lines():
            out[ax.get_title()] = {ln.get_label(): (list(map(float, ln.get_xdata())), list(map(float, ln.get_ydata())))
                                   for ln in ax.get_lines()}
    return out


def _panels(n: int, width: float = 3.4, height: float = 2.8):
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = agg_figure((width * cols, height * rows + 1.0))
    fig.set_layout_engine('constrained')   # the legend goes 'outside lower center' (see _legend)
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


_STYLES = ('-', '--', ':', '-.')


def _budget_label(b: float, budgets: Sequence[float]) -> str:
    return f' @ {b:g}' if len(budgets) > 1 else ''


def plot_accuracy_vs_severity(rows: Sequence[Dict], path) -> Dict:
    """One panel per (modality, corruption): accuracy against severity, a line per policy (and
    budget, dashed for the second, ...). Returns what was drawn (:func:`_drawn`)."""
    pairs = list(dict.fromkeys((r['modality'], r['corruption']) for r in rows))
    policies = list(dict.fromkeys(r['policy'] for r in rows))
    budgets = sorted({r['budget'] for r in rows})
    fig, axes = _panels(len(pairs))
    for ax, (m, t) in zip(axes, pairs):
        for i, p in enumerate(policies):
            for j, b in enumerate(budgets):
                pts = sorted((r['severity'], r['accuracy']) for r in rows if (r['modality'], r['corruption'],
                             r['policy'], r['budget']) == (m, t, p, b) and r['accuracy'] is not None)
                if pts:
                    ax.plot(*zip(*pts), marker='o', ms=3, color=f'C{i}', ls=_STYLES[j % len(_STYLES)],
                            label=f'{p}{_budget_label(b, budgets)}')
        ax.set_title(f'{m}:{t}', fontsize='small')
        ax.set_xlabel('severity')
        ax.set_ylabel('accuracy')
        ax.grid(alpha=0.3)
    _legend(fig, axes[0])
    fig.suptitle('accuracy against corruption severity')
    return _save(fig, axes, path)


def plot_accuracy_vs_gflops(rows: Sequence[Dict], path) -> Dict:
    """One panel per severity: mean accuracy over the (modality, corruption) pairs against mean
    GFLOPs, a line per policy through its budgets."""
    severities = sorted({r['severity'] for r in rows})
    policies = list(dict.fromkeys(r['policy'] for r in rows))
    budgets = sorted({r['budget'] for r in rows})
    fig, axes = _panels(len(severities))
    for ax, s in zip(axes, severities):
        for i, p in enumerate(policies):
            pts = []
            for b in budgets:
                sel = [r for r in rows if (r['severity'], r['policy'], r['budget']) == (s, p, b)
                       and r['accuracy'] is not None]
                if sel:
                    pts.append((float(np.mean([r['gflops'] for r in sel])),
                                float(np.mean([r['accuracy'] for r in sel]))))
            if pts:
                ax.plot(*zip(*sorted(pts)), marker='o', ms=3, color=f'C{i}', label=p)
        ax.set_title('clean' if s == 0 else f'severity {s:g}', fontsize='small')
        ax.set_xlabel('GFLOPs per sample')
        ax.set_ylabel('mean accuracy')
        ax.grid(alpha=0.3)
    _legend(fig, axes[0])
    fig.suptitle('accuracy against compute (mean over corruptions)')
    return _save(fig, axes, path)


LAYER_POLICIES = ('admn', 'heuristic', ORACLE_SPLIT)   # allocations that depend on the input
COLOURS = {'rgb': 'tab:red', 'depth': 'tab:blue', 'audio': 'tab:green'}


def plot_layers_vs_severity(rows: Sequence[Dict], path) -> Dict:
    """One panel per (modality, corruption): mean layers of each modality against the severity of
    that corruption, for the first input-dependent policy evaluated (admn, heuristic, oracle_split;
    else the first policy), a line style per budget."""
    policies = list(dict.fromkeys(r['policy'] for r in rows))
    policy = next((p for p in LAYER_POLICIES if p in policies), policies[0])
    rows = [r for r in rows if r['policy'] == policy]
    pairs = list(dict.fromkeys((r['modality'], r['corruption']) for r in rows))
    budgets = sorted({r['budget'] for r in rows})
    mods = list(dict.fromkeys(m for r in rows for m in r['layers']))
    fig, axes = _panels(len(pairs))
    for ax, (m, t) in zip(axes, pairs):
        for j, b in enumerate(budgets):
            sel = sorted((r for r in rows if (r['modality'], r['corruption'], r['budget']) == (m, t, b)),
                         key=lambda r: r['severity'])
            for k, mod in enumerate(mods):
                pts = [(r['severity'], r['layers'][mod]) for r in sel if mod in r['layers']]
                if pts:
                    ax.plot(*zip(*pts), marker='o', ms=3, color=COLOURS.get(mod, f'C{k}'),
                            ls=_STYLES[j % len(_STYLES)], label=f'{mod}{_budget_label(b, budgets)}')
        ax.set_title(f'{m}:{t}', fontsize='small')
        ax.set_xlabel(f'{m} severity')
        ax.set_ylabel('mean layers')
        ax.grid(alpha=0.3)
    _legend(fig, axes[0])
    fig.suptitle(f'layers per modality against severity ({policy})')
    return _save(fig, axes, path)


def _legend(fig, ax) -> None:
    """One legend for the figure, below the panels (every panel has the same lines)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:   # a sweep whose cells scored nothing draws no curve
        fig.legend(handles, labels, loc='outside lower center', ncol=min(len(labels), 6), fontsize='small')


def _save(fig, axes, path) -> Dict:
    drawn = _drawn(axes)
    fig.savefig(path, dpi=110)   # an Agg figure outside pyplot: nothing to close, freed with ``fig``
    return drawn


# --------------------------------------------------------------------------- command line
def run_sweep_cli(args, route=None) -> int:
    cfg = SweepConfig.from_yaml(args.config)
    out = Path(args.out) if args.out else default_out(args.config)
    started = time.monotonic()
    result = run_sweep(cfg, out, resume=args.resume, overwrite=args.overwrite, route=route,
                       progress=not args.no_progress)
    print(f'{result.computed} cells scored, {result.skipped} resumed, in {time.monotonic() - started:.0f} s')
    return 0


__all__ = ['SweepConfig', 'RosSweepConfig', 'Cell', 'OfflineCells', 'SweepResult', 'run_sweep', 'read_rows',
           'config_hash', 'conditions_report', 'write_outputs', 'markdown', 'plot_accuracy_vs_severity',
           'plot_accuracy_vs_gflops', 'plot_layers_vs_severity', 'run_sweep_cli', 'default_out']
