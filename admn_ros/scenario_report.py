"""What happened in each phase of a scripted scenario, from the evaluator's per-frame timeline.

Pure Python plus matplotlib's Agg canvas (no pyplot, no rclpy): the demo calls it after the graph
ends, the tests call it on made-up timelines. A frame belongs to the phase in force at its source time (seconds since the
first frame). Each phase gets its frames, accuracy, mean layers per modality (over the frames where
the modality was present), how often each sensor was absent, the executed budget, latency and the
estimated quality; its sentence compares the layers with the clean phase at the same budget, so a
shift reads as a shift and not as a budget change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from admn_ros.figures import agg_figure
from admn_ros.report import COLOURS, modality_order
from admn_ros.scenario import Scenario

NAMES = {'rgb': 'RGB', 'depth': 'depth', 'audio': 'audio'}


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _pct(values, q) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else None


def modalities_of(timeline: Sequence[Mapping[str, Any]]) -> List[str]:
    names = set()
    for frame in timeline:
        names.update(frame.get('layers', {}))
        names.update((frame.get('levels') or {}))
    return modality_order(names)


def phase_stats(timeline: Sequence[Mapping[str, Any]], scenario: Scenario) -> List[Dict[str, Any]]:
    """One dict per scenario phase (phases without frames included, with ``frames`` 0)."""
    mods = modalities_of(timeline)
    groups: List[List[Mapping[str, Any]]] = [[] for _ in scenario.phases]
    for frame in timeline:
        groups[scenario.phase_index(float(frame['t_s']))].append(frame)
    out = []
    for i, (phase, frames) in enumerate(zip(scenario.phases, groups)):
        scored = [f['correct'] for f in frames if f.get('correct') is not None]
        entry: Dict[str, Any] = {
            'index': i + 1, 'name': phase.name, 'start_s': phase.start_s, 'end_s': phase.end_s,
            'scripted_budget': phase.budget,
            'corrupted': {m: list(lv) for m, lv in phase.corrupted().items()},
            'frames': len(frames), 'scored': len(scored),
            'accuracy': float(np.mean(scored)) if scored else None,
            'budget': _mean(f.get('budget') for f in frames),
            'latency_ms_p50': _pct([f.get('latency_ms') for f in frames], 50),
            'latency_ms_p95': _pct([f.get('latency_ms') for f in frames], 95),
            'layers': {}, 'absent': {}, 'quality': {}}
        for m in mods:
            present = [f['layers'][m] for f in frames if m in f.get('layers', {})]
            entry['layers'][m] = _mean(present)
            entry['absent'][m] = len(frames) - len(present)
            entry['quality'][m] = _mean((f.get('quality') or {}).get(m) for f in frames)
        out.append(entry)
    return out


def reference_phase(stats: Sequence[Mapping[str, Any]], i: int) -> Optional[Mapping[str, Any]]:
    """The clean phase (nothing corrupted, frames seen) at the same scripted budget as phase ``i``:
    the latest one before it, else the first after it; None when the scenario has none."""
    target = stats[i]['scripted_budget']
    candidates = [s for s in stats if not s['corrupted'] and s['frames'] and
                  s['scripted_budget'] == target and s is not stats[i]]
    before = [s for s in candidates if s['index'] < stats[i]['index']]
    return (before[-1] if before else candidates[0]) if candidates else None


def layer_totals(stats: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """Layers per modality at the largest scripted budget (every layer when it is 1)."""
    full = [s for s in stats if s['frames'] and s['scripted_budget'] >= 1.0 and not s['corrupted']]
    if not full:
        return {}
    return {m: v for m, v in full[0]['layers'].items() if v is not None}


def _fmt(value: Optional[float], spec: str = '.2f') -> str:
    return '-' if value is None else format(value, spec)


def sentence(stats: Sequence[Mapping[str, Any]], i: int, totals: Mapping[str, float]) -> str:
    """A few plain words on phase ``i``, from its measurements."""
    s = stats[i]
    head = (f"**{s['name']}** ({s['start_s']:.0f}-{s['end_s']:.0f} s, {s['frames']} frames, "
            f"budget {_fmt(s['budget'])})")
    if not s['frames']:
        return head + ': no frame reached the evaluator in this phase.'
    ref = reference_phase(stats, i)
    parts = []
    for m, layers in s['layers'].items():
        name = NAMES.get(m, m)
        if layers is None:
            parts.append(f"{name} sent nothing ({s['absent'][m]} frames without it)")
            continue
        text = f'{name} {layers:.1f}'
        if m in totals:
            text += f' of {totals[m]:.0f}'
        if ref is not None and ref is not s and ref['layers'].get(m) is not None:
            text += f" ({ref['layers'][m]:.1f} clean)"
        if s['absent'][m]:
            text += f", absent in {s['absent'][m]} frames"
        parts.append(text)
    out = head + ': layers ' + ', '.join(parts) + '.'
    if s['accuracy'] is not None:
        out += f" Accuracy {s['accuracy']:.2f}"
        if ref is not None and ref['accuracy'] is not None:
            out += f" against {ref['accuracy']:.2f} clean at this budget"
        out += '.'
    moved = _shift_words(s, ref)
    if moved:
        out += ' ' + moved
    if s['latency_ms_p50'] is not None:
        out += f" Latency p50 {s['latency_ms_p50']:.0f} ms, p95 {s['latency_ms_p95']:.0f} ms."
    return out


def _shift_words(s: Mapping[str, Any], ref: Optional[Mapping[str, Any]]) -> str:
    """Where the layers went, when a sensor is corrupted or silent and a clean reference exists."""
    if ref is None or not s['corrupted']:
        return ''
    delta = {m: (s['layers'][m] or 0.0) - (ref['layers'].get(m) or 0.0) for m in s['layers']}
    lost = [m for m in s['corrupted'] if m in delta and delta[m] < -0.5]
    gained = [m for m, d in delta.items() if d > 0.5]
    if lost and gained:
        return (f"Layers moved from {' and '.join(NAMES.get(m, m) for m in lost)} to "
                f"{' and '.join(NAMES.get(m, m) for m in gained)}.")
    if not lost:
        return (f"The degraded {' and '.join(NAMES.get(m, m) for m in s['corrupted'])} kept "
                f"its layers.")
    return ''


def plot_timeline(timeline: Sequence[Mapping[str, Any]], scenario: Scenario, path) -> Path:
    """Layers per modality over time against each modality's corruption and the budget."""
    mods = modalities_of(timeline) or ['rgb', 'depth', 'audio']
    t = np.array([f['t_s'] for f in timeline], dtype=float)
    fig = agg_figure((10, 1.9 * (len(mods) + 1)))
    axes = fig.subplots(len(mods) + 1, 1, sharex=True)
    top = axes[0]
    budget = [f.get('budget') for f in timeline]
    top.step(t, [np.nan if b is None else b for b in budget], where='post', color='black',
             label='budget (executed)')
    correct = np.array([np.nan if f.get('correct') is None else float(f['correct']) for f in timeline])
    if np.isfinite(correct).any():
        window = max(1, int(round(2 * scenario.rate_hz)))
        kernel = np.ones(window) / window
        valid = np.isfinite(correct)
        smooth = np.convolve(np.nan_to_num(correct), kernel, 'same') / np.maximum(
            np.convolve(valid.astype(float), kernel, 'same'), 1e-9)
        top.plot(t, smooth, color='tab:purple', label='accuracy (2 s window)')
    top.set_ylim(0, 1.05)
    top.legend(loc='lower left', fontsize=8)
    for phase in scenario.phases:
        for ax in axes:
            ax.axvline(phase.start_s, color='grey', lw=0.6, ls=':')
    for ax, m in zip(axes[1:], mods):
        layers = [f.get('layers', {}).get(m) for f in timeline]
        ax.step(t, [np.nan if v is None else v for v in layers], where='post',
                color=COLOURS.get(m, 'black'), label=f'{NAMES.get(m, m)} layers')
        ax.set_ylabel('layers')
        twin = ax.twinx()
        severity = []
        for f in timeline:
            level = (f.get('levels') or {}).get(m)
            severity.append(0.0 if not level or level[0] == 'clean' else float(level[1]))
        twin.fill_between(t, severity, step='post', color=COLOURS.get(m, 'grey'), alpha=0.15,
                          label='corruption severity')
        twin.set_ylim(0, 1.05)
        twin.set_ylabel('severity')
        ax.legend(loc='upper left', fontsize=8)
    for i, phase in enumerate(scenario.phases):
        top.annotate(str(i + 1), (phase.start_s, 1.0), fontsize=8, color='grey')
    axes[-1].set_xlabel('source time (s)')
    fig.suptitle('Layers per modality against corruption and budget (phase numbers on top)')
    return _save(fig, path)


def _save(fig, path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path


def plot_phases(stats: Sequence[Mapping[str, Any]], path) -> Path:
    """Accuracy and latency (p50, p95) per phase, side by side."""
    x = np.arange(len(stats))
    labels = [str(s['index']) for s in stats]
    fig = agg_figure((10, 3.2))
    acc, lat = fig.subplots(1, 2)
    acc.bar(x, [s['accuracy'] or 0.0 for s in stats], color='tab:purple')
    acc.set_ylim(0, 1)
    acc.set_title('accuracy per phase')
    lat.bar(x - 0.2, [s['latency_ms_p50'] or 0.0 for s in stats], 0.4, label='p50')
    lat.bar(x + 0.2, [s['latency_ms_p95'] or 0.0 for s in stats], 0.4, label='p95')
    lat.set_title('latency per phase (ms)')
    lat.legend(fontsize=8)
    for ax in (acc, lat):
        ax.set_xticks(x, labels)
        ax.set_xlabel('phase')
    return _save(fig, path)


def markdown(stats: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
             plots: Mapping[str, str]) -> str:
    """The demo's ``report.md``: the run in numbers, a table and a few sentences per phase."""
    totals = layer_totals(stats)
    mods = list(stats[0]['layers']) if stats else []
    lines = ['# admn_ros demo report', '',
             f"{summary.get('matched', 0)} predictions scored, accuracy "
             f"{_fmt(summary.get('accuracy'), '.3f')}, {summary.get('drops', 0)} drops, latency p50 "
             f"{_fmt(summary.get('latency_ms_p50'), '.1f')} ms.", '',
             '## Phases', '']
    lines += [f'{s["index"]}. ' + sentence(stats, i, totals) for i, s in enumerate(stats)]
    lines += ['', '| # | phase | frames | budget | accuracy | '
              + ' | '.join(f'{NAMES.get(m, m)} layers' for m in mods) + ' | latency p50 / p95 ms |',
              '|---|---|---|---|---|' + '---|' * len(mods) + '---|']
    for s in stats:
        cells = [_fmt(s['layers'][m], '.1f') for m in mods]
        lines.append(f"| {s['index']} | {s['name']} | {s['frames']} | {_fmt(s['budget'])} | "
                     f"{_fmt(s['accuracy'])} | " + ' | '.join(cells) +
                     f" | {_fmt(s['latency_ms_p50'], '.0f')} / {_fmt(s['latency_ms_p95'], '.0f')} |")
    lines.append('')
    for title, name in plots.items():
        lines += [f'![{title}]({name})', '']
    return '\n'.join(lines)
