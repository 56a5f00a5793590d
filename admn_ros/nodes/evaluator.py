"""evaluator: scores admn_fusion's predictions against the ground-truth labels, by stamp.

Subscribes ``ground_truth/label`` (DiagnosticArray, see :mod:`admn_ros.wire`) and
admn_fusion's ``admn/prediction``, ``admn/inference`` and ``admn/allocation``. A prediction and a
label belong together when their header stamps are equal (both carry the source sample's stamp), or
within ``match_tolerance_s`` when set. Keeps a running accuracy, mean executed GFLOPs, mean layers
per modality, latency percentiles (``latency_ms``: source stamp to prediction publish, as fusion
measured it; ``overhead_ms``: that minus the model's own time, i.e. allocation ``policy_ms`` plus
forward ``model_ms``; of the overhead, ``intake_ms`` is the part before the fusion node had the
synchronised set - building, publishing, delivering and decoding the inputs, i.e. ``latency_ms``
minus fusion's ``processing_ms`` - and ``preprocess_ms`` is reported too) and counts:

* ``matched``: predictions scored against a label;
* ``drops``: labels stamped at or after the first prediction that got no prediction within
  ``drop_after_s`` (node clock) - samples lost anywhere between the sensor and the output
  (labels before the first prediction are the model's start-up, counted as ``warmup_labels``);
* ``pending_labels``: labels still waiting (younger than ``drop_after_s``) at report time;
* ``unmatched_predictions``: predictions whose label never came.

It also subscribes ``ground_truth/corruption`` (one record per source stamp, from noise_injector
or a recorded bag) and keeps, per prediction, the layers each present modality got, its corruption
levels (matched by stamp like the label) and whether it was right. From these the report splits the
run into corruption phases and says whether layers left each degraded sensor
(:mod:`admn_ros.report`: ``phases``, ``shift``, ``clean_layers``); without corruption records both
stay empty.

Per frame it also keeps the predicted class, the executed budget, the latency and each
modality's estimated quality (``admn/quality``): the report's ``timeline`` lists every frame with
all of these, so a scenario can be cut into its own phases afterwards. With ``status_path`` set, the running numbers and the
newest frame are also written there as JSON twice a second (replaced atomically), for a live view.

The report also counts, per topic, the messages any node reported as undecodable on
``/diagnostics`` (bag_player's ``undecodable <topic>``) and, per modality, the share of frames it
was absent from: when one is absent from most frames (a bag whose camera messages do not decode,
a dead sensor), the run measured something else than the model - the report says so in its first
line and the node exits with code 1 (so ``admn bringup`` does too) unless
``allow_missing_modalities`` is set.

Running numbers go to ``/diagnostics`` every second. On shutdown (Ctrl-C, SIGTERM, end of graph)
it writes ``report_path`` (JSON), the same path with ``.md`` (the metrics table, the phases, their
sentences and the verdicts) and ``<stem>_timeline.png`` (layers and corruption over time); with
``report_path`` empty it writes nothing.
"""
from __future__ import annotations

import collections
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from admn_ros import wire
from admn_ros import report as R
from admn_ros.figures import preload_plotting
from admn_ros.node_utils import (DIAGNOSTICS_TOPIC, OK, STALE, UNDECODABLE_KEY, Diagnostics, declare,
                                 node_main, param)
from admn_ros.wire import (ALLOCATION, INFERENCE, PREDICTION, QUALITY, output_class,
                           read_allocation, read_inference, read_prediction, read_quality)

NODE_NAME = 'evaluator'
KEEP_PENDING = 10000  # unmatched entries remembered per stream
MISSING_SHARE = 0.5  # a modality absent from more of the frames than this makes the run invalid
KEEP_FRAMES = 100000  # per-frame records kept for the phase report (the oldest go first)


def percentile(values: List[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values else None


class Evaluator(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.report_path = declare(self, 'report_path', 'admn_eval_report.json',
                                   "JSON report written on shutdown (+ .md); '' = none",
                                   read_only=True)
        declare(self, 'match_tolerance_s', 0.0,
                'largest stamp difference between a prediction and its label (0 = exact)',
                value_range=(0.0, 10.0))
        declare(self, 'drop_after_s', 2.0,
                'a label without a prediction this long (node clock) counts as a drop',
                value_range=(0.0, 3600.0))
        declare(self, 'severity_step', R.DEFAULT_SEVERITY_STEP,
                'report phases: corruption severities are rounded to this step, so a ramp makes '
                'a few phases rather than one per frame', value_range=(0.01, 1.0))
        declare(self, 'degraded_severity', R.DEFAULT_MIN_SEVERITY,
                'report shift: a modality counts as degraded from this severity on',
                value_range=(0.01, 1.0))
        declare(self, 'allow_missing_modalities', False,
                'accept a run where a modality was absent from most frames (else the report says '
                'so and the node exits with code 1)', read_only=True)
        declare(self, 'min_frames', 0, 'fewest frames the run must score (labelled predictions, '
                'or predictions without labels) or the node exits with code 1; replay_eval sets '
                '1: a replay that scored nothing measured nothing', read_only=True,
                value_range=(0, 10**9))
        self.status_path = declare(self, 'status_path', '',
                                   "live status JSON rewritten twice a second; '' = none",
                                   read_only=True)
        depth = declare(self, 'queue_depth', 1000, 'subscription depth (reliable KEEP_LAST)',
                        read_only=True, value_range=(1, 100000))
        durability = declare(self, 'input_durability', 'volatile',
                             'subscription durability: transient_local also gets what transient '
                             'local publishers (a replay, admn_fusion with output_durability) sent '
                             'before the match, so a replay scores its first frames',
                             read_only=True, choices=wire.DURABILITY_NAMES)
        qos = wire.output_qos(depth, durability)   # admn_fusion's output profile, mirrored
        self._lock = threading.Lock()
        self.labels: Dict[int, int] = {}          # stamp -> class id, waiting for a prediction
        self.label_seen: Dict[int, float] = {}    # stamp -> node-clock seconds when received
        self.predictions: Dict[int, int] = {}     # stamp -> class id, waiting for a label
        self.costs: Dict[int, Dict[str, Any]] = {}
        self.layer_sums: Dict[str, float] = {}
        self.allocations = 0
        self.matched = 0
        self.correct = 0
        self.drops = 0
        self.warmup_labels = 0
        self.first_prediction_ns: Optional[int] = None
        self.predictions_received = 0
        self.first_receipt = self.last_receipt = 0.0   # steady clock
        self.gflops: List[float] = []
        self.latency: List[float] = []
        self.overhead: List[float] = []
        self.model_ms: List[float] = []
        self.policy_ms: List[float] = []
        self.preprocess_ms: List[float] = []
        self.intake_ms: List[float] = []
        self.fusion_dropped = 0
        self.absent: Dict[str, int] = {}          # allocations without that modality's input
        self.undecodable: Dict[str, int] = {}     # topic -> messages that did not decode (graph-wide)
        self.exit_code = 0
        # Per-frame records for the phase report, keyed by stamp (joined when the report is made).
        self.frame_layers: collections.OrderedDict = collections.OrderedDict()  # present only
        self.outcomes: collections.OrderedDict = collections.OrderedDict()      # prediction right?
        self.levels: collections.OrderedDict = collections.OrderedDict()        # corruption
        self.extras: collections.OrderedDict = collections.OrderedDict()  # latency, budget, quality
        self.newest_stamp: Optional[int] = None
        self.started = time.monotonic()
        self._written = False

        self.create_subscription(DiagnosticArray, wire.LABEL, self._on_label, qos)
        self.create_subscription(output_class(PREDICTION), PREDICTION, self._on_prediction, qos)
        self.create_subscription(output_class(INFERENCE), INFERENCE, self._on_inference, qos)
        self.create_subscription(output_class(ALLOCATION), ALLOCATION, self._on_allocation, qos)
        self.create_subscription(DiagnosticArray, wire.CORRUPTION, self._on_corruption, qos)
        self.create_subscription(output_class(QUALITY), QUALITY, self._on_quality, qos)
        self.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)
        self.create_timer(0.5, self._expire)
        if self.status_path:
            self.create_timer(0.5, self.write_status)
        self.diagnostics = Diagnostics(self)
        self.diagnostics.add('evaluation', self._status)
        if self.report_path:
            # matplotlib's first import takes seconds on a busy machine: done now, in the
            # background, rather than at shutdown inside bringup's SIGINT grace period.
            threading.Thread(target=preload_plotting, name='warm-plotting', daemon=True).start()

    # ------------------------------------------------------------------ matching
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def _find(self, table: Dict[int, Any], stamp: int) -> Optional[int]:
        """Key of ``table`` matching ``stamp`` (exact, else nearest within the tolerance)."""
        if stamp in table:
            return stamp
        tol = int(round(float(param(self, 'match_tolerance_s')) * 1e9))
        if tol <= 0 or not table:
            return None
        best = min(table, key=lambda s: abs(s - stamp))
        return best if abs(best - stamp) <= tol else None

    def _score(self, predicted: int, truth: int, prediction_stamp: int) -> None:
        self.matched += 1
        self.correct += int(predicted == truth)
        self._keep(self.outcomes, prediction_stamp, predicted == truth)

    def _extra(self, stamp: int) -> Dict[str, Any]:
        """The per-frame extras of ``stamp`` (created on first use; the oldest go first)."""
        extra = self.extras.get(stamp)
        if extra is None:
            extra = {}
            self._keep(self.extras, stamp, extra)
        return extra

    @staticmethod
    def _keep(table: collections.OrderedDict, stamp: int, value: Any) -> None:
        table[stamp] = value
        if len(table) > KEEP_FRAMES:
            table.popitem(last=False)

    def _on_label(self, msg) -> None:
        try:
            class_id, _ = wire.read_label(msg)
        except ValueError as exc:
            self.get_logger().warning(f'ignoring label message: {exc}', throttle_duration_sec=5.0)
            return
        stamp = wire.stamp_to_ns(msg.header.stamp)
        with self._lock:
            key = self._find(self.predictions, stamp)
            if key is not None:
                self._score(self.predictions.pop(key), class_id, key)
                return
            self.labels[stamp] = class_id
            self.label_seen[stamp] = self._now_s()
            self._trim(self.labels, self.label_seen)

    def _read(self, reader, msg, what: str):
        """``reader(msg)``, or None with a throttled warning when the message does not parse."""
        try:
            return reader(msg)
        except (ValueError, KeyError) as exc:
            self.get_logger().warning(f'ignoring {what} message: {exc}', throttle_duration_sec=5.0)
            return None

    def _on_prediction(self, msg) -> None:
        read = self._read(read_prediction, msg, 'prediction')
        if read is None:
            return
        stamp, class_id, _ = read
        with self._lock:
            now = time.monotonic()
            if not self.predictions_received:
                self.first_receipt = now
            self.last_receipt = now
            self.predictions_received += 1
            if self.first_prediction_ns is None:
                self.first_prediction_ns = stamp
            self._extra(stamp)['predicted'] = class_id   # kept for unlabelled runs too
            key = self._find(self.labels, stamp)
            if key is not None:
                self._score(class_id, self.labels.pop(key), stamp)
                self.label_seen.pop(key, None)
                return
            self.predictions[stamp] = class_id
            self._trim(self.predictions)

    def _on_inference(self, msg) -> None:
        info = self._read(read_inference, msg, 'inference')
        if info is None:
            return
        with self._lock:
            self.gflops.append(info['gflops'])
            self.latency.append(info['latency_ms'])
            self.model_ms.append(info['model_ms'])
            self.policy_ms.append(info['policy_ms'])
            self.preprocess_ms.append(info['preprocess_ms'])
            self.intake_ms.append(round(info['latency_ms'] - info['processing_ms'], 3))
            self.overhead.append(info['latency_ms'] - info['policy_ms'] - info['model_ms'])
            self.fusion_dropped = max(self.fusion_dropped, info['dropped'])
            self._extra(info['stamp_ns'])['latency_ms'] = info['latency_ms']

    def _on_allocation(self, msg) -> None:
        alloc = self._read(read_allocation, msg, 'allocation')
        if alloc is None:
            return
        with self._lock:
            self.allocations += 1
            for m, present in alloc['present'].items():
                self.absent[m] = self.absent.get(m, 0) + (not present)
            for m, n in alloc['layers'].items():
                self.layer_sums[m] = self.layer_sums.get(m, 0.0) + n
            # Layers given to an absent sensor are no choice of the model's: left out of phases.
            self._keep(self.frame_layers, alloc['stamp_ns'],
                       {m: n for m, n in alloc['layers'].items() if alloc['present'].get(m, True)})
            self._extra(alloc['stamp_ns'])['budget'] = alloc.get('fraction')
            self.newest_stamp = max(alloc['stamp_ns'], self.newest_stamp or alloc['stamp_ns'])

    def _on_diagnostics(self, msg) -> None:
        """Keep the newest 'undecodable <topic>' counts any node reports (bag_player's)."""
        prefix = UNDECODABLE_KEY + ' '
        with self._lock:
            for status in msg.status:
                for kv in status.values:
                    if kv.key.startswith(prefix):
                        try:
                            self.undecodable[kv.key[len(prefix):]] = int(kv.value)
                        except ValueError:
                            pass

    def missing_modalities(self) -> Dict[str, float]:
        """Share of the frames each modality was absent from, for those absent more often than
        ``MISSING_SHARE``."""
        with self._lock:
            n = self.allocations
            return {m: a / n for m, a in self.absent.items() if n and a / n > MISSING_SHARE}

    def _on_quality(self, msg) -> None:
        quality = self._read(read_quality, msg, 'quality')
        if quality is None:
            return
        with self._lock:
            self._extra(wire.stamp_to_ns(msg.header.stamp))['quality'] = quality

    def _on_corruption(self, msg) -> None:
        levels = wire.read_corruption(msg)
        if not levels:
            self.get_logger().warning('ignoring a corruption message without levels',
                                      throttle_duration_sec=5.0)
            return
        with self._lock:
            self._keep(self.levels, wire.stamp_to_ns(msg.header.stamp), levels)

    @staticmethod
    def _trim(table: Dict[int, Any], *others: Dict[int, Any]) -> None:
        while len(table) > KEEP_PENDING:
            oldest = min(table)
            del table[oldest]
            for other in others:
                other.pop(oldest, None)

    def _expire(self) -> None:
        """Count labels that waited longer than ``drop_after_s`` as drops."""
        now = self._now_s()
        wait = float(param(self, 'drop_after_s'))
        with self._lock:
            for stamp in list(self.labels):
                if now - self.label_seen[stamp] > wait:
                    del self.labels[stamp]
                    del self.label_seen[stamp]
                    if self.first_prediction_ns is not None and stamp >= self.first_prediction_ns:
                        self.drops += 1
                    else:
                        self.warmup_labels += 1

    # ------------------------------------------------------------------ results
    def summary(self) -> Dict[str, Any]:
        """The running numbers (what the report holds)."""
        with self._lock:
            n = self.predictions_received
            span = self.last_receipt - self.first_receipt
            out = {
                'matched': self.matched,
                'correct': self.correct,
                'accuracy': self.correct / self.matched if self.matched else None,
                'predictions': n,
                'received_hz': (n - 1) / span if span > 0 else None,
                'drops': self.drops,
                'warmup_labels': self.warmup_labels,
                'pending_labels': len(self.labels),
                'unmatched_predictions': len(self.predictions),
                'fusion_dropped': self.fusion_dropped,
                'mean_gflops': float(np.mean(self.gflops)) if self.gflops else None,
                'mean_layers': {m: s / self.allocations for m, s in self.layer_sums.items()},
                'absent_share': {m: a / self.allocations for m, a in self.absent.items()
                                 if self.allocations},
                'undecodable': dict(self.undecodable),
            }
            for name, values in (('latency_ms', self.latency), ('overhead_ms', self.overhead),
                                 ('model_ms', self.model_ms), ('policy_ms', self.policy_ms),
                                 ('preprocess_ms', self.preprocess_ms),
                                 ('intake_ms', self.intake_ms)):
                for q in (50, 95):
                    out[f'{name}_p{q}'] = percentile(values, q)
        return out

    def frames(self) -> List[R.Frame]:
        """One record per allocation received, in stamp order, with its corruption levels (same
        stamp, else the nearest within ``match_tolerance_s``) and its outcome when scored."""
        with self._lock:
            layers, outcomes = dict(self.frame_layers), dict(self.outcomes)
            levels = dict(self.levels)
        tol = int(round(float(param(self, 'match_tolerance_s')) * 1e9))
        keys = sorted(levels)
        out = []
        for stamp in sorted(layers):
            key = R.nearest(keys, stamp, tol)
            out.append(R.Frame(stamp, layers[stamp], None if key is None else levels[key],
                               outcomes.get(stamp)))
        return out

    def timeline(self, frames: Optional[List[R.Frame]] = None) -> List[Dict[str, Any]]:
        """Every frame as plain JSON: source seconds since the first frame, layers of the present
        modalities, corruption levels, outcome, executed budget, latency and quality."""
        frames = self.frames() if frames is None else frames
        with self._lock:
            extras = {f.stamp_ns: dict(self.extras.get(f.stamp_ns, {})) for f in frames}
        t0 = frames[0].stamp_ns if frames else 0
        return [{'t_s': round((f.stamp_ns - t0) / 1e9, 6), 'stamp_ns': f.stamp_ns,
                 'layers': dict(f.layers),
                 'levels': None if f.levels is None else {m: list(v) for m, v in f.levels.items()},
                 'correct': f.correct, **extras[f.stamp_ns]} for f in frames]

    def status(self) -> Dict[str, Any]:
        """The live view: running accuracy, counts and the newest frame's allocation."""
        with self._lock:
            newest = self.newest_stamp
            first = next(iter(self.frame_layers), None)
            frame = {'layers': dict(self.frame_layers.get(newest, {})),
                     'levels': self.levels.get(newest), **self.extras.get(newest, {})}
            recent = self.latency[-25:]
            out = {'frames': len(self.frame_layers), 'matched': self.matched,
                   'accuracy': self.correct / self.matched if self.matched else None,
                   'drops': self.drops,
                   'latency_ms_p50_recent': percentile(recent, 50),
                   't_s': None if newest is None or first is None else (newest - first) / 1e9}
        if frame['levels'] is not None:
            frame['levels'] = {m: list(v) for m, v in frame['levels'].items()}
        out['newest'] = frame
        return out

    def write_status(self) -> None:
        path = Path(self.status_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + '.tmp')
            tmp.write_text(json.dumps(self.status()), encoding='utf-8')
            tmp.replace(path)   # readers never see half a file
        except OSError as exc:
            self.get_logger().warning(f'cannot write status {path}: {exc}',
                                      throttle_duration_sec=10.0)

    def analysis(self, frames: Optional[List[R.Frame]] = None) -> Dict[str, Any]:
        """Phases and layer shifts of the run so far (see :func:`admn_ros.report.analyse`)."""
        return R.analyse(self.frames() if frames is None else frames,
                         severity_step=float(param(self, 'severity_step')),
                         min_severity=float(param(self, 'degraded_severity')))

    def _status(self):
        s = self.summary()
        values = {k: ('' if v is None else (f'{v:.4f}' if isinstance(v, float) else v))
                  for k, v in s.items() if not isinstance(v, dict)}
        if not s['matched']:
            return STALE, 'no predictions matched yet', values
        return OK, f"accuracy {s['accuracy']:.3f} over {s['matched']}", values

    def write_report(self, path=None) -> Optional[Path]:
        """Write the JSON and Markdown reports; returns the JSON path (None without a path)."""
        path = path or self.report_path
        if not path:
            return None
        s = self.summary()
        s['node'] = self.get_fully_qualified_name()
        json_path = Path(path)
        plot_path = R.timeline_path(json_path)
        frames = self.frames()
        analysis = self.analysis(frames)
        s['timeline_plot'] = str(plot_path) if frames else None
        rows = [(k, v) for k, v in s.items() if not isinstance(v, dict)]
        rows += [(f'mean layers {m}', v) for m, v in s['mean_layers'].items()]
        rows += [(f'undecodable messages {t}', n) for t, n in s['undecodable'].items()]
        missing = self.missing_modalities()
        rows += [(f'{m} missing from', f'{share:.0%} of frames') for m, share in missing.items()]
        s.update(analysis)
        s['timeline'] = self.timeline(frames)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(s, indent=2) + '\n', encoding='utf-8')
        lines = ['# admn_ros evaluation', '']
        if missing:
            lines += [f'**Not a valid evaluation:** {self._missing_text(missing)}.', '']
        lines += ['| metric | value |', '|---|---|']
        lines += [f'| {k} | {"-" if v is None else (f"{v:.4f}" if isinstance(v, float) else v)} |'
                  for k, v in rows]
        lines += R.markdown(analysis, plot_path.name if frames else None)
        json_path.with_suffix('.md').write_text('\n'.join(lines) + '\n', encoding='utf-8')
        # Last: the JSON and Markdown are on disk even if plotting fails or is cut short.
        try:
            R.plot_timeline(frames, analysis, plot_path)
        except Exception as exc:  # a plotting failure must not lose the report written above
            self._say(f'cannot write timeline plot {plot_path}: {type(exc).__name__}: {exc}',
                      error=True)
        return json_path

    @staticmethod
    def _missing_text(missing: Dict[str, float]) -> str:
        return ', '.join(f'{m} missing from {share:.0%} of the frames' for m, share in missing.items())

    def _judge_missing(self) -> None:
        """A run where a modality was missing from most frames measured something else than the
        model: say so, and fail (exit code 1) unless ``allow_missing_modalities``."""
        missing = self.missing_modalities()
        if not missing:
            return
        text = self._missing_text(missing)
        if bool(param(self, 'allow_missing_modalities')):
            self._say(f'{text} (allowed by allow_missing_modalities)')
        else:
            self.exit_code = 1
            self._say(f'not a valid evaluation: {text} (undecodable or absent inputs; set '
                      'allow_missing_modalities:=true to accept it)', error=True)

    def _judge_scored(self) -> None:
        """Fail (exit code 1) when fewer than ``min_frames`` frames were scored."""
        need = int(param(self, 'min_frames'))
        with self._lock:
            labelled = self.matched or self.drops or self.labels
            scored = self.matched if labelled else self.predictions_received
        if scored < need:
            self.exit_code = 1
            what = 'labelled predictions' if labelled else 'predictions'
            self._say(f'not a valid evaluation: {scored} {what} scored (min_frames {need}; '
                      'nothing reached the model, or nothing matched its labels)', error=True)

    def destroy_node(self) -> None:
        if not self._written:
            self._written = True
            self._expire()  # labels still within drop_after_s stay 'pending', not drops
            self._judge_missing()
            self._judge_scored()
            try:
                written = self.write_report()
                if written is not None:
                    s = self.summary()
                    self._say(f"report {written}: accuracy {s['accuracy']} over {s['matched']}, "
                              f"drops {s['drops']}")
            except OSError as exc:
                self._say(f'cannot write report {self.report_path}: {exc}', error=True)
        super().destroy_node()

    def _say(self, text: str, error: bool = False) -> None:
        """Log, or print once Ctrl-C has already shut the context down (no /rosout then)."""
        if self.context.ok():
            # Two call sites: rclpy refuses one site that logs at two severities.
            if error:
                self.get_logger().error(text)
            else:
                self.get_logger().info(text)
        else:
            print(f'[{self.get_name()}] {text}', file=sys.stderr if error else sys.stdout,
                  flush=True)


def main(args=None) -> NoReturn:
    node_main(Evaluator, args)


if __name__ == '__main__':
    main()
