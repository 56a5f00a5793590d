"""The noise sweep (``admn experiment noise-sweep``) on the shipped synthetic default.

One CSV row per cell, the same numbers as ``admn eval --conditions`` for the same cell; an
interrupted sweep (Ctrl-C in-process, SIGKILL of the command) resumes where it stopped and ends
with the rows of an uninterrupted one; a changed config is refused; plots are PNGs drawing the
CSV's numbers, drawn without pyplot (no package module imports it); one cell through the ROS
node graph equals the offline cell.
"""
import ast
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from admn_ros.paths import config_dir
from admn_ros.quality_estimators.sweep import SweepConfig, read_rows, run_sweep

CI_CONFIG = config_dir() / 'experiments' / 'ci.yaml'
ROOT = Path(__file__).resolve().parent.parent
# The folders installed as admn_ros and admn_ros.<core folder>.
PACKAGE_FOLDERS = ('admn_ros', 'fusion', 'quality_estimators', 'datasets', 'benchmarks')
# What builds a figure and its canvas: datasets/figures.py alone imports these.
FIGURE_MAKERS = {'matplotlib.figure', 'matplotlib.figure.Figure', 'matplotlib.backends.backend_agg',
                 'matplotlib.backends.backend_agg.FigureCanvasAgg'}
# Modules that bring in pyplot and its global figure state.
PYPLOT = {'matplotlib.pyplot', 'matplotlib.pylab', 'pylab'}
QUIET = dict(progress=False, log=lambda *a: None)


@pytest.fixture(scope='module')
def ci_cfg():
    return SweepConfig.from_yaml(CI_CONFIG)


@pytest.fixture(scope='module')
def full_run(ci_cfg, tmp_path_factory):
    """The CI sweep run once, without interruption."""
    return run_sweep(ci_cfg, tmp_path_factory.mktemp('sweep') / 'out', **QUIET)


def by_key(rows):
    return {r['key']: r for r in rows}


@pytest.mark.slow
def test_one_csv_row_per_cell_with_the_numbers_of_admn_eval(ci_cfg, full_run):
    rows = read_rows(full_run.out / 'sweep.csv')
    grid = [c.key for c in ci_cfg.cells()]
    assert len(grid) == 2 * 3 * 2 * 3 == 36
    assert sorted(r['key'] for r in rows) == sorted(grid)          # each cell once, nothing else
    assert full_run.computed == 36 and full_run.skipped == 0
    assert {r['n'] for r in rows} == {64}
    cells = by_key(rows)
    for r in rows:
        total = sum(r['layers'].values())
        if r['policy'] == 'full':
            assert r['layers'] == {'rgb': 12.0, 'depth': 12.0, 'audio': 12.0}
        else:   # the strict budget: floor(budget x 36) layers at most, on every sample
            assert total <= np.floor(r['budget'] * 36) + 1e-9, r
    # Severity 0 is the clean split, the same cell whichever corruption it starts.
    for b in ci_cfg.budgets:
        for p in ci_cfg.policies:
            assert cells['rgb', 'low_light', 0.0, b, p]['accuracy'] == cells['audio', 'muted', 0.0, b, p]['accuracy']
    # The controller takes layers from the dark camera and from the muted microphone.
    assert cells['rgb', 'low_light', 1.0, 0.25, 'admn']['layers']['rgb'] < \
        cells['rgb', 'low_light', 0.0, 0.25, 'admn']['layers']['rgb'] - 1.0
    assert cells['audio', 'muted', 1.0, 0.25, 'admn']['layers']['audio'] < \
        cells['audio', 'muted', 0.0, 0.25, 'admn']['layers']['audio']
    # Muting the audio costs the full model accuracy: the corruption reached the model.
    assert cells['audio', 'muted', 1.0, 1.0, 'full']['accuracy'] < cells['audio', 'muted', 0.0, 1.0, 'full']['accuracy'] - 0.1

    from admn_ros.datasets.conditions import Condition
    from admn_ros.quality_estimators.evaluate import evaluate_conditions
    report = evaluate_conditions(None, 'synthetic', [0.25], ['admn', 'naive'],
                                 [Condition('dark', (('rgb', 'low_light', 1.0),))], size=64, device='cpu')
    for res in report['results']:
        cell = cells['rgb', 'low_light', 1.0, 0.25, res['policy']]
        assert cell['accuracy'] == res['metric'] and cell['gflops'] == res['gflops']
        assert cell['layers'] == res['layers']


def test_plots_are_pngs_drawing_the_csv_numbers(full_run):
    import matplotlib.image
    for kind in ('severity', 'gflops', 'layers'):
        path = full_run.files[kind]
        assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 400 and image[..., :3].std() > 0.05
    cells = by_key(full_run.rows)
    curves = full_run.curves
    # Accuracy against severity: a line per policy and budget in each corruption's panel.
    assert set(curves['severity']) == {'rgb:low_light', 'audio:muted'}
    xs, ys = curves['severity']['audio:muted']['naive @ 0.25']
    assert xs == [0.0, 0.5, 1.0]
    assert ys == [cells['audio', 'muted', s, 0.25, 'naive']['accuracy'] for s in xs]
    # Accuracy against GFLOPs: per severity, each policy's mean over corruptions through its budgets.
    xs, ys = curves['gflops']['severity 1']['admn']
    for (x, y), b in zip(zip(xs, ys), (0.25, 1.0)):
        sel = [cells[m, t, 1.0, b, 'admn'] for m, t in (('rgb', 'low_light'), ('audio', 'muted'))]
        assert x == pytest.approx(np.mean([r['gflops'] for r in sel]))
        assert y == pytest.approx(np.mean([r['accuracy'] for r in sel]))
    assert xs[0] < xs[1]
    # Layers per modality against severity (admn): the dark camera's layers fall with severity.
    xs, ys = curves['layers']['rgb:low_light']['rgb @ 0.25']
    assert xs == [0.0, 0.5, 1.0] and ys[2] < ys[0]
    assert set(curves['layers']['rgb:low_light']) == {f'{m} @ {b:g}' for m in ('rgb', 'depth', 'audio')
                                                      for b in (0.25, 1.0)}


def pyplot_imports(source: str, name: str, banned=PYPLOT) -> list:
    """``name:line module`` for each import in ``source`` of a module in ``banned`` (pyplot by
    default), inside functions too."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
        else:
            continue
        found += [f'{name}:{node.lineno} {m}' for m in modules if m in banned]
    return found


def test_figures_come_from_one_helper_never_from_pyplot():
    """Figures come from ``admn_ros.datasets.figures.agg_figure`` (an Agg canvas of their own), never from
    pyplot, whose global state is unsafe off the main thread and leaks unclosed figures; and no
    other module builds its own Figure and canvas."""
    assert pyplot_imports('import matplotlib.pyplot as plt', 'a') == ['a:1 matplotlib.pyplot']
    assert pyplot_imports('def f():\n    from matplotlib import pyplot', 'b') == ['b:2 matplotlib.pyplot']
    assert pyplot_imports('from matplotlib.figure import Figure', 'c') == []
    assert pyplot_imports('from matplotlib.figure import Figure', 'c', FIGURE_MAKERS) == [
        'c:1 matplotlib.figure', 'c:1 matplotlib.figure.Figure']
    paths = [p for folder in PACKAGE_FOLDERS for p in sorted((ROOT / folder).rglob('*.py'))]
    assert len(paths) > 50 and ROOT / 'quality_estimators' / 'sweep.py' in paths
    offenders = [hit for p in paths for hit in pyplot_imports(p.read_text(), str(p.relative_to(ROOT)))]
    assert not offenders, 'draw with admn_ros.datasets.figures.agg_figure instead: ' + ', '.join(offenders)
    helper = ROOT / 'datasets' / 'figures.py'
    builders = [hit for p in paths if p != helper
                for hit in pyplot_imports(p.read_text(), str(p.relative_to(ROOT)), FIGURE_MAKERS)]
    assert not builders, 'use admn_ros.datasets.figures.agg_figure: ' + ', '.join(builders)


class InterruptAfter:
    """A progress bar that presses Ctrl-C once ``n`` rows are written."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def __call__(self, total, initial):
        return self

    def update(self, k=1):
        self.seen += k
        if self.seen == self.n:
            raise KeyboardInterrupt

    def close(self):
        pass


@pytest.mark.slow
def test_interrupted_sweep_resumes_where_it_stopped(ci_cfg, full_run, tmp_path):
    out = tmp_path / 'out'
    with pytest.raises(KeyboardInterrupt):
        run_sweep(ci_cfg, out, progress_bar=InterruptAfter(7), **QUIET)
    assert len(read_rows(out / 'sweep.csv')) == 7 and not (out / 'sweep.json').exists()
    # A kill in the middle of a write leaves half a row: it is dropped and scored again.
    with open(out / 'sweep.csv', 'a') as f:
        f.write('audio,muted,0.5,0.25,adm')
    result = run_sweep(ci_cfg, out, resume=True, **QUIET)
    assert (result.skipped, result.computed) == (7, 29)
    rows = read_rows(out / 'sweep.csv')
    assert len(rows) == 36
    expected = by_key(full_run.rows)
    assert {k: (r['accuracy'], r['layers']) for k, r in by_key(rows).items()} == \
        {k: (r['accuracy'], r['layers']) for k, r in expected.items()}
    # Resuming a finished sweep scores nothing.
    again = run_sweep(ci_cfg, out, resume=True, **QUIET)
    assert (again.skipped, again.computed) == (36, 0)


def test_resume_refuses_another_config_and_a_sweep_is_never_overwritten_silently(ci_cfg, full_run):
    other = dataclasses.replace(ci_cfg, budgets=(0.25, 0.5))
    with pytest.raises(ValueError, match='different config') as err:
        run_sweep(other, full_run.out, resume=True, **QUIET)
    assert '\n' not in str(err.value)
    with pytest.raises(ValueError, match='--resume to continue'):
        run_sweep(ci_cfg, full_run.out, **QUIET)
    assert len(read_rows(full_run.out / 'sweep.csv')) == 36


@pytest.mark.parametrize('text, message', [
    ('budgts: [0.5]\n', 'unknown key budgts'),
    ('severities: [0.0, 1.5]\n', 'severities'),
    ('budgets: [0.5, 0.5]\n', 'no value twice'),
    ('modalities: [rgb]\ncorruptions: [blocked]\n', 'corruptions'),
    ('corruptions: some\n', 'corruptions'),
    ('policies: [admn, bogus]\n', 'bogus'),
    ('modalities: [lidar]\n', 'modalities'),
    ('size: 0\n', 'size'),
    ('ros: {rate: 0}\n', 'ros.rate'),
    ('seed: !!python/object/apply:os.getpid []\n', 'no !!python tags'),
])
def test_bad_configs_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / 'sweep.yaml'
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        SweepConfig.from_yaml(path)
    assert '\n' not in str(err.value) and str(path) in str(err.value)


@pytest.mark.slow
def test_killed_command_resumes_with_resume(tmp_path):
    """``admn experiment noise-sweep`` killed with SIGKILL mid-sweep, then ``--resume``."""
    config = tmp_path / 'sweep.yaml'
    # The CI grid on 128 samples: a few seconds of scoring, time enough to kill it in the middle.
    config.write_text(CI_CONFIG.read_text().replace('size: 64', 'size: 128'))
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'admn_ros.cli', 'experiment', 'noise-sweep', '--config', str(config),
           '--out', str(out), '--no-progress']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    csv_path = out / 'sweep.csv'
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if csv_path.exists() and csv_path.read_text().count('\n') >= 14:   # header + 13 rows
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    finished = len(read_rows(csv_path)) if csv_path.read_bytes().endswith(b'\n') else None
    assert not (out / 'sweep.json').exists(), 'the sweep ended before it could be killed'
    done = subprocess.run(cmd + ['--resume'], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = read_rows(csv_path)
    assert len(rows) == len({r['key'] for r in rows}) == 36
    assert 13 <= int(done.stdout.split(' resumed')[0].split()[-1]) < 36
    if finished is not None:
        assert f'{36 - finished} cells scored, {finished} resumed' in done.stdout
    assert (out / 'sweep.json').exists() and (out / 'accuracy_vs_severity.png').exists()


@pytest.fixture
def private_domain(monkeypatch):
    """A ROS domain of this process's own: the replay drives /clock, a global topic."""
    domain = 60 + os.getpid() % 40
    monkeypatch.setenv('ROS_DOMAIN_ID', str(domain))
    return domain


@pytest.mark.ros
def test_a_cell_through_the_node_graph_equals_the_offline_cell(tmp_path, private_domain):
    pytest.importorskip('rclpy')
    from admn_ros.sweep_ros import ros_route
    cfg = SweepConfig(dataset='synthetic', size=12, modalities=('rgb',), corruptions=('low_light',),
                      severities=(1.0,), budgets=(0.25,), policies=('admn',), device='cpu')
    offline = run_sweep(cfg, tmp_path / 'offline', **QUIET)
    ros = run_sweep(cfg, tmp_path / 'ros', route=ros_route, **QUIET)
    (a,), (b,) = offline.rows, ros.rows
    assert b['n'] == a['n'] == 12
    assert b['accuracy'] == a['accuracy']
    assert b['layers'] == a['layers']
    assert b['gflops'] == pytest.approx(a['gflops'], rel=1e-4)
    assert not list((tmp_path / 'ros' / 'ros' / 'bags').iterdir())      # the bag is removed when done
    assert len(list((tmp_path / 'ros' / 'ros' / 'reports').glob('*/report.json'))) == 1
