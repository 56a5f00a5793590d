"""Helpers every admn_ros node shares: parameter declaration, the ``main()`` runner, diagnostics.

Parameters are always declared with a default and a :class:`ParameterDescriptor` (description,
range, read-only flag) so ``ros2 param describe`` and rclpy's own range checks work.
Diagnostics follow ``diagnostic_updater`` semantics without the package, which has no pip wheel:
one ``DiagnosticArray`` on the absolute ``/diagnostics`` topic, one status per task.
"""
from __future__ import annotations

import collections
import faulthandler
import gc
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, NoReturn, Optional, Sequence, Tuple

# Diagnostic levels (diagnostic_msgs/DiagnosticStatus constants) as plain ints: no import needed.
OK, WARN, ERROR, STALE = 0, 1, 2, 3

DIAGNOSTICS_TOPIC = '/diagnostics'
# A diagnostics value '<UNDECODABLE_KEY> <topic>' counts that topic's messages that did not decode
# (bag_player reports them; the evaluator's report shows every such count it saw).
UNDECODABLE_KEY = 'undecodable'

# A task reports (level, message, values); values become KeyValue pairs with string values.
DiagnosticTask = Callable[[], Tuple[int, str, Dict[str, Any]]]


def declare(node, name: str, default: Any, description: str, *, read_only: bool = False,
            value_range: Optional[Tuple[float, float]] = None, step: float = 0,
            choices: Optional[Sequence[str]] = None, array_type: Optional[str] = None) -> Any:
    """Declare ``name`` on ``node`` with a descriptor and return its (possibly overridden) value.

    ``value_range`` becomes an IntegerRange or FloatingPointRange (inclusive, enforced by rclpy);
    ``choices`` is listed in ``additional_constraints`` and must be checked by the node's set
    callback. An empty-list default cannot carry its element type, so pass ``array_type``
    ('string', 'integer', 'double', 'bool'): the parameter is declared typed and reads back as
    ``[]`` when unset.
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.parameter import Parameter

    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(choices)
    if value_range is not None:
        lo, hi = value_range
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise ValueError(f'parameter {name!r}: a range needs a numeric default, '
                             f'got {default!r}')
        if isinstance(default, int):
            descriptor.integer_range = [
                IntegerRange(from_value=int(lo), to_value=int(hi), step=int(step))]
        else:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(lo), to_value=float(hi), step=float(step))]
    if isinstance(default, (list, tuple)) and len(default) == 0:
        types = {'string': Parameter.Type.STRING_ARRAY, 'integer': Parameter.Type.INTEGER_ARRAY,
                 'double': Parameter.Type.DOUBLE_ARRAY, 'bool': Parameter.Type.BOOL_ARRAY}
        if array_type not in types:
            raise ValueError(f'parameter {name!r}: an empty-list default needs array_type '
                             f'in {sorted(types)}')
        value = node.declare_parameter(name, types[array_type], descriptor).value
        return [] if value is None else list(value)
    if isinstance(default, tuple):
        default = list(default)
    _pre_set_chain(node)   # integers for doubles (_as_declared) on every later set
    overrides = getattr(node, '_parameter_overrides', None)
    if overrides is not None and name in overrides:
        overrides[name] = _as_declared(overrides[name], Parameter(name, value=default).type_)
    value = node.declare_parameter(name, default, descriptor).value
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, 'tolist') else value


def _as_declared(parameter, declared_type):
    """``parameter`` as a double (array) when it came as an integer (array) for a parameter
    declared double: ``ros2 param set /admn_fusion deadline_ms 40`` (or ``budget: 1`` in a
    parameter file) sends an integer, which rclpy refuses outright ("Wrong parameter type") for a
    double. The descriptor's range check then applies to the converted value as to any other."""
    from rclpy.parameter import Parameter

    t = Parameter.Type
    if parameter.type_ == t.INTEGER and declared_type == t.DOUBLE:
        return Parameter(parameter.name, t.DOUBLE, float(parameter.value))
    if parameter.type_ == t.INTEGER_ARRAY and declared_type == t.DOUBLE_ARRAY:
        return Parameter(parameter.name, t.DOUBLE_ARRAY, [float(v) for v in parameter.value])
    return parameter


def add_pre_set(node, hook: Callable[[list], list]) -> None:
    """Run ``hook`` (a list of Parameters -> the list to set) before every parameter change of
    ``node``, after the integer conversion. Use this instead of rclpy's
    ``add_pre_set_parameters_callback``: rclpy hands each of several such callbacks the original
    list and concatenates what they return, so two of them would set every parameter twice."""
    _pre_set_chain(node).append(hook)


def _pre_set_chain(node) -> list:
    chain = getattr(node, '_admn_pre_set_chain', None)
    if chain is not None:
        return chain
    from rclpy.parameter import Parameter

    def coerce(parameters):
        return [_as_declared(p, Parameter.Type(node.describe_parameter(p.name).type))
                if node.has_parameter(p.name) else p for p in parameters]

    chain = node._admn_pre_set_chain = [coerce]

    def run(parameters):
        for hook in chain:
            parameters = hook(parameters)
        return parameters

    node.add_pre_set_parameters_callback(run)
    return chain


def param(node, name: str) -> Any:
    """Live value of a declared parameter (never a stale copy); arrays as lists."""
    value = node.get_parameter(name).value
    if value is None:
        return []
    if hasattr(value, 'tolist'):
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


def set_result(successful: bool = True, reason: str = ''):
    """A ``SetParametersResult`` (for on-set parameter callbacks)."""
    from rcl_interfaces.msg import SetParametersResult
    return SetParametersResult(successful=successful, reason=reason)


EXECUTOR_ENV = 'ADMN_ROS_EXECUTOR'
EXECUTORS = ('events', 'single')


def executor_kind(kind: Optional[str] = None) -> str:
    """``kind``, else ``$ADMN_ROS_EXECUTOR``, else ``events``, checked; ``events`` falls back to
    ``single`` where rclpy has no events executor (before Kilted)."""
    kind = (kind or os.environ.get(EXECUTOR_ENV) or 'events').strip().lower()
    if kind not in EXECUTORS:
        raise ValueError(f'{EXECUTOR_ENV} must be one of {EXECUTORS}, got {kind!r}')
    if kind == 'events':
        try:
            from rclpy.experimental import EventsExecutor  # noqa: F401
        except ImportError:
            return 'single'
    return kind


def make_executor(kind: Optional[str] = None, context=None):
    """The executor a node process spins (:func:`executor_kind`): ``events`` or ``single``.

    ``events`` is rclpy's C++ ``EventsExecutor`` (rclpy.experimental): it dispatches each ready
    entity directly instead of rebuilding a wait set in Python for every callback, which with a
    lifecycle node's two dozen services and timers costs ~1-3 ms per message on a small CPU and
    holds the GIL against the node's worker thread meanwhile. ``single`` is the plain
    ``SingleThreadedExecutor``.
    """
    if executor_kind(kind) == 'events':
        from rclpy.experimental import EventsExecutor
        return EventsExecutor(context=context)
    from rclpy.executors import SingleThreadedExecutor
    return SingleThreadedExecutor(context=context)


def exit_without_teardown(code: int) -> NoReturn:
    """Leave without the interpreter's teardown: the node has released everything already.

    Finalising the interpreter after a node unloads torch, OpenCV and the DDS libraries with their
    threads: 1-2 s on a busy machine, and on CI the only nodes that outlived SIGINT and SIGTERM
    (and were killed although their work had ended cleanly) were the two that still went through
    it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class StopSignals:
    """SIGINT and SIGTERM in a node process: the first one stops the node, any later one is ignored.

    A terminal's Ctrl-C under ``ros2 launch`` reaches every process of the group, and launch then
    sends each node its own SIGINT a moment later. Python's default handler would raise that second
    ``KeyboardInterrupt`` inside the cleanup (``destroy_node``, the executor's shutdown): the node
    died with a traceback, left its DDS shared-memory files in /dev/shm and its name in the graph,
    and the events executor's C++ teardown aborted the process. rclpy's own handler still runs
    first on every signal (it shuts the context down) and then calls this one.

    Phases: ``starting`` (imports, before :func:`run_node` takes over: a signal exits at once,
    quietly, with 0, since no DDS participant exists yet), ``running`` (building or spinning the
    node: the first signal raises ``KeyboardInterrupt`` as Python's default does), ``stopping``
    (cleanup: signals are counted and ignored).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.phase = 'starting'
        self.ignored = 0

    def install(self) -> dict:
        """Take SIGINT and SIGTERM (main thread only, as Python allows); returns the handlers
        replaced, for :meth:`restore`."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS}

    def restore(self, previous: dict) -> None:
        """Give back handlers that were not ours (a node run in-process, as tests do)."""
        for sig, handler in previous.items():
            if handler != self._on_signal and handler is not None:
                signal.signal(sig, handler)

    def run(self) -> None:
        self.phase = 'running'

    def stop(self) -> None:
        """The stop has begun: nothing interrupts the cleanup from here on."""
        self.phase = 'stopping'

    def _on_signal(self, signum, frame) -> None:
        if self.phase == 'starting':
            exit_without_teardown(0)
        if self.phase == 'running':
            self.phase = 'stopping'
            raise KeyboardInterrupt
        self.ignored += 1


STOP_SIGNALS = StopSignals()


def quiet_start() -> None:
    """Install :data:`STOP_SIGNALS` when this process is one of the package's node executables
    (``python -m admn_ros.nodes.X`` or the console script ``X``): a graph stopped while a node
    still imports torch ends it quietly instead of printing a ``KeyboardInterrupt`` traceback
    from the middle of an import. Any other process importing the nodes keeps its own handlers."""
    argv = [str(a) for a in getattr(sys, 'orig_argv', sys.argv)]
    names = {os.path.basename(a) for a in argv[1:3]} | {a.rpartition('.')[2] for a in argv[1:3]}
    scripts = {p[:-3] for p in os.listdir(os.path.join(os.path.dirname(__file__), 'nodes'))
               if p.endswith('.py') and p != '__init__.py'}
    if STOP_SIGNALS.phase == 'starting' and names & scripts:
        STOP_SIGNALS.install()


def node_main(factory: Callable[[], Any], args: Optional[Sequence[str]] = None) -> NoReturn:
    """A node process's ``main()``: :func:`run_node`, then end the process with its exit code
    (:func:`exit_without_teardown`). Console scripts, ``ros2 run``, launch and bringup all come
    through here."""
    exit_without_teardown(run_node(factory, args))


def run_node(factory: Callable[[], Any], args: Optional[Sequence[str]] = None) -> int:
    """The standard ``main()``: init, build the node, spin, and always clean up.

    Spins (:func:`make_executor`) until shutdown (Ctrl-C / SIGTERM, handled by rclpy's signal
    handlers) or until the node's ``finished`` attribute becomes true (e.g. the bag player with
    ``exit_on_end``). Returns the node's ``exit_code`` attribute (default 0), 0 when stopped while
    it was still being built, or 2 when the node refuses its configuration (bad parameter, missing
    file); :func:`node_main` makes that the process's exit code.
    """
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException

    # A node that will not stop can be asked where it is: bringup sends SIGUSR1 before SIGKILL.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Before rclpy.init, which keeps the handler it finds and calls it after its own.
    previous = STOP_SIGNALS.install()
    STOP_SIGNALS.run()
    rclpy.init(args=list(args) if args is not None else None)
    node = None
    try:
        executor = make_executor()
    except ValueError as exc:
        print(f'error: {exc}', file=sys.stderr)
        rclpy.try_shutdown()
        STOP_SIGNALS.restore(previous)
        return 2
    code = 0
    try:
        try:
            node = factory()
            refuse_unknown_overrides(node)
        except Exception as exc:
            if not rclpy.ok():   # Ctrl-C while the node was being built: a stop, not a failure
                return 0
            # A configuration mistake: one clear line, not a traceback (ADMN_DEBUG=1 shows it).
            if os.environ.get('ADMN_DEBUG') or not isinstance(
                    exc, (ValueError, FileNotFoundError, ParameterException)):
                raise
            print(f'{getattr(factory, "__name__", "node")}: error: {type(exc).__name__}: {exc}',
                  file=sys.stderr)
            return 2
        # The node has loaded what it uses: numpy's OpenBLAS and OpenCV get one thread each, as
        # the thread rule says (admn_ros.fusion.threads); a pool per core stalls next to a busy one.
        from admn_ros.fusion.threads import limit_native_pools
        limit_native_pools(1)
        executor.add_node(node)
        while rclpy.ok() and not getattr(node, 'finished', False):
            try:
                executor.spin_once(timeout_sec=0.1)
            except RuntimeError:
                # Ctrl-C landing while the events executor turns a message into Python surfaces as
                # a RuntimeError ('Unable to convert call argument') rather than KeyboardInterrupt,
                # sometimes a moment before the signal handler has shut the context down: if that
                # shutdown follows, it is the shutdown, not a failure.
                if not _context_shuts_down(rclpy, within_s=1.0):
                    raise
                break
        code = int(getattr(node, 'exit_code', 0))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        STOP_SIGNALS.stop()
        executor.shutdown()
        if node is not None:
            node.destroy_node()
            # A verdict reached while shutting down (the evaluator's report) still counts.
            code = code or int(getattr(node, 'exit_code', 0) or 0)
        else:
            # Stopped or refused while being built: the half-built node still holds the context
            # through reference cycles (its services and timers point back at it), and the
            # context is only destroyed once nothing uses it.
            gc.collect()
        rclpy.try_shutdown()
        # Finalise the context now: that deletes the DDS participant, which removes its
        # shared-memory segment from /dev/shm. exit_without_teardown skips the garbage
        # collection that would otherwise do it, and the segment would stay behind.
        try:
            rclpy.get_default_context().destroy()
        except Exception:   # already destroyed, or an rclpy without Context.destroy
            pass
        STOP_SIGNALS.restore(previous)
    return code


def refuse_unknown_overrides(node) -> None:
    """ValueError (one line: name, value, the declared names) when the parameter file or the
    command line sets a parameter the node never declared: rclpy would keep it silently, so a
    misspelt override (``sensor_source.bogus=1``) would change nothing without a word."""
    overrides = getattr(node, '_parameter_overrides', {}) or {}
    declared = set(node._parameters) if hasattr(node, '_parameters') else set()
    unknown = sorted(n for n in overrides if n not in declared
                     and not n.startswith(('qos_overrides.', 'use_sim_time')))
    if unknown:
        name = unknown[0]
        value = getattr(overrides[name], 'value', overrides[name])
        allowed = ', '.join(sorted(n for n in declared if not n.startswith('qos_overrides.')))
        raise ValueError(f'unknown parameter {name} (= {value!r}) for node {node.get_name()}; '
                         f'allowed: {allowed}')


def _context_shuts_down(rclpy, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while rclpy.ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class RateMonitor:
    """Message frequency over a sliding window of arrival times, checked like the updater's
    ``FrequencyStatus``: WARN outside ``[min_hz*(1-tol), max_hz*(1+tol)]``, STALE when silent."""

    def __init__(self, min_hz: float = 0.0, max_hz: float = float('inf'), tolerance: float = 0.1,
                 window: int = 20, stale_after_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.min_hz, self.max_hz, self.tolerance = min_hz, max_hz, tolerance
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._times: collections.deque = collections.deque(maxlen=max(2, window))
        self.count = 0

    def tick(self) -> None:
        self._times.append(self._clock())
        self.count += 1

    def rate_hz(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else float('inf')

    def status(self) -> Tuple[int, str, Dict[str, Any]]:
        values = {'count': self.count, 'rate_hz': f'{self.rate_hz():.2f}'}
        if not self._times or self._clock() - self._times[-1] > self.stale_after_s:
            return STALE, 'no messages', values
        rate = self.rate_hz()
        if rate < self.min_hz * (1 - self.tolerance):
            return WARN, 'frequency too low', values
        if rate > self.max_hz * (1 + self.tolerance):
            return WARN, 'frequency too high', values
        return OK, 'frequency ok', values


@dataclass
class _Task:
    name: str
    fn: DiagnosticTask


class Diagnostics:
    """Publishes registered tasks as one ``DiagnosticArray`` on ``/diagnostics`` every period."""

    def __init__(self, node, period_s: float = 1.0, hardware_id: str = ''):
        from diagnostic_msgs.msg import DiagnosticArray

        self._node = node
        self._hardware_id = hardware_id
        self._tasks: list = []
        self._pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._timer = node.create_timer(period_s, self.publish) if period_s > 0 else None

    def add(self, task: str, fn: DiagnosticTask) -> None:
        """Register a task; its status is named ``"<node name>: <task>"``."""
        self._tasks.append(_Task(task, fn))

    def build(self):
        """The current ``DiagnosticArray`` (a failing task reports ERROR, the others still run)."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        arr = DiagnosticArray()
        arr.header.stamp = self._node.get_clock().now().to_msg()
        for task in self._tasks:
            try:
                level, message, values = task.fn()
            except Exception as exc:  # a diagnostic must never take the node down
                level, message, values = ERROR, f'task failed: {exc}', {}
            arr.status.append(DiagnosticStatus(
                level=bytes([int(level)]), name=f'{self._node.get_name()}: {task.name}',
                message=str(message), hardware_id=self._hardware_id,
                values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()]))
        return arr

    def publish(self) -> None:
        self._pub.publish(self.build())
