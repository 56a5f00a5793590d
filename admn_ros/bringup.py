"""Start a graph from :mod:`admn_ros.graph` without ``launch``: one subprocess per node.

Each node runs as ``python -m admn_ros.nodes.<exe> --ros-args -r __node:=<name> [-r __ns:=<ns>]
--params-file <generated> -r from:=to ...``. The generated parameter file holds, per node, the
graph's YAML file merged with inline values and the caller's overrides, keyed by fully-qualified
node name. Output of every node is forwarded line by line with a ``[node]`` prefix.

A node that exits is handled by :func:`admn_ros.graph.exit_action`, as the launch files do: a
``required`` node ends the graph; any other node that fails (non-zero exit: a bad source, schedule
or model refused at start, a crash, a kill) ends it too, with that node's exit code, unless it is
marked ``respawn`` - then it is restarted, a limited number of times, unless it refused its
configuration (exit code 2). A graph therefore never runs on half dead.

Stopping (Ctrl-C, SIGTERM, or a node ending the graph) mirrors ``ros2 launch``: SIGINT to every
node, SIGTERM to those still running after ``sigint_timeout``, SIGKILL after ``sigterm_timeout``
(preceded by SIGUSR1, on which a node prints the stacks of its threads: the log shows what hung).
Children run in their own process group (a terminal's Ctrl-C reaches only this process, which then
stops them in order) and get SIGTERM from the kernel if the thread that started them dies without
cleaning up (Linux ``PR_SET_PDEATHSIG``), so start them from a thread that outlives the graph.

Usage: ``python -m admn_ros.bringup GRAPH [node.param=value ...] [argument:=value ...]
[--namespace NS] [--only NODE,NODE]``; ``--list`` describes the graphs.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple, Union

from admn_ros.graph import (RESPAWN_DELAY_S, RESTART, STOP, GraphSpec, NodeSpec, describe, exit_action,
                            get_graph, node_command, write_params_file)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def _death_signal_setter() -> Optional[Callable[[], None]]:
    """A pre-exec hook asking the kernel to SIGTERM the child when its parent dies (Linux only).

    libc is looked up here, in the parent: after fork only the foreign call itself runs, since
    importing in a forked child of a threaded process can deadlock.
    """
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: children simply outlive a SIGKILLed parent
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class Bringup:
    """A running graph. Use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(self, graph: Union[str, GraphSpec], overrides: Optional[Mapping] = None, *,
                 namespace: str = '', only: Optional[Sequence[str]] = None,
                 sink: Optional[Callable[[str], None]] = None, python: Optional[str] = None,
                 sigint_timeout: float = 5.0, sigterm_timeout: float = 5.0, linger_s: float = 1.0):
        self.graph = get_graph(graph) if isinstance(graph, str) else graph
        self.namespace = namespace
        unknown = set(only or ()) - set(self.graph.node_names)
        if unknown:
            raise ValueError(f'--only names {sorted(unknown)} not in graph {self.graph.name!r}: '
                             f'{self.graph.node_names}')
        self.specs = [s for s in self.graph.nodes if not only or s.name in only]
        self.parameters = self.graph.parameters(overrides)  # bad overrides fail before any start
        self.sink = sink or self._print
        self.python = python or sys.executable
        self.sigint_timeout, self.sigterm_timeout = sigint_timeout, sigterm_timeout
        self.linger_s = linger_s
        self.processes: Dict[str, subprocess.Popen] = {}
        self.restarts: Dict[str, int] = {}
        # (node, exit code) of the node whose exit ended the graph, if one did
        self.failure: Optional[Tuple[str, int]] = None
        self._handled: Dict[str, subprocess.Popen] = {}   # exits already acted on
        self._respawn_at: Dict[str, float] = {}
        self._stopping = False
        self._threads: List[threading.Thread] = []
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._params_file: Optional[Path] = None
        self._env: Dict[str, str] = {}
        self._pre_exec = None
        self._sink_lock = threading.Lock()

    # ------------------------------------------------------------------ output
    @staticmethod
    def _print(line: str) -> None:
        sys.stdout.write(line + '\n')
        sys.stdout.flush()

    def log(self, line: str) -> None:
        with self._sink_lock:
            self.sink(line)

    def _forward(self, name: str, stream: TextIO) -> None:
        for line in iter(stream.readline, ''):
            self.log(f'[{name}] {line.rstrip()}')
        stream.close()

    # ------------------------------------------------------------------ lifecycle
    def _child_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        # A source checkout runs without installation; output must not sit in pipe buffers.
        paths = (str(PROJECT_ROOT), env.get('PYTHONPATH', ''))
        env['PYTHONPATH'] = os.pathsep.join(p for p in paths if p)
        env['PYTHONUNBUFFERED'] = '1'
        env.setdefault('RCUTILS_COLORIZED_OUTPUT', '0')
        env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
        return env

    def start(self) -> 'Bringup':
        if self.processes:
            raise RuntimeError('graph already started')
        self._tmp = tempfile.TemporaryDirectory(prefix=f'admn_{self.graph.name}_')
        self._params_file = write_params_file(
            {s.name: self.parameters[s.name] for s in self.specs},
            Path(self._tmp.name) / 'params.yaml', self.namespace)
        self._env = self._child_env()
        self._pre_exec = _death_signal_setter()
        try:
            for spec in self.specs:
                self._spawn(spec)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, spec: NodeSpec) -> subprocess.Popen:
        cmd = node_command(spec, self._params_file, self.namespace, self.python)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, encoding='utf-8',
                                errors='replace', bufsize=1, env=self._env, process_group=0,
                                preexec_fn=self._pre_exec)
        self.processes[spec.name] = proc
        self.log(f'[bringup] started {spec.name} (pid {proc.pid}): {" ".join(cmd)}')
        # Respawned nodes start from the thread that calls supervise(): it must outlive them too
        # (PR_SET_PDEATHSIG is per thread), as run_graph's loop does.
        thread = threading.Thread(target=self._forward, args=(spec.name, proc.stdout), daemon=True)
        thread.start()
        self._threads.append(thread)
        return proc

    def supervise(self) -> Optional[str]:
        """Act on node exits since the last call (:func:`admn_ros.graph.exit_action`): restart
        respawning nodes when due, record the exit that ends the graph. Returns the name of the
        node that ends the graph, else None."""
        if self._stopping:
            return None
        now = time.monotonic()
        for spec in self.specs:
            proc = self.processes.get(spec.name)
            if proc is None:
                continue
            code = proc.poll()
            if code is None:
                continue
            if self._handled.get(spec.name) is not proc:
                self._handled[spec.name] = proc
                restarts = self.restarts.get(spec.name, 0)
                action = exit_action(spec, code, restarts)
                if action == STOP:
                    why = 'required node' if spec.required else 'node'
                    self.log(f'[bringup] {why} {spec.name} exited ({code}): stopping the graph')
                    self.failure = (spec.name, code)
                    return spec.name
                if action == RESTART:
                    self.log(f'[bringup] {spec.name} exited ({code}): restarting it in '
                             f'{RESPAWN_DELAY_S:g} s (restart {restarts + 1})')
                    self._respawn_at[spec.name] = now + RESPAWN_DELAY_S
                else:
                    self.log(f'[bringup] {spec.name} finished ({code})')
            due = self._respawn_at.get(spec.name)
            if due is not None and now >= due:
                del self._respawn_at[spec.name]
                self.restarts[spec.name] = self.restarts.get(spec.name, 0) + 1
                self._spawn(spec)
        return None

    def returncodes(self) -> Dict[str, Optional[int]]:
        return {name: proc.poll() for name, proc in self.processes.items()}

    def required_exited(self) -> Optional[str]:
        """Name of a required node that has exited, if any."""
        for spec in self.specs:
            proc = self.processes.get(spec.name)
            if spec.required and proc is not None and proc.poll() is not None:
                return spec.name
        return None

    def all_exited(self) -> bool:
        return all(code is not None for code in self.returncodes().values())

    def _signal_running(self, sig: int) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _dump_stacks(self) -> None:
        """Ask the nodes that ignored SIGINT and SIGTERM where they are (run_node prints every
        thread's stack on SIGUSR1) before they are killed, so the log says what hung."""
        self._signal_running(signal.SIGUSR1)
        time.sleep(0.5)   # the dump travels through the forwarding threads

    def _wait_all(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.all_exited():
                return True
            time.sleep(0.05)
        return self.all_exited()

    def stop(self) -> Dict[str, Optional[int]]:
        """SIGINT, then SIGTERM, then SIGKILL; returns every node's exit code."""
        self._stopping = True   # exits from here on are the stop, not failures to act on
        steps = ((signal.SIGINT, self.sigint_timeout), (signal.SIGTERM, self.sigterm_timeout),
                 (signal.SIGKILL, 5.0))
        for sig, timeout in steps:
            if self.all_exited():
                break
            if sig != signal.SIGINT:
                still = [n for n, c in self.returncodes().items() if c is None]
                self.log(f'[bringup] {still} still running: sending {signal.Signals(sig).name}')
            if sig == signal.SIGKILL:
                self._dump_stacks()
            self._signal_running(sig)
            self._wait_all(timeout)
        for thread in self._threads:
            thread.join(timeout=2.0)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return self.returncodes()

    def __enter__(self) -> 'Bringup':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def exit_code(self) -> int:
        """0 when every node exited cleanly; else the exit that ended the graph, or the first
        failure (128 + signal for a kill)."""
        codes = ([self.failure[1]] if self.failure else []) + list(self.returncodes().values())
        for code in codes:
            if code:
                return code if code > 0 else 128 - code
        return 0


def run_graph(name: Union[str, GraphSpec], overrides: Optional[Mapping] = None, **kwargs) -> int:
    """Run a graph until Ctrl-C / SIGTERM, until a required node exits, or until all nodes have
    exited; then stop it cleanly. Returns 0 when every node exited cleanly. ``kwargs`` go to
    :class:`Bringup` (namespace, only, sink, python, timeouts)."""
    bringup = Bringup(name, overrides, **kwargs)
    stop = threading.Event()
    previous = {}

    def on_signal(signum, frame) -> None:
        bringup.log(f'[bringup] {signal.Signals(signum).name}: stopping {bringup.graph.name}')
        stop.set()

    if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        bringup.start()
        while not stop.is_set():
            if bringup.supervise():
                stop.wait(bringup.linger_s)  # let in-flight messages reach the other nodes
                break
            if bringup.all_exited() and not bringup._respawn_at:
                break
            stop.wait(0.1)
    finally:
        codes = bringup.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    bringup.log(f'[bringup] exit codes: {codes}')
    return bringup.exit_code()


def main(argv: Optional[Sequence[str]] = None) -> int:
    from admn_ros.graph import GRAPHS, parse_overrides
    parser = argparse.ArgumentParser(prog='admn bringup', description=__doc__.split('\n\n')[0])
    parser.add_argument('graph', nargs='?', choices=sorted(GRAPHS))
    parser.add_argument('overrides', nargs='*', help="'node.param=value' or 'argument:=value'")
    parser.add_argument('--namespace', default='', help='namespace for every node')
    parser.add_argument('--only', action='append', default=[],
                        help='start only these nodes (comma-separated, repeatable)')
    parser.add_argument('--list', action='store_true', help='describe the graphs and exit')
    args = parser.parse_intermixed_args(argv)
    if args.list or not args.graph:
        print(describe([args.graph] if args.graph else []))
        return 0
    try:
        overrides = parse_overrides(args.overrides)
        only = [n for item in args.only for n in item.split(',') if n]
        return run_graph(args.graph, overrides, namespace=args.namespace, only=only or None)
    except (ValueError, FileNotFoundError) as exc:   # bad overrides, graph files: one line
        print(f'admn bringup: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    raise SystemExit(main())
