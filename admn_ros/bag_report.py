"""The report of ``admn bag eval``: JSON, Markdown and PNG plots, offline and through ROS alike.

A bag evaluation (:func:`admn_ros.quality_estimators.bag_eval.evaluate_bag`, or its ROS
counterpart in :mod:`admn_ros.bag_tools`) is a dict with one *cell* per (policy, budget), each
listing its frames. Written under ``OUT/`` with the evaluation's ``path`` (``offline`` or
``ros``) as prefix:

* ``<path>.json`` - everything, plus per cell the corruption phases and layer shifts of
  :func:`admn_ros.report.analyse` (the evaluator node's analysis) when the bag recorded corruption;
* ``<path>_report.md`` - the cells as a table, then per cell its phases in words (or, without corruption
  records, the classes it predicted);
* ``<path>_summary.png`` - accuracy against GFLOPs per policy (without labels: a note) and mean
  layers per modality per cell;
* ``<path>_timeline_<policy>_<budget>.png`` - layers per modality over time against each
  modality's recorded corruption (:func:`admn_ros.report.plot_timeline`).

No rclpy here.
"""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping

from admn_ros import report as R
from admn_ros.figures import agg_figure

TITLES = {'offline': 'offline (bag read directly, batched)',
          'ros': 'through ROS (bag_player -> admn_fusion -> evaluator on /clock)'}


def cell_name(cell: Mapping[str, Any]) -> str:
    """``admn_0.5`` - a file-name-safe name of a (policy, budget) cell."""
    policy = re.sub(r'[^A-Za-z0-9_.-]+', '-', str(cell['policy']))
    return f"{policy}_{cell['budget']:g}"


def frames_of(cell: Mapping[str, Any]) -> List[R.Frame]:
    return [R.Frame(f['stamp_ns'], f['layers'],
                    None if f.get('levels') is None else {m: (v[0], float(v[1]))
                                                          for m, v in f['levels'].items()},
                    f.get('correct')) for f in cell['frames']]


def analyse(report: Dict[str, Any]) -> Dict[str, Any]:
    """Adds each cell's ``analysis`` (phases and shifts; empty without corruption records)."""
    for cell in report['cells']:
        cell['analysis'] = R.analyse(frames_of(cell))
    return report


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return '-'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def _speed(cell: Mapping[str, Any]) -> str:
    t = cell.get('timing') or {}
    if 'model_ms_p50' in t:   # through ROS, per frame (latency runs on bag time: not shown)
        return (f"p50 per frame: preprocess {_fmt(t.get('preprocess_ms_p50'), 2)} ms, policy "
                f"{_fmt(t.get('policy_ms_p50'), 2)} ms, model {_fmt(t.get('model_ms_p50'), 2)} ms")
    per = sum(t.get(k) or 0.0 for k in ('preprocess_ms_per_frame', 'policy_ms_per_frame',
                                        'model_ms_per_frame'))
    return f"{per:.2f} ms/frame ({_fmt(t.get('frames_per_s'), 0)} frames/s)"


def markdown(report: Mapping[str, Any], plots: Mapping[str, str]) -> List[str]:
    modalities = R.modality_order({m for c in report['cells'] for m in c['mean_layers']})
    missing = [m for m in report['model_modalities'] if m not in report['modalities']]
    lines = [f"# Bag evaluation {TITLES.get(report['path'], report['path'])}", '',
             f"- bag: `{report['bag']}`",
             f"- checkpoint: `{report['checkpoint']}`" + (f" (dataset {report['dataset']})"
                                                         if report.get('dataset') else ''),
             f"- frames: {report['frames']}; modalities: {', '.join(report['modalities'])}"
             + (f" (the model also has {', '.join(missing)}, not used here)" if missing else '')]
    if report.get('topics'):
        lines.append('- topics mapped: ' + ', '.join(f'{k} <- `{v}`' for k, v in report['topics'].items()))
    if report.get('unmatched') and any(report['unmatched'].values()):
        lines.append('- messages left out by the synchroniser: '
                     + ', '.join(f'{k} {v}' for k, v in report['unmatched'].items() if v))
    if report.get('undecodable'):
        lines.append('- messages that did not decode: ' + ', '.join(
            f'`{t}` {n}' for t, n in report['undecodable'].items()))
    for note in report.get('notes', []):
        lines.append(f'- {note}')
    if not report['labelled']:
        lines.append('- no label topic: predictions, allocations and timings only, no accuracy')
    lines += ['', '| policy | budget | frames | accuracy | GFLOPs | '
              + ' | '.join(f'layers {m}' for m in modalities) + ' | speed |',
              '|---' * (6 + len(modalities)) + '|']
    for c in report['cells']:
        layers = [_fmt(c['mean_layers'].get(m), 2) for m in modalities]
        lines.append(f"| {c['policy']} | {c['budget']:g} | {c['frames_scored']} | "
                     f"{_fmt(c['accuracy'])} | {_fmt(c['mean_gflops'], 4)} | "
                     + ' | '.join(layers) + f' | {_speed(c)} |')
    if 'summary' in plots:
        lines += ['', f"![accuracy and layers per cell]({plots['summary']})"]
    for c in report['cells']:
        name = cell_name(c)
        lines += ['', f"## {c['policy']} at budget {c['budget']:g}"]
        if c.get('counts'):
            lines += ['', ', '.join(f'{k} {v}' for k, v in c['counts'].items())]
        if c['analysis']['phases']:
            # The evaluator's sections, one heading level down under this cell's.
            lines += [('#' + line) if line.startswith('## ') else line
                      for line in R.markdown(c['analysis'], plots.get(name))]
            continue
        top = collections.Counter(f['class_name'] for f in c['frames']).most_common(5)
        lines += ['', 'Predicted most often: ' + (', '.join(f'{k} ({v})' for k, v in top) or 'nothing')
                  + '. No corruption record, so no phases.']
        if name in plots:
            lines += ['', f'![layers over time]({plots[name]})']
    return lines


def summary_figure(report: Mapping[str, Any]):
    """Left: accuracy against GFLOPs, one line per policy; right: mean layers per modality per
    cell (an Agg figure of its own, no pyplot state)."""
    cells = report['cells']
    fig = agg_figure((11, 4))
    left, right = fig.subplots(1, 2)
    if report['labelled']:
        for policy in dict.fromkeys(c['policy'] for c in cells):
            rows = sorted((c for c in cells if c['policy'] == policy and c['accuracy'] is not None),
                          key=lambda c: c['mean_gflops'] or 0.0)
            left.plot([c['mean_gflops'] for c in rows], [c['accuracy'] for c in rows],
                      marker='o', label=policy)
        left.set_xlabel('GFLOPs per frame')
        left.set_ylabel('accuracy')
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
    else:
        left.text(0.5, 0.5, 'no label topic: no accuracy', ha='center', va='center',
                  transform=left.transAxes)
        left.set_axis_off()
    left.set_title('accuracy against compute', fontsize=10)
    modalities = R.modality_order({m for c in cells for m in c['mean_layers']})
    width = 0.8 / max(len(modalities), 1)
    for k, m in enumerate(modalities):
        right.bar([i + k * width for i in range(len(cells))],
                  [c['mean_layers'].get(m, 0.0) for c in cells], width=width,
                  color=R.COLOURS.get(m), label=m)
    right.set_xticks([i + width * (len(modalities) - 1) / 2 for i in range(len(cells))])
    right.set_xticklabels([f"{c['policy']}\n{c['budget']:g}" for c in cells], fontsize=8)
    right.set_ylabel('mean layers per frame')
    right.set_title('layers per modality (policy, budget)', fontsize=10)
    right.legend(fontsize=8)
    fig.suptitle(f"{Path(report['bag']).name}: {report['path']}", fontsize=10)
    fig.tight_layout()
    return fig


def write_bag_report(report: Dict[str, Any], out_dir) -> Dict[str, Path]:
    """Write the JSON, Markdown and plots of one evaluation under ``out_dir``; returns
    ``{'json': .., 'markdown': .., 'summary': .., <cell name>: ..}`` paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = report['path']
    analyse(report)
    written: Dict[str, Path] = {}
    summary = out / f'{prefix}_summary.png'
    summary_figure(report).savefig(summary, dpi=110)
    written['summary'] = summary
    for cell in report['cells']:
        path = out / f'{prefix}_timeline_{cell_name(cell)}.png'
        if R.plot_timeline(frames_of(cell), cell['analysis'], path) is not None:
            written[cell_name(cell)] = path
    json_path = out / f'{prefix}.json'
    json_path.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
    md_path = out / f'{prefix}_report.md'
    md_path.write_text('\n'.join(markdown(report, {k: v.name for k, v in written.items()})) + '\n',
                       encoding='utf-8')
    return {'json': json_path, 'markdown': md_path, **written}


__all__ = ['write_bag_report', 'summary_figure', 'markdown', 'analyse', 'cell_name', 'frames_of']
