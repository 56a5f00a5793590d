"""What a run did when a sensor degraded: corruption phases, layer shifts, and a timeline plot.

Pure Python (no rclpy): the evaluator node feeds it per-frame records, tests call it directly.

* A :class:`Frame` is one prediction: its source stamp, the layers each *present* modality got,
  each modality's corruption ``(type, severity)`` at that stamp (None when no corruption record
  came for it) and whether the prediction was right (None when it was not scored).
* A frame's *corruption state* lists its corrupted modalities with their type and severity rounded
  to ``severity_step`` (so a ramp gives a few phases, not one per frame); corruption of a modality
  the frame has no layers for (a sensor the model lacks) is ignored.
* A *phase* is a maximal run of consecutive frames (in stamp order) with one state: ``clean``,
  e.g. ``rgb low_light 1.0``, or ``unknown`` (no corruption record).
* The *shift* of modality m is ``ratio`` = mean layers of m over the frames where m's severity is
  at least ``min_severity`` / mean layers of m over the frames where every modality is clean.
  Mild levels are left out of the ratio: a sensor that still works need not lose its layers.
  Layers left m when ``ratio <= target`` (:data:`TARGET_RATIO`).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from admn_ros.figures import agg_figure

Level = Tuple[str, float]
State = Optional[Tuple[Tuple[str, str, float], ...]]   # None = unknown, () = clean

DEFAULT_SEVERITY_STEP = 0.25
DEFAULT_MIN_SEVERITY = 0.5
TARGET_RATIO = 0.5
MODALITY_ORDER = ('rgb', 'depth', 'audio')   # report order; other names follow, sorted
COLOURS = {'rgb': 'tab:red', 'depth': 'tab:blue', 'audio': 'tab:green'}


@dataclass(frozen=True)
class Frame:
    stamp_ns: int
    layers: Mapping[str, float]                    # present modalities only
    levels: Optional[Mapping[str, Level]] = None   # None: no corruption record for this stamp
    correct: Optional[bool] = None                 # None: no label matched


# --------------------------------------------------------------------------- small helpers
def nearest(sorted_keys: Sequence[int], stamp: int, tolerance_ns: int = 0) -> Optional[int]:
    """The key equal to ``stamp``, else the nearest one within ``tolerance_ns``; None otherwise."""
    i = bisect.bisect_left(sorted_keys, stamp)
    if i < len(sorted_keys) and sorted_keys[i] == stamp:
        return stamp
    if tolerance_ns <= 0:
        return None
    near = [k for k in sorted_keys[max(i - 1, 0):i + 1] if abs(k - stamp) <= tolerance_ns]
    return min(near, key=lambda k: abs(k - stamp)) if near else None


def modality_order(names) -> List[str]:
    names = set(names)
    return [m for m in MODALITY_ORDER if m in names] + sorted(names - set(MODALITY_ORDER))


def quantise(severity: float, step: float) -> float:
    """``severity`` rounded to ``step``; a corrupted level never rounds to 0."""
    q = round(round(severity / step) * step, 6)
    return max(q, round(step, 6)) if severity > 0 else 0.0


def fmt_severity(severity: float) -> str:
    text = f'{severity:.2f}'.rstrip('0')
    return text + '0' if text.endswith('.') else text


def _severity(frame: Frame, modality: str) -> float:
    ctype, severity = (frame.levels or {}).get(modality, ('clean', 0.0))
    return 0.0 if ctype == 'clean' else float(severity)


def frame_state(frame: Frame, step: float = DEFAULT_SEVERITY_STEP) -> State:
    if frame.levels is None:
        return None
    out = []
    for m in modality_order(frame.layers):
        ctype, severity = frame.levels.get(m, ('clean', 0.0))
        if ctype != 'clean' and severity > 0:
            out.append((m, ctype, quantise(float(severity), step)))
    return tuple(out)


def state_label(state: State) -> str:
    if state is None:
        return 'unknown'
    if not state:
        return 'clean'
    return ', '.join(f'{m} {c} {fmt_severity(s)}' for m, c, s in state)


def _mean(values) -> Optional[float]:
    values = list(values)
    return sum(values) / len(values) if values else None


def _mean_layers(frames: Sequence[Frame], modalities: Sequence[str]) -> Dict[str, float]:
    out = {}
    for m in modalities:
        value = _mean(f.layers[m] for f in frames if m in f.layers)
        if value is not None:
            out[m] = value
    return out


def _change(value: float, clean: Optional[float]) -> Optional[float]:
    """Relative change against the clean mean (None without a usable one)."""
    if clean is None or clean <= 0:
        return None
    return (value - clean) / clean


def _pct(change: Optional[float]) -> str:
    return 'n/a' if change is None else f'{100 * change:+.0f}%'


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


# --------------------------------------------------------------------------- analysis
def segment(frames: Sequence[Frame], step: float = DEFAULT_SEVERITY_STEP
            ) -> List[Tuple[State, int, int]]:
    """Maximal runs of one corruption state: ``(state, first index, last index)``."""
    runs: List[Tuple[State, int, int]] = []
    for i, frame in enumerate(frames):
        state = frame_state(frame, step)
        if runs and runs[-1][0] == state:
            runs[-1] = (state, runs[-1][1], i)
        else:
            runs.append((state, i, i))
    return runs


def phase_sentence(phase: Mapping[str, Any], clean_layers: Mapping[str, float]) -> str:
    """One phase in words, its layers compared with the all-clean means."""
    first, last = phase['first_frame'], phase['last_frame']
    t0, t1 = phase['t_start_s'], phase['t_end_s']
    span = (f'frame {first}, {t0:.1f} s' if first == last
            else f'frames {first}-{last}, {t0:.1f}-{t1:.1f} s')
    layers, change = phase['mean_layers'], phase['layers_vs_clean']
    degraded = phase['degraded']
    if phase['accuracy'] is None:
        score = 'no prediction scored.'
    else:
        score = f"accuracy {phase['accuracy']:.2f} ({phase['scored']} scored)."
    if not degraded:
        opening = ('While every sensor was clean' if phase['label'] == 'clean'
                   else 'With no corruption record')
        plain = ', '.join(f'{m} {v:.1f}' for m, v in layers.items())
        return f'{opening} ({span}): {plain} layers; {score}'
    names = list(degraded)
    verb = 'was' if len(names) == 1 else 'were'
    if len(names) == 1:
        what = f"{degraded[names[0]]['type']} {fmt_severity(degraded[names[0]]['severity'])}"
        detail = f'{what}, {span}'
    else:
        what = ', '.join(f"{m} {d['type']} {fmt_severity(d['severity'])}"
                         for m, d in degraded.items())
        detail = f'{what}; {span}'
    parts = []
    for k, m in enumerate(m for m in names if m in layers):
        got, unit = ('got ', ' layers') if k == 0 else ('', '')
        if clean_layers.get(m) is None:
            parts.append(f'{m} {got}{layers[m]:.1f}{unit}')
        else:
            parts.append(f'{m} {got}{layers[m]:.1f}{unit} against {clean_layers[m]:.1f}'
                         f'{" when clean" if k == 0 else ""} ({_pct(change.get(m))})')
    others = [f'{m} {v:.1f}' + (f' ({_pct(change.get(m))})' if m in clean_layers else '')
              for m, v in layers.items() if m not in degraded]
    text = f'While {_and(names)} {verb} degraded ({detail}): ' + ', '.join(parts)
    if others:
        text += '; ' + ', '.join(others)
    if any(m not in clean_layers for m in layers):
        text += ' (no all-clean frame to compare with)'
    return f'{text}. {score[0].upper()}{score[1:]}'


def shift_entry(modality: str, frames: Sequence[Frame], clean_layers: Mapping[str, float],
                min_severity: float, target: float) -> Dict[str, Any]:
    """Did layers leave ``modality`` while it was degraded? See the module docstring."""
    degraded = [f for f in frames if f.levels is not None and modality in f.layers
                and _severity(f, modality) >= min_severity]
    clean = clean_layers.get(modality)
    n_clean = sum(1 for f in frames if frame_state(f) == () and modality in f.layers)
    entry: Dict[str, Any] = {
        'degraded_frames': len(degraded), 'clean_frames': n_clean,
        'mean_layers_degraded': _mean(f.layers[modality] for f in degraded),
        'mean_layers_clean': clean, 'ratio': None, 'target': target, 'shifted': None,
        'others_change': {}, 'min_severity': min_severity}
    head = f'layers left the degraded {modality}: '
    if not degraded:
        entry['verdict'] = (head + f'cannot tell, {modality} never reached severity '
                            f'{fmt_severity(min_severity)} while the model had it')
        return entry
    if clean is None:
        entry['verdict'] = head + 'cannot tell, no frame had every sensor clean to compare with'
        return entry
    if clean <= 0:
        entry['verdict'] = head + f'cannot tell, {modality} got no layers even when all was clean'
        return entry
    mean_deg = entry['mean_layers_degraded']
    ratio = mean_deg / clean
    others = {}
    for m, value in _mean_layers(degraded, modality_order(clean_layers)).items():
        if m != modality:
            others[m] = value - clean_layers[m]
    entry.update(ratio=ratio, shifted=ratio <= target, others_change=others)
    moved = ', '.join(f'{m} {d:+.1f}' for m, d in others.items())
    entry['verdict'] = (
        head + f"{'yes' if ratio <= target else 'no'}, ratio {ratio:.2f} (target <= {target:g}): "
        f'{mean_deg:.1f} layers over {len(degraded)} frames at severity >= '
        f'{fmt_severity(min_severity)} against {clean:.1f} over {n_clean} all-clean frames'
        + (f'; meanwhile {moved} layers' if moved else ''))
    return entry


def analyse(frames: Sequence[Frame], severity_step: float = DEFAULT_SEVERITY_STEP,
            min_severity: float = DEFAULT_MIN_SEVERITY, target: float = TARGET_RATIO
            ) -> Dict[str, Any]:
    """``{'phases': [...], 'shift': {modality: {...}}, 'clean_layers': {...},
    'phase_settings': {...}, 'frames_with_corruption': n}`` for frames in stamp order."""
    frames = sorted(frames, key=lambda f: f.stamp_ns)
    settings = {'severity_step': severity_step, 'min_severity': min_severity,
                'target_ratio': target}
    known = sum(1 for f in frames if f.levels is not None)
    out: Dict[str, Any] = {'phases': [], 'shift': {}, 'clean_layers': {},
                           'phase_settings': settings, 'frames_with_corruption': known}
    if not known:   # nothing said what the sensors suffered: no phases to tell apart
        return out
    modalities = modality_order({m for f in frames for m in f.layers})
    clean_frames = [f for f in frames if frame_state(f, severity_step) == ()]
    clean_layers = _mean_layers(clean_frames, modalities)
    out['clean_layers'] = clean_layers
    t0 = frames[0].stamp_ns
    for k, (state, first, last) in enumerate(segment(frames, severity_step)):
        run = frames[first:last + 1]
        scored = [f.correct for f in run if f.correct is not None]
        layers = _mean_layers(run, modalities)
        degraded = {}
        for m, ctype, severity in state or ():
            degraded[m] = {'type': ctype, 'severity': severity,
                           'mean_severity': _mean(_severity(f, m) for f in run)}
        phase = {
            'index': k, 'label': state_label(state), 'degraded': degraded,
            'first_frame': first, 'last_frame': last, 'frames': len(run),
            't_start_s': (run[0].stamp_ns - t0) / 1e9, 't_end_s': (run[-1].stamp_ns - t0) / 1e9,
            'scored': len(scored), 'accuracy': _mean(map(float, scored)),
            'mean_layers': layers,
            'layers_vs_clean': {m: _change(v, clean_layers.get(m)) for m, v in layers.items()},
        }
        phase['sentence'] = phase_sentence(phase, clean_layers)
        out['phases'].append(phase)
    corrupted = {m for f in frames for m in f.layers if _severity(f, m) > 0}
    for m in modality_order(corrupted):
        out['shift'][m] = shift_entry(m, frames, clean_layers, min_severity, target)
    return out


# --------------------------------------------------------------------------- presentation
def timeline_path(report_path) -> Path:
    """``runs/demo/ros_report.json`` -> ``runs/demo/ros_report_timeline.png``."""
    path = Path(report_path)
    return path.with_name(f'{path.stem}_timeline.png')


def markdown(analysis: Mapping[str, Any], plot_name: Optional[str] = None) -> List[str]:
    """The phases, sentences and verdicts as Markdown lines (appended to the evaluator's table)."""
    phases = analysis['phases']
    lines = ['', '## Corruption phases', '']
    if not phases:
        lines.append('No corruption record (`ground_truth/corruption`) matched a prediction, so '
                     'the run cannot be split into phases.')
        return lines
    settings = analysis['phase_settings']
    modalities = modality_order({m for p in phases for m in p['mean_layers']})
    lines += [f"Severities rounded to {settings['severity_step']:g}; layers are means per frame.",
              '', '| # | corruption | frames | seconds | accuracy | '
              + ' | '.join(f'layers {m}' for m in modalities) + ' |',
              '|---' * (5 + len(modalities)) + '|']
    for p in phases:
        acc = '-' if p['accuracy'] is None else f"{p['accuracy']:.3f}"
        cells = [f"{p['mean_layers'][m]:.2f}" if m in p['mean_layers'] else '-'
                 for m in modalities]
        lines.append(f"| {p['index']} | {p['label']} | {p['first_frame']}-{p['last_frame']} "
                     f"({p['frames']}) | {p['t_start_s']:.1f}-{p['t_end_s']:.1f} | {acc} | "
                     + ' | '.join(cells) + ' |')
    lines += [''] + [f"{p['index']}. {p['sentence']}" for p in phases]
    lines += ['', '## Did layers leave degraded sensors?', '']
    if analysis['shift']:
        lines += [f"- {e['verdict']}" for e in analysis['shift'].values()]
    else:
        lines.append('No sensor was corrupted during the run.')
    if plot_name:
        lines += ['', f'![layers and corruption over time]({plot_name})']
    return lines


def plot_timeline(frames: Sequence[Frame], analysis: Mapping[str, Any], path) -> Optional[Path]:
    """Layers per modality over time (top) and each modality's corruption severity (bottom), with
    the phases marked and numbered as in the report; None when there is no frame to draw."""
    if not frames:
        return None
    frames = sorted(frames, key=lambda f: f.stamp_ns)
    t0 = frames[0].stamp_ns
    t = [(f.stamp_ns - t0) / 1e9 for f in frames]
    modalities = modality_order({m for f in frames for m in f.layers})
    fig = agg_figure((11, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': [2, 1]})
    clean = analysis.get('clean_layers', {})
    for k, m in enumerate(modalities):
        colour = COLOURS.get(m)
        # Thinner line for each later modality, so lines at the same count stay visible.
        top.plot(t, [f.layers.get(m, math.nan) for f in frames], drawstyle='steps-mid',
                 color=colour, label=m, lw=max(3.2 - 1.0 * k, 1.0))
        if m in clean:
            top.axhline(clean[m], color=colour, ls=':', lw=1, alpha=0.8)
        severity = [math.nan if f.levels is None else _severity(f, m) for f in frames]
        types = sorted({f.levels[m][0] for f in frames if f.levels is not None
                        and m in f.levels and _severity(f, m) > 0})
        bottom.fill_between(t, severity, step='mid', color=colour, alpha=0.15)
        bottom.plot(t, severity, drawstyle='steps-mid', color=colour, lw=1.2,
                    label=f"{m}: {', '.join(types) or 'clean'}")
    phases = analysis.get('phases', [])
    for p in phases:
        start = (t[p['first_frame'] - 1] + t[p['first_frame']]) / 2 if p['first_frame'] else t[0]
        end = (t[p['last_frame']] + t[p['last_frame'] + 1]) / 2 \
            if p['last_frame'] + 1 < len(t) else t[-1]
        if p['index'] % 2:
            for ax in (top, bottom):
                ax.axvspan(start, end, color='0.9', zorder=0, lw=0)
        if p['index']:
            for ax in (top, bottom):
                ax.axvline(start, color='0.5', ls='--', lw=0.7)
        if len(phases) <= 40:
            top.text((start + end) / 2, 1.01, str(p['index']), transform=top.get_xaxis_transform(),
                     ha='center', va='bottom', fontsize=7)
    top.set_ylabel('layers executed')
    top.set_ylim(bottom=0)   # from zero, so a drop reads at its true size
    top.set_title('Layers per modality (dotted: mean when every sensor is clean) and corruption;\n'
                  'phases numbered as in the report', fontsize=10, pad=14)
    outside = dict(loc='upper left', bbox_to_anchor=(1.005, 1.0), fontsize=8, borderaxespad=0)
    top.legend(**outside)
    bottom.set_ylabel('corruption severity')
    bottom.set_ylim(0, 1.05)
    bottom.set_xlabel('seconds since the first prediction (source stamps)')
    if analysis.get('frames_with_corruption'):
        bottom.legend(**outside)
    else:
        bottom.text(0.5, 0.5, 'no corruption records', transform=bottom.transAxes, ha='center')
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
