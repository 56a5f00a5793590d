"""The demo scenario: its file, what it compiles into, the live status, the report in words, and a
shortened run of `admn demo` through the real node graph."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from admn_ros import scenario_report as SR
from admn_ros.demo import StatusView, default_scenario_path, graph_overrides
from admn_ros.nodes.budget_manager import parse_schedule
from admn_ros.scenario import load_scenario, parse_scenario
from admn_ros.datasets.schedules import SILENT, Schedule, apply_levels, check_level

PNG = b'\x89PNG\r\n\x1a\n'


def test_the_demo_scenario_scripts_what_the_readme_promises():
    sc = load_scenario(default_scenario_path())
    assert 55 <= sc.duration_s <= 70 and sc.samples == int(sc.rate_hz * sc.duration_s)
    first = sc.phases[0]
    assert first.budget == 1.0 and not first.corrupted()
    corrupted = [set(p.corrupted()) for p in sc.phases]
    dark = next(i for i, c in enumerate(corrupted) if c == {'rgb'})
    assert sc.phases[dark].levels['rgb'] == ('low_light', 1.0)
    assert corrupted[dark + 1] == {'audio'}            # the microphone, while the camera recovers
    assert any(p.levels['depth'] == ('blocked', 1.0) for p in sc.phases)
    quarter = next(i for i, p in enumerate(sc.phases) if p.budget == 0.25)
    assert sc.phases[quarter + 1].budget > 0.25        # ... and the budget returns
    silent = next(i for i, p in enumerate(sc.phases) if (SILENT, 1.0) in p.levels.values())
    assert not sc.phases[silent + 1].corrupted()       # the sensor comes back
    # Every phase with a degraded sensor has a clean phase at its budget to be compared with.
    stats = [{'index': i + 1, 'scripted_budget': p.budget, 'corrupted': p.corrupted(), 'frames': 1}
             for i, p in enumerate(sc.phases)]
    assert all(SR.reference_phase(stats, i) is not None for i, s in enumerate(stats) if s['corrupted'])


def test_the_scenario_compiles_into_the_nodes_schedules():
    sc = load_scenario(default_scenario_path())
    noise = Schedule.from_dict(sc.corruption_schedule())
    budget = parse_schedule(sc.budget_schedule())
    for phase in sc.phases:
        for t in (phase.start_s, (phase.start_s + phase.end_s) / 2, phase.end_s - 1e-3):
            assert noise.level_at(t) == dict(phase.levels)
            assert budget.value_at(t) == phase.budget
    short = sc.scaled(20.0)
    assert short.duration_s == 20.0 and short.samples == int(20 * sc.rate_hz)
    assert [p.start_s * 3 for p in short.phases] == pytest.approx([p.start_s for p in sc.phases])


@pytest.mark.parametrize('data, match', [
    ({'phases': [{'at': 0, 'rgb': 'dark'}]}, 'rgb must be clean, silent'),
    ({'phases': [{'at': 0}, {'at': 0}]}, 'not after the previous phase'),
    ({'phases': [{'at': 1}]}, 'first phase must start at 0'),
    ({'phases': [{'at': 0, 'budget': 0}]}, r'budget must lie in \(0, 1\]'),
    ({'phases': [{'at': 0, 'lidar': 'clean'}]}, "unknown keys \\['lidar'\\]"),
    ({'phases': [{'at': 0, 'audio': ['fog', 0.5]}]}, "unknown audio corruption 'fog'"),
    ({'speed': 2, 'phases': [{'at': 0}]}, "unknown scenario keys \\['speed'\\]"),
    ({'phases': []}, 'non-empty list of phases'),
])
def test_bad_scenarios_are_refused_naming_the_entry(data, match):
    with pytest.raises(ValueError, match=match):
        parse_scenario(data)


def test_silent_is_a_stream_level_that_leaves_the_modality_out():
    assert check_level('depth', SILENT, 1) == (SILENT, 1.0)
    with pytest.raises(ValueError, match='severity 1'):
        check_level('depth', SILENT, 0.5)
    batch = {'rgb': np.zeros((1, 8, 8, 3), np.uint8), 'depth': np.ones((1, 8, 8), np.float32),
             'label': np.zeros(1, np.int64)}
    out = apply_levels(batch, {'depth': (SILENT, 1.0)}, np.random.default_rng(0))
    assert 'depth' not in out and 'rgb' in out


def test_demo_overrides_play_the_scenario_alone(tmp_path):
    from admn_ros.graph import get_graph, parse_overrides
    sc = load_scenario(default_scenario_path())
    params = get_graph('noise_experiment').parameters(
        parse_overrides(graph_overrides('/m.pt', sc, tmp_path)))
    injector, manager = params['noise_injector'], params['budget_manager']
    assert Schedule.from_dict(__import__('yaml').safe_load(open(injector['schedule_file']))
                              ).level_at(0.0) == dict(sc.phases[0].levels)
    # Nothing corrupted but what the scenario says: with a schedule the injector's fixed levels
    # (corrupted ones in the graph config) do not apply (tests/test_ros_sources.py).
    assert injector['schedule_file'] and injector['depth.severity'] == 0.5
    assert manager['mode'] == 'schedule' and manager['clock'] == 'stream'
    assert params['sensor_source']['dataset_size'] == sc.samples
    assert params['evaluator']['status_path'].endswith('status.json')


def _timeline(sc):
    """Made-up frames: RGB loses its layers while dark, depth is absent while silent."""
    frames = []
    for k in range(sc.samples):
        t = k / sc.rate_hz
        phase = sc.phases[sc.phase_index(t)]
        n = 12 if phase.budget == 1.0 else 4
        layers = {'rgb': n, 'depth': n, 'audio': n}
        if phase.levels['rgb'] != ('clean', 0.0):
            layers.update(rgb=1, audio=n + 3)
        if phase.levels['depth'][0] == SILENT:
            del layers['depth']
        frames.append({'t_s': t, 'layers': layers, 'correct': k % 4 != 0,
                       'levels': {m: list(v) for m, v in phase.levels.items()},
                       'budget': phase.budget, 'latency_ms': 10.0 + k % 3,
                       'quality': {'rgb': 0.1 if 'rgb' in phase.corrupted() else 0.9}})
    return frames


def test_the_report_says_per_phase_where_the_layers_went(tmp_path):
    sc = load_scenario(default_scenario_path())
    timeline = _timeline(sc)
    stats = SR.phase_stats(timeline, sc)
    assert sum(s['frames'] for s in stats) == len(timeline)
    dark = next(i for i, s in enumerate(stats) if s['name'] == 'camera dark')
    assert stats[dark]['layers']['rgb'] == 1 and stats[dark]['quality']['rgb'] == pytest.approx(0.1)
    text = SR.sentence(stats, dark, SR.layer_totals(stats))
    assert 'RGB 1.0 of 12 (4.0 clean)' in text and 'Layers moved from RGB to audio' in text
    silent = next(i for i, s in enumerate(stats) if s['corrupted'].get('depth', [''])[0] == SILENT)
    assert stats[silent]['absent']['depth'] == stats[silent]['frames'] > 0
    assert 'depth sent nothing' in SR.sentence(stats, silent, {})
    md = SR.markdown(stats, {'matched': 10, 'accuracy': 0.75}, {'t': 'x.png'})
    assert md.count('\n| ') == len(stats) + 1 and '![t](x.png)' in md
    for plot in (SR.plot_timeline(timeline, sc, tmp_path / 'a.png'),
                 SR.plot_phases(stats, tmp_path / 'b.png')):
        assert plot.read_bytes()[:8] == PNG and plot.stat().st_size > 10_000


def test_status_view_draws_one_block_in_place(tmp_path):
    sc = load_scenario(default_scenario_path())
    status = tmp_path / 'status.json'
    status.write_text(json.dumps({'t_s': 12.0, 'matched': 50, 'accuracy': 0.9, 'drops': 0,
                                  'latency_ms_p50_recent': 14.0, 'newest': {
                                      'layers': {'rgb': 1, 'audio': 6}, 'budget': 0.33,
                                      'quality': {'rgb': 0.12}, 'levels': {
                                          'rgb': ['low_light', 1.0], 'depth': ['silent', 1.0],
                                          'audio': ['clean', 0.0]}}}))

    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    view = StatusView(sc, status, out)
    view.draw()
    view.draw()
    text = out.getvalue()
    lines = view.lines(view.read())
    assert 'phase 3/9: camera dark' in lines[0] and 'budget 0.33' in lines[1]
    assert any('rgb' in line and 'low_light 1.00' in line and 'quality 0.12' in line for line in lines)
    assert any('depth' in line and 'absent' in line for line in lines)
    assert text.count(f'\x1b[{len(lines)}F') == 1          # the second draw went back up
    plain = io.StringIO()
    StatusView(sc, tmp_path / 'missing.json', plain).draw()
    assert 'waiting for the first prediction' in plain.getvalue() and '\x1b' not in plain.getvalue()


@pytest.mark.ros
@pytest.mark.slow
def test_a_short_demo_runs_through_the_graph_and_reports_the_shift(tmp_path):
    """`admn demo --duration 20`: ends by itself with 0, and while the camera is dark the RGB
    encoder gets fewer layers than in the clean phase at the same budget."""
    out = tmp_path / 'demo'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    run = subprocess.run([sys.executable, '-m', 'admn_ros.cli', 'demo', '--duration', '20',
                          '--no-offline', '--out', str(out)], env=env, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert 'camera dark' in run.stdout and '\x1b[' not in run.stdout     # not a terminal: lines
    stats = {s['name']: s for s in json.loads((out / 'phases.json').read_text())}
    clean = stats['clean at a third of the layers']['layers']['rgb']
    assert stats['camera dark']['layers']['rgb'] < clean
    silent = stats['depth sensor stops publishing']
    assert silent['absent']['depth'] >= silent['frames'] // 2 > 0
    assert stats['budget falls to a quarter']['budget'] < 0.3
    report = (out / 'report.md').read_text()
    assert '**camera dark**' in report and 'scenario_timeline.png' in report
    for name in ('scenario_timeline.png', 'phases.png'):
        assert (out / name).read_bytes()[:8] == PNG
    log = (out / 'graph.log').read_text()
    assert "'evaluator': 0" in log and 'Traceback' not in log
