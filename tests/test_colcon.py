"""The package builds in a colcon workspace (ament_python), plain and with --symlink-install.

Needs colcon (colcon-common-extensions): ``$COLCON``, else ``colcon`` on PATH; skipped without.
``make test`` installs a pinned one (``requirements-colcon.txt``) in a venv of its own,
``.venv/colcon``, and points ``$COLCON`` at it. The source tree is copied into ``<tmp>/src/admn_ros`` so nothing is written into
the checkout. Checked: one console script per node (and ``admn``) in ``lib/admn_ros/`` where
``ros2 run`` looks, the ament index marker, ``package.xml``, ``launch/`` and ``config/`` under
``share/admn_ros/``, and that an installed copy finds its config through the ament index.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COLCON = os.environ.get('COLCON') or shutil.which('colcon')
pytestmark = [pytest.mark.slow, pytest.mark.skipif(COLCON is None, reason='colcon is not installed here')]

NODES = sorted(p.stem for p in (ROOT / 'admn_ros' / 'nodes').glob('*.py') if p.stem != '__init__')
# Never copied: environments, caches, build outputs and anything colcon or git made.
IGNORE = shutil.ignore_patterns('.git', '.venv', '.cache', '.pytest_cache', '.hypothesis',
                                '__pycache__', '*.egg-info', 'build', 'install', 'log', 'runs',
                                'results')


def build(tmp_path: Path, *options: str) -> Path:
    """Copy the package into a fresh workspace, ``colcon build`` it; returns the install prefix."""
    ws = tmp_path / 'ws'
    shutil.copytree(ROOT, ws / 'src' / 'admn_ros', ignore=IGNORE)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    run = subprocess.run([COLCON, 'build', *options], cwd=ws, env=env, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return ws / 'install' / 'admn_ros'


@pytest.mark.parametrize('options', [(), ('--symlink-install',)], ids=['plain', 'symlink'])
def test_colcon_build_installs_nodes_launch_and_config(tmp_path, options):
    prefix = build(tmp_path, *options)
    scripts = prefix / 'lib' / 'admn_ros'
    for name in NODES + ['admn']:
        script = scripts / name
        assert script.is_file() and os.access(script, os.X_OK), f'{script} missing'
        assert f"'console_scripts', '{name}'" in script.read_text()
    share = prefix / 'share'
    assert (share / 'ament_index' / 'resource_index' / 'packages' / 'admn_ros').is_file()
    assert (share / 'admn_ros' / 'package.xml').read_text() == (ROOT / 'package.xml').read_text()
    for folder, pattern in (('launch', '*.launch.py'), ('config', '*/*.yaml')):
        expected = sorted(str(p.relative_to(ROOT / folder)) for p in (ROOT / folder).glob(pattern))
        installed = sorted(str(p.relative_to(share / 'admn_ros' / folder))
                           for p in (share / 'admn_ros' / folder).glob(pattern))
        assert expected and installed == expected, folder


def test_installed_copy_runs_from_the_install_and_finds_its_config_through_the_ament_index(
        tmp_path):
    prefix = build(tmp_path)
    site = next((prefix / 'lib').glob('python3*/site-packages'))
    env = dict(os.environ, PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(prefix))
    probe = ('import importlib.metadata as md, admn_ros, admn_ros.paths\n'
             'dist = md.distribution("admn_ros")\n'
             'print(admn_ros.__file__); print(admn_ros.paths.config_dir()); print(dist.locate_file(""))\n'
             'eps = dist.entry_points.select(group="console_scripts")\n'
             'for ep in sorted(eps, key=lambda e: e.name): print(ep.name, ep.value)')
    out = subprocess.run([sys.executable, '-c', probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    module, config, dist, *entry_points = out.splitlines()
    assert Path(module).is_relative_to(site) and Path(dist) == site  # not the checkout's
    assert Path(config) == prefix / 'share' / 'admn_ros' / 'config'
    assert (Path(config) / 'ros' / 'admn.yaml').is_file()
    assert entry_points == sorted(['admn admn_ros.cli:main']
                                  + [f'{n} admn_ros.nodes.{n}:main' for n in NODES])
