"""``make demo`` / ``admn demo``: the main job on the embedded synthetic world.

1. The model: ``--checkpoint``, else the trained default shipped in ``admn_ros/models/`` (or the
   cache's, see :mod:`admn_ros.quality_estimators.inference`); with neither, it is trained first.
2. Offline (skipped with ``--no-offline``): each sensor destroyed alone over the test split, the
   learned controller against the fixed rules at a quarter and a third of the layers.
3. Online: a scripted scenario (``config/scenarios/demo.yaml``, or ``--scenario FILE``) played
   through the real node graph ``noise_experiment`` (sensor_source -> noise_injector ->
   admn_fusion <- budget_manager, scored by evaluator), one process per node. The scenario
   compiles into the injector's corruption schedule and the budget manager's schedule on the
   stream clock. While it runs, one status block updates in place (on a terminal; elsewhere a
   line every few seconds); the nodes' logs go to ``<out>/graph.log``. The graph ends by itself
   when the source has played ``rate_hz * duration_s`` samples.
4. ``<out>/report.md``: a few sentences per phase from the measurements, a table, and two plots
   (layers per modality against corruption and budget over time; accuracy and latency per phase).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import IO, List, Optional

from admn_ros.paths import config_dir
from admn_ros.scenario import Scenario, load_scenario

DEFAULT_SCENARIO = ('scenarios', 'demo.yaml')
OFFLINE_BUDGETS = (0.25, 0.33)
OFFLINE_POLICIES = ('admn', 'naive', 'every_other', 'full')


def default_scenario_path() -> Path:
    return config_dir().joinpath(*DEFAULT_SCENARIO)


def _ensure_default(out: Path, quick: bool) -> Path:
    from admn_ros.quality_estimators.defaults import train_defaults
    from admn_ros.quality_estimators.inference import default_checkpoint
    try:
        return default_checkpoint('synthetic')
    except FileNotFoundError:
        pass
    if not quick:
        print('No trained default found: training it now, once (about 15 minutes on 2 cores;\n'
              'the same as `admn train defaults --dataset synthetic`).', flush=True)
        return train_defaults('synthetic')
    print('No trained default found: --quick trains a tiny one (near chance).', flush=True)

    def shrink(s1, c):
        s1.data.train_size, s1.data.val_size, s1.epochs = 600, 200, 2
        c.data.train_size, c.epochs = 600, 1
    return train_defaults('synthetic', out=out / 'quick_model', shrink=shrink, force=True)   # a smoke model


def demo_conditions():
    """Clean, then each sensor destroyed alone (the conditions of the README's headline table)."""
    from admn_ros.datasets.conditions import DESTROYING, Condition, condition_name
    conditions = [Condition('clean', ())]
    for corruption in DESTROYING:
        conditions.append(Condition(condition_name([corruption]), (corruption,)))
    return conditions


def graph_overrides(checkpoint, scenario: Scenario, out: Path, device: str = 'cpu') -> List[str]:
    """The ``noise_experiment`` overrides that play ``scenario`` (its schedules written to ``out``)."""
    noise, budget = scenario.write_node_files(out)
    return [f'model:={checkpoint}', f'schedule:={noise}',
            f'evaluator.report_path={out / "ros_report.json"}',
            f'evaluator.status_path={out / "status.json"}',
            f'sensor_source.source={scenario.dataset}',
            f'sensor_source.dataset_size={scenario.samples}',
            f'sensor_source.rate_hz={scenario.rate_hz}',
            f'admn_fusion.device={device}',
            f'budget_manager.schedule_file={budget}', 'budget_manager.mode=schedule',
            'budget_manager.clock=stream']


# --------------------------------------------------------------------------- live status
class StatusView:
    """Redraws one status block in place from the evaluator's status file.

    On a terminal the block is rewritten with ANSI cursor moves; elsewhere (CI logs, pipes) one
    line is printed every ``plain_every_s`` so the log stays short."""

    BAR = 12

    def __init__(self, scenario: Scenario, status_path: Path, stream: IO = sys.stdout,
                 interval_s: float = 0.5, plain_every_s: float = 5.0):
        self.scenario, self.path, self.stream = scenario, Path(status_path), stream
        self.interval_s, self.plain_every_s = interval_s, plain_every_s
        self.tty = hasattr(stream, 'isatty') and stream.isatty()
        self.drawn = 0
        self.max_layers: dict = {}
        self.stop = threading.Event()
        self.started = time.monotonic()
        self._last_plain = -1e9

    def read(self) -> Optional[dict]:
        try:
            return json.loads(self.path.read_text(encoding='utf-8'))
        except (OSError, ValueError):
            return None

    def lines(self, status: Optional[dict]) -> List[str]:
        sc = self.scenario
        wall = time.monotonic() - self.started
        if not status or status.get('t_s') is None:
            return [f'admn demo  |  waiting for the first prediction ({wall:.0f} s)']
        t = float(status['t_s'])
        i = sc.phase_index(t)
        newest = status.get('newest') or {}
        acc = status.get('accuracy')
        lat = status.get('latency_ms_p50_recent')
        budget = newest.get('budget')
        out = [f'admn demo  |  t {t:5.1f} of {sc.duration_s:.0f} s  |  phase {i + 1}/{len(sc.phases)}: '
               f'{sc.phases[i].name}',
               f"budget {'-' if budget is None else f'{budget:.2f}'}   accuracy "
               f"{'-' if acc is None else f'{acc:.3f}'} over {status.get('matched', 0)}   "
               f"latency p50 {'-' if lat is None else f'{lat:.0f} ms'}   drops {status.get('drops', 0)}"]
        layers = newest.get('layers') or {}
        quality = newest.get('quality') or {}
        levels = newest.get('levels') or {}
        for m in ('rgb', 'depth', 'audio'):
            if m not in layers and m not in levels:
                continue
            n = layers.get(m)
            if n is not None:
                self.max_layers[m] = max(self.max_layers.get(m, 1), n)
            total = self.max_layers.get(m, 1)
            filled = 0 if n is None else int(round(self.BAR * n / total))
            bar = '#' * filled + '.' * (self.BAR - filled)
            q = quality.get(m)
            level = levels.get(m) or ['clean', 0.0]
            cond = 'clean' if level[0] == 'clean' else f'{level[0]} {float(level[1]):.2f}'
            count = 'absent' if n is None else f'{n:>2} layers'
            out.append(f"  {m:<6} [{bar}] {count:<9}  quality {'-' if q is None else f'{q:.2f}'}"
                       f'  {cond}')
        return out

    def draw(self, final: bool = False) -> None:
        lines = self.lines(self.read())
        if self.tty:
            if self.drawn:
                self.stream.write(f'\x1b[{self.drawn}F')
            self.stream.write(''.join(f'\x1b[2K{line}\n' for line in lines))
            self.drawn = len(lines)
        else:
            now = time.monotonic()
            if final or now - self._last_plain >= self.plain_every_s:
                self._last_plain = now
                self.stream.write(' | '.join(lines[:2]) + '\n')
        self.stream.flush()

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.draw()
        self.draw(final=True)


# --------------------------------------------------------------------------- the run
def run_scenario(checkpoint, scenario: Scenario, out: Path, device: str = 'cpu',
                 stream: IO = sys.stdout) -> int:
    """Play ``scenario`` through the node graph; the nodes' logs go to ``out/graph.log``."""
    from admn_ros.bringup import run_graph
    from admn_ros.graph import parse_overrides

    for stale in ('status.json', 'ros_report.json'):
        (out / stale).unlink(missing_ok=True)
    view = StatusView(scenario, out / 'status.json', stream)
    log = open(out / 'graph.log', 'w', encoding='utf-8')

    def sink(line: str) -> None:
        log.write(line + '\n')
        log.flush()

    thread = threading.Thread(target=view.run, name='demo-status', daemon=True)
    thread.start()
    try:
        # The source starts after the others have loaded (start_delay_s in the graph's config).
        code = run_graph('noise_experiment', parse_overrides(
            graph_overrides(checkpoint, scenario, out, device)), sink=sink)
    finally:
        view.stop.set()
        thread.join(timeout=5)
        log.close()
    return code


def write_scenario_report(scenario: Scenario, ros_report: dict, out: Path) -> Path:
    """``report.md`` plus the two plots, from the evaluator's report (its per-frame timeline)."""
    from admn_ros import scenario_report as SR
    timeline = ros_report.get('timeline') or []
    stats = SR.phase_stats(timeline, scenario)
    plots = {}
    if timeline:
        plots['layers per modality against corruption and budget'] = SR.plot_timeline(
            timeline, scenario, out / 'scenario_timeline.png').name
        plots['accuracy and latency per phase'] = SR.plot_phases(stats, out / 'phases.png').name
    (out / 'phases.json').write_text(json.dumps(stats, indent=2) + '\n', encoding='utf-8')
    path = out / 'report.md'
    path.write_text(SR.markdown(stats, ros_report, plots) + '\n', encoding='utf-8')
    return path


def main(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    scenario = load_scenario(args.scenario or default_scenario_path())
    if args.duration:
        scenario = scenario.scaled(args.duration)
    checkpoint = Path(args.checkpoint) if args.checkpoint else _ensure_default(out, args.quick)
    print(f'model: {checkpoint}', flush=True)

    if not args.no_offline:
        from admn_ros.quality_estimators.condition_report import write_condition_report
        from admn_ros.quality_estimators.evaluate import evaluate_conditions
        print('offline: one sensor destroyed at a time, the synthetic test split each', flush=True)
        report = evaluate_conditions(checkpoint, 'synthetic', list(OFFLINE_BUDGETS),
                                     list(OFFLINE_POLICIES), demo_conditions(),
                                     size=200 if args.quick else 1000, device=args.device)
        write_condition_report(report, json_path=out / 'eval.json',
                               plot=out / 'accuracy_by_condition.png',
                               allocation_plot=out / 'layers_by_condition.png')

    print(f'online: {len(scenario.phases)} phases in {scenario.duration_s:.0f} s of source time '
          f'through the ROS 2 graph (node logs: {out / "graph.log"})', flush=True)
    code = run_scenario(checkpoint, scenario, out, args.device)
    report_path = out / 'ros_report.json'
    if not report_path.exists():
        print(f'admn demo: the evaluator wrote no report (see {out / "graph.log"})', file=sys.stderr)
        return code or 1
    path = write_scenario_report(scenario, json.loads(report_path.read_text()), out)
    print(path.read_text().split('## Phases', 1)[-1].split('\n|', 1)[0].strip(), flush=True)
    print(f'demo finished in {time.time() - t0:.0f} s; report {path} (plots beside it)', flush=True)
    return code
