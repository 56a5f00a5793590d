"""``admn soak``: the live graph for N minutes at the sensors' rate; does anything grow or drift?

    admn soak --minutes 10 --json results/soak.json

Starts the ``admn`` graph (:mod:`admn_ros.graph`; sensor_source -> noise_injector -> admn_fusion,
budget_manager) with :class:`admn_ros.bringup.Bringup`, plus a probe node that listens to the
ground-truth labels, ``admn/inference`` and ``/diagnostics``. Every ``sample_s`` it records the
resident memory (RSS) of each node process. After a warm-up (the first prediction plus
``warmup_s``) it reports:

* ``rss_growth_pct``: growth of the graph's total RSS from the first samples after the warm-up to
  the last ones (medians of three, so one sample's noise does not count);
* ``latency_drift_pct``: change of the median source-to-prediction latency from the first to the
  last quarter of the run;
* ``drops``: labels stamped after the first prediction that never got one (within
  ``drop_after_s``), and ``fusion_dropped``, the frames the fusion node's queue replaced;
* ``rejects``: inputs the fusion node refused (its ``/diagnostics``), per modality and in total;
* ``restarts`` (nodes the graph respawned) and ``failure`` (a node that stopped the graph).

The exit code is 0 when the graph ran the whole time without a failure and made predictions.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

GRAPH = 'admn'
DROP_AFTER_S = 2.0


class _Probe:
    """An rclpy node on its own context and thread: labels, inference records, fusion rejects."""

    def __init__(self, namespace: str = ''):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from admn_ros import wire
        from admn_ros.node_utils import DIAGNOSTICS_TOPIC

        self._wire = wire
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('admn_soak_probe', namespace=namespace or None,
                                      context=self.context)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.Lock()
        self.labels: Dict[int, float] = {}        # stamp -> monotonic arrival
        self.predicted: set = set()
        self.latency: List[tuple] = []            # (monotonic, latency_ms)
        self.first_prediction: Optional[float] = None
        self.first_prediction_stamp: Optional[int] = None
        self.fusion_dropped = 0
        self.rejects: Dict[str, int] = {}
        self.node.create_subscription(DiagnosticArray, wire.LABEL, self._on_label, qos)
        self.node.create_subscription(wire.output_class(wire.INFERENCE), wire.INFERENCE,
                                      self._on_inference, qos)
        self.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name='soak-probe', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.1)

    def _on_label(self, msg) -> None:
        with self.lock:
            self.labels[self._wire.stamp_to_ns(msg.header.stamp)] = time.monotonic()

    def _on_inference(self, msg) -> None:
        try:
            info = self._wire.read_inference(msg)
        except (KeyError, ValueError):
            return
        now = time.monotonic()
        with self.lock:
            if self.first_prediction is None:
                self.first_prediction, self.first_prediction_stamp = now, info['stamp_ns']
            self.predicted.add(info['stamp_ns'])
            self.latency.append((now, info['latency_ms']))
            self.fusion_dropped = max(self.fusion_dropped, info['dropped'])

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if not status.name.startswith('admn_fusion'):
                continue
            for kv in status.values:
                if kv.key.endswith(' rejected') and kv.key.split()[0] in ('rgb', 'depth', 'audio'):
                    with self.lock:
                        self.rejects[kv.key.split()[0]] = int(kv.value)

    def drops(self, now: float) -> Dict[str, int]:
        """Labels after the first prediction: predicted, dropped (waited > DROP_AFTER_S), pending."""
        with self.lock:
            first = self.first_prediction_stamp
            out = {'labels': 0, 'predicted': 0, 'dropped': 0, 'pending': 0}
            if first is None:
                return out
            for stamp, seen in self.labels.items():
                if stamp < first:
                    continue
                out['labels'] += 1
                if stamp in self.predicted:
                    out['predicted'] += 1
                elif now - seen > DROP_AFTER_S:
                    out['dropped'] += 1
                else:
                    out['pending'] += 1
            return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        import rclpy
        rclpy.try_shutdown(context=self.context)


def _rss_bytes(pids: Dict[str, int]) -> Dict[str, int]:
    import psutil
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:   # between a crash and its respawn
            pass
    return out


def _pct(first: float, last: float) -> Optional[float]:
    return None if not first else round(100.0 * (last - first) / first, 3)


def summarise(samples: List[Dict[str, Any]], latency: List[tuple], warm_at: float) -> Dict[str, Any]:
    """``rss_growth_pct`` and ``latency_drift_pct`` from the RSS samples ``[{'t', 'rss': {node:
    bytes}}]`` and the ``(monotonic, latency_ms)`` records, both after ``warm_at``."""
    warm = [s for s in samples if s['t'] >= warm_at and s['rss']]
    totals = [sum(s['rss'].values()) for s in warm]
    rss_growth = None
    if len(totals) >= 2:
        k = min(3, len(totals) // 2) or 1
        rss_growth = _pct(statistics.median(totals[:k]), statistics.median(totals[-k:]))
    lat = [ms for t, ms in latency if t >= warm_at]
    drift = None
    if len(lat) >= 8:
        q = len(lat) // 4
        drift = _pct(statistics.median(lat[:q]), statistics.median(lat[-q:]))
    return {'rss_growth_pct': rss_growth, 'latency_drift_pct': drift,
            'latency_ms_p50_first_quarter': statistics.median(lat[:len(lat) // 4]) if len(lat) >= 8 else None,
            'latency_ms_p50_last_quarter': statistics.median(lat[-(len(lat) // 4):]) if len(lat) >= 8 else None}


def run_soak(minutes: float, *, rate_hz: float = 10.0, sample_s: float = 5.0, warmup_s: float = 5.0,
             overrides: Optional[Dict[str, Any]] = None, start_timeout_s: float = 120.0,
             sink=None) -> Dict[str, Any]:
    """Run the graph for ``minutes`` after its first prediction; returns the report (module
    docstring)."""
    from admn_ros.bringup import Bringup
    if not minutes > 0:
        raise ValueError(f'--minutes = {minutes!r}: allowed: a number > 0')
    lines: List[str] = []
    params = {'sensor_source.rate_hz': float(rate_hz), **(overrides or {})}
    bringup = Bringup(GRAPH, params, sink=sink or lines.append)
    probe = _Probe()
    samples: List[Dict[str, Any]] = []
    started = time.monotonic()
    try:
        bringup.start()
        next_sample = started
        end: Optional[float] = None
        while True:
            now = time.monotonic()
            if bringup.supervise():
                break
            if end is None and probe.first_prediction is not None:
                end = probe.first_prediction + warmup_s + minutes * 60.0
            if end is None and now - started > start_timeout_s:
                raise RuntimeError(f'no prediction within {start_timeout_s:.0f} s of the start; '
                                   'last graph output: ' + ' | '.join(lines[-5:]))
            if end is not None and now >= end:
                break
            if now >= next_sample:
                pids = {n: p.pid for n, p in bringup.processes.items() if p.poll() is None}
                samples.append({'t': now, 'rss': _rss_bytes(pids)})
                next_sample = now + sample_s
            time.sleep(0.1)
        time.sleep(DROP_AFTER_S)   # frames in flight at the end are not drops
        finished = time.monotonic()
    finally:
        bringup.stop()
        probe.close()
    warm_at = (probe.first_prediction or finished) + warmup_s
    report = summarise(samples, probe.latency, warm_at)
    counts = probe.drops(finished)
    report.update({
        'minutes': round((finished - warm_at - DROP_AFTER_S) / 60.0, 3),
        'rate_hz': float(rate_hz),
        'predictions': len(probe.predicted),
        'labels': counts['labels'],
        'drops': counts['dropped'],
        'fusion_dropped': probe.fusion_dropped,
        'rejects': sum(probe.rejects.values()),
        'rejects_by_modality': dict(probe.rejects),
        'restarts': dict(bringup.restarts),
        'failure': (None if bringup.failure is None
                    else {'node': bringup.failure[0], 'exit_code': bringup.failure[1]}),
        'rss_mb': [{'t_s': round(s['t'] - warm_at, 1),
                    **{n: round(b / 2 ** 20, 2) for n, b in s['rss'].items()}} for s in samples],
    })
    return report


def print_report(report: Dict[str, Any]) -> None:
    rows = [('minutes after warm-up', report['minutes']), ('predictions', report['predictions']),
            ('labels', report['labels']), ('drops', report['drops']),
            ('fusion queue replaced', report['fusion_dropped']), ('rejects', report['rejects']),
            ('RSS growth %', report['rss_growth_pct']),
            ('latency drift %', report['latency_drift_pct']),
            ('latency p50 first / last quarter ms',
             f"{report['latency_ms_p50_first_quarter']} / {report['latency_ms_p50_last_quarter']}"),
            ('restarts', report['restarts'] or '-'), ('failure', report['failure'] or '-')]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f'{key:<{width}}  {value}')


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='admn soak', description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


def add_arguments(parser) -> None:
    parser.add_argument('--minutes', type=float, default=10.0, help='run length after the warm-up')
    parser.add_argument('--json', help='write the report (with the RSS timeline) here')
    parser.add_argument('--rate-hz', type=float, default=10.0, help='sensor_source rate')
    parser.add_argument('--sample-s', type=float, default=5.0, help='seconds between RSS samples')


def run_cli(args) -> int:
    report = run_soak(args.minutes, rate_hz=args.rate_hz, sample_s=args.sample_s)
    print_report(report)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
        print(f'report: {path}')
    ok = report['failure'] is None and report['predictions'] > 0
    return 0 if ok else 1


if __name__ == '__main__':
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    raise SystemExit(main())
