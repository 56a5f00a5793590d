"""The package builds in a colcon workspace (ament_python), plain and with --symlink-install, and
beside it admn_msgs (ament_cmake, the message types of its outputs).

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
IGNORED = ('.git', '.venv', '.cache', '.pytest_cache', '.hypothesis', '__pycache__', '*.egg-info',
           'build', 'install', 'log', 'runs', 'results')
MSGS = 'admn_msgs'   # a package of its own: beside admn_ros in a workspace, not inside it


def build(tmp_path: Path, *options: str, with_msgs: bool = False) -> Path:
    """Copy the package (and with ``with_msgs`` admn_msgs beside it) into a fresh workspace,
    ``colcon build`` it; returns the install prefix of admn_ros."""
    ws = tmp_path / 'ws'
    shutil.copytree(ROOT, ws / 'src' / 'admn_ros', ignore=shutil.ignore_patterns(MSGS, *IGNORED))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    if with_msgs:
        shutil.copytree(ROOT / MSGS, ws / 'src' / MSGS)
        # ament_cmake, the generators and std_msgs are in this venv's prefix (the ros-kilted
        # wheels); the generated Python extension is built for this interpreter.
        prefix = os.pathsep.join([sys.prefix] + [p for p in os.environ.get(
            'AMENT_PREFIX_PATH', '').split(os.pathsep) if p])
        env.update(AMENT_PREFIX_PATH=prefix, CMAKE_PREFIX_PATH=prefix)
        options += ('--cmake-args', f'-DPython3_EXECUTABLE={sys.executable}',
                    '-DBUILD_TESTING=OFF')
    run = subprocess.run([COLCON, 'build', *options], cwd=ws, env=env, capture_output=True,
                         text=True, timeout=600 if with_msgs else 240)
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


@pytest.mark.slow
def test_colcon_builds_admn_msgs_beside_admn_ros_and_the_install_is_what_python_imports(tmp_path):
    """One workspace, both packages: admn_msgs' generated Python, typesupport libraries and
    .msg files land in its own prefix, and with that prefix first the typed Allocation imports
    from there and survives a CDR round trip (the typesupport loads)."""
    prefix = build(tmp_path, with_msgs=True)
    msgs = prefix.parent / MSGS
    assert (prefix / 'lib' / 'admn_ros' / 'admn_fusion').is_file()
    site = next((msgs / 'lib').glob('python3*/site-packages'))
    assert (site / MSGS / 'msg' / '_allocation.py').is_file()
    assert (msgs / 'lib' / f'lib{MSGS}__rosidl_typesupport_c.so').is_file()
    assert sorted(p.name for p in (msgs / 'share' / MSGS / 'msg').glob('*.msg')) == sorted(
        p.name for p in (ROOT / MSGS / 'msg').glob('*.msg'))
    assert (msgs / 'share' / 'ament_index' / 'resource_index' / 'packages' / MSGS).is_file()
    probe = ('import admn_msgs.msg as m\n'
             'from rclpy.serialization import serialize_message, deserialize_message\n'
             'a = m.Allocation(modalities=["rgb"], layers=[3], depth=[4], present=[True],\n'
             '                 kept=[True, True, True, False], budget_unit="layers")\n'
             'b = deserialize_message(serialize_message(a), m.Allocation)\n'
             'print(m.__file__); print(list(b.layers), list(b.kept))')
    env = dict(os.environ, PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(msgs),
               LD_LIBRARY_PATH=os.pathsep.join([str(msgs / 'lib'),
                                                os.environ.get('LD_LIBRARY_PATH', '')]))
    out = subprocess.run([sys.executable, '-c', probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    module, fields = out.stdout.splitlines()
    assert Path(module).is_relative_to(site)
    assert fields == '[3] [True, True, True, False]'
