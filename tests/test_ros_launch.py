"""The graph under the tools users run: ``ros2 launch admn_ros admn.launch.py`` from a colcon
install, ``ros2 param set`` on the running fusion node, and a terminal's Ctrl-C (SIGINT to the
whole process group; launch then signals every node again).

The real ``ros2`` CLI and ``launch`` are not on PyPI: ``make test`` installs them from
``../shared/rostools`` (beside the project, as ``../shared/data``) into ``.venv/rostools``, and
colcon into ``.venv/colcon``. Skipped only when that kit is absent.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_process_faults import _mapped_segments, _wait

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT.parent / 'shared' / 'rostools'
ROSTOOLS = Path(os.environ.get('ROSTOOLS_VENV') or Path(sys.prefix) / 'rostools')
COLCON = Path(os.environ.get('COLCON') or Path(sys.prefix) / 'colcon' / 'bin' / 'colcon')

pytestmark = [pytest.mark.ros, pytest.mark.slow,
              pytest.mark.skipif(not KIT.is_dir(), reason=f'no ROS 2 CLI kit at {KIT}')]

TRACES = ('Traceback', 'Fatal Python', 'terminate called', 'KeyboardInterrupt', 'process has died')
GRAPH_NODES = ('sensor_source', 'noise_injector', 'admn_fusion', 'budget_manager')


def _sh(script: str):
    """bash with the kit's environment (env.sh) and the colcon install (setup.bash) sourced."""
    return ['bash', '-c', f'. "{ROSTOOLS}/env.sh" && {script}']


def _clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}  # the install, not the checkout
    env.update(PYTHONDONTWRITEBYTECODE='1', ROS_LOG_DIR=str(tmp_path / 'roslog'),
               HOME=str(tmp_path))   # ros2's daemon and logs stay inside the test
    return env


@pytest.fixture(scope='module')
def install(tmp_path_factory):
    """A colcon workspace with the package, built by colcon under the kit's python (the node
    scripts' shebang must be a python that has rclpy)."""
    assert (ROSTOOLS / 'env.sh').is_file(), (
        f'{ROSTOOLS} is not installed: make test does it ({KIT}/install.sh .venv/bin/python '
        '.venv/rostools)')
    assert COLCON.is_file(), f'no colcon at {COLCON}: make test installs it (.venv/colcon)'
    from tests.test_colcon import IGNORED, MSGS
    import shutil
    tmp = tmp_path_factory.mktemp('launch')
    ws = tmp / 'ws'
    shutil.copytree(ROOT, ws / 'src' / 'admn_ros', ignore=shutil.ignore_patterns(MSGS, *IGNORED))
    site = subprocess.run([str(COLCON.parent / 'python'), '-c',
                           'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True).stdout.strip()
    build = subprocess.run(_sh(f'cd "{ws}" && PYTHONPATH="{site}" python "{COLCON}" build'),
                           env=_clean_env(tmp), capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return ws


def _children(pid):
    out = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_ros2_launch_param_set_and_a_terminal_ctrl_c(install, tmp_path):
    env = _clean_env(tmp_path)
    log_path = tmp_path / 'launch.log'
    log = open(log_path, 'w')
    # Its own process group, SIGINT at its default (a background job of a script ignores it), as
    # in a terminal; killpg below is the terminal's Ctrl-C.
    proc = subprocess.Popen(
        _sh(f'. "{install}/install/setup.bash" && exec ros2 launch admn_ros admn.launch.py'),
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    text = lambda: log_path.read_text()   # noqa: E731
    try:
        assert _wait(lambda: 'admn_fusion]: loaded' in text() or proc.poll() is not None, 240), \
            text()[-3000:]
        assert proc.poll() is None, text()[-3000:]
        nodes = _children(proc.pid)
        assert len(nodes) == len(GRAPH_NODES), text()[-2000:]
        time.sleep(2.0)   # the graph talks: every node has its segment and maps its peers'
        segments = _mapped_segments(nodes)
        assert segments, 'the nodes map no Fast DDS segment: nothing to check'
        # Integers for double parameters, as the README writes them.
        for name, value in (('deadline_ms', '40'), ('budget', '1')):
            for _ in range(6):   # discovery of a fresh CLI node takes a while on a busy machine
                run = subprocess.run(
                    _sh(f'. "{install}/install/setup.bash" && ros2 param set --no-daemon '
                        f'--spin-time 5 /admn_fusion {name} {value} && ros2 param get '
                        f'--no-daemon --spin-time 5 /admn_fusion {name}'),
                    env=env, capture_output=True, text=True, timeout=120)
                if 'Node not found' not in run.stderr:
                    break
            assert run.returncode == 0 and 'Set parameter successful' in run.stdout, (
                name, run.stdout, run.stderr[-2000:])
            assert f'Double value is: {float(value)}' in run.stdout, run.stdout
        os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C in the terminal
        code = proc.wait(90)
        out = text()
        assert code == 0, out[-3000:]
        assert not [t for t in TRACES if t in out], out[-4000:]
        for node in GRAPH_NODES:
            assert re.search(rf'\[{node}-\d+\]: process has finished cleanly', out), (node, out[-3000:])
        stale = sorted(s for s in segments if Path('/dev/shm', s).exists())
        assert not stale, stale
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
