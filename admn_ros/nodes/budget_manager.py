"""budget_manager: sets admn_fusion's compute budget over time, to emulate or follow multi-tenancy.

Publishes ``std_msgs/Float32`` on ``budget`` (reliable, TRANSIENT_LOCAL, depth 1, so a fusion node
that starts later still gets the current value) whenever the budget changes. Three modes
(``mode``; ``auto`` = ``schedule`` when ``schedule_file`` is set, else ``load``):

* ``schedule``: a YAML list of ``[t, budget]`` pairs (or ``{t: .., budget: ..}`` maps), ``t`` in
  seconds since the node started (node clock, so ``use_sim_time`` replays follow bag time; or,
  with ``clock: stream``, seconds of source time since the first ``ground_truth/label`` stamp, so
  the budget follows the data however late the source starts) and strictly increasing,
  ``budget`` in [0.01, 1] (``BUDGET_RANGE``). The budget at time t is that of the last entry with
  ``t_i <= t``; nothing is published before the first entry. ``loop_period_s`` > 0 repeats the
  schedule with that period (it must exceed the last ``t``).
* ``load``: every ``period_s`` the machine's CPU utilisation (psutil, else ``/proc/stat``) and,
  when ``use_gpu`` and torch sees CUDA, the GPU's (``torch.cuda.utilization``, else the used share
  of its memory) are measured; the busier of the two maps linearly to a budget, ``max_budget``
  when idle down to ``min_budget`` when saturated, smoothed by an exponential moving average
  (``smoothing`` = weight of the newest sample). A change smaller than ``min_change`` is not
  published, which keeps the fusion node from chasing noise (its own load is part of what is
  measured, so some hysteresis is needed).
* ``deadline``: keeps admn_fusion's latency (``latency_ms`` on ``admn/inference``, joined by stamp
  with the budget each frame ran under from ``admn/allocation``) so that its ``deadline_percentile``
  stays under ``deadline_ms``: every frame updates a per-budget latency model learned online and the
  largest budget in [``min_budget``, ``max_budget``] (on a grid of ``deadline_step``) predicted to
  meet it is published, with hysteresis (:mod:`admn_ros.quality_estimators.deadline`). It starts at
  ``max_budget``. admn_fusion can run the same rule in-process instead (its ``deadline_ms``).
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Callable, NoReturn, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Float32

from admn_ros import wire
from admn_ros.fusion.validate import read_yaml
from admn_ros.node_utils import OK, WARN, Diagnostics, declare, node_main, param, set_result
from admn_ros.quality_estimators.budget import BUDGET_RANGE, budget_problem
from admn_ros.quality_estimators.deadline import DeadlineConfig, DeadlineController
from admn_ros.wire import BUDGET, budget_qos

NODE_NAME = 'budget_manager'
MODES = ('auto', 'schedule', 'load', 'deadline')
PENDING_FRAMES = 100   # frames waiting for their second message (inference or allocation)
CLOCKS = ('node', 'stream')


# --------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class BudgetSchedule:
    """A step function of time: ``entries`` are (t seconds, budget) with increasing t."""

    entries: Tuple[Tuple[float, float], ...]
    loop_period_s: float = 0.0

    def __post_init__(self):
        if not self.entries:
            raise ValueError('a budget schedule needs at least one [t, budget] entry')
        times = [t for t, _ in self.entries]
        for t, b in self.entries:
            if not math.isfinite(t) or t < 0:
                raise ValueError(f'schedule time must be a finite number >= 0, got {t!r}')
            if budget_problem(b):
                raise ValueError(f'schedule entry at t={t}: {budget_problem(b)}')
        if any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError(f'schedule times must increase strictly, got {times}')
        if self.loop_period_s and self.loop_period_s <= times[-1]:
            raise ValueError(f'loop_period_s {self.loop_period_s} must exceed the last time '
                             f'{times[-1]}')

    def value_at(self, t: float) -> Optional[float]:
        """Budget in force at ``t`` seconds (None before the first entry)."""
        if self.loop_period_s > 0 and t >= 0:
            t = math.fmod(t, self.loop_period_s)
        current = None
        for start, budget in self.entries:
            if start > t:
                break
            current = budget
        return current


def parse_schedule(data, loop_period_s: float = 0.0) -> BudgetSchedule:
    """YAML data (a list of ``[t, budget]`` or ``{t, budget}``) -> :class:`BudgetSchedule`."""
    if not isinstance(data, list):
        raise ValueError('a budget schedule is a YAML list of [t, budget] pairs, got '
                         f'{type(data).__name__}')
    entries = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            if set(item) != {'t', 'budget'}:
                raise ValueError(f'schedule entry {i} must have exactly the keys t and budget, '
                                 f'got {sorted(item)}')
            item = (item['t'], item['budget'])
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f'schedule entry {i} must be [t, budget], got {item!r}')
        try:
            entries.append((float(item[0]), float(item[1])))
        except (TypeError, ValueError):
            raise ValueError(f'schedule entry {i} must hold two numbers, got {item!r}') from None
    return BudgetSchedule(tuple(entries), float(loop_period_s))


def load_schedule(path, loop_period_s: float = 0.0) -> BudgetSchedule:
    data = read_yaml(path, mapping=False)   # safe loading, one-line errors
    try:
        return parse_schedule(data, loop_period_s)
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}') from None


def budget_range_problem(min_budget: float, max_budget: float) -> Optional[str]:
    """Why ``min_budget`` / ``max_budget`` cannot both hold (one line), or None."""
    if max_budget < min_budget:
        return (f'max_budget = {max_budget:g}: allowed: >= min_budget ({min_budget:g}); the load '
                'mode maps full load to min_budget and idle to max_budget')
    return None


# --------------------------------------------------------------------------- load
class CpuLoad:
    """System-wide CPU utilisation in [0, 1] since the previous call."""

    def __init__(self):
        try:
            import psutil
            self._psutil = psutil
            psutil.cpu_percent(interval=None)  # the first call only sets the reference
        except ImportError:
            self._psutil = None
            self._last = self._proc_stat()

    @staticmethod
    def _proc_stat() -> Tuple[int, int]:
        with open('/proc/stat', encoding='ascii') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    def __call__(self) -> float:
        if self._psutil is not None:
            return self._psutil.cpu_percent(interval=None) / 100.0
        total, idle = self._proc_stat()
        d_total, d_idle = total - self._last[0], idle - self._last[1]
        self._last = (total, idle)
        return 0.0 if d_total <= 0 else min(1.0, max(0.0, 1.0 - d_idle / d_total))


def gpu_load_reader() -> Optional[Callable[[], float]]:
    """A reader of GPU utilisation in [0, 1] when torch sees CUDA, else None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None

    def read() -> float:
        try:
            return float(torch.cuda.utilization()) / 100.0   # needs pynvml
        except Exception:  # no NVML: fall back to the share of memory in use
            free, total = torch.cuda.mem_get_info()
            return 1.0 - free / total
    return read


@dataclass
class LoadFollower:
    """Maps a load in [0, 1] to a smoothed budget in [min_budget, max_budget]."""

    min_budget: float = 0.25
    max_budget: float = 1.0
    smoothing: float = 0.5
    value: Optional[float] = None

    def __post_init__(self):
        if not BUDGET_RANGE[0] <= self.min_budget <= self.max_budget <= BUDGET_RANGE[1]:
            raise ValueError(f'need {BUDGET_RANGE[0]:g} <= min_budget <= max_budget <= '
                             f'{BUDGET_RANGE[1]:g}, got {self.min_budget}, {self.max_budget}')
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f'smoothing must lie in (0, 1], got {self.smoothing}')

    def update(self, load: float) -> float:
        load = min(1.0, max(0.0, float(load)))
        target = self.max_budget - (self.max_budget - self.min_budget) * load
        self.value = target if self.value is None else (
            self.smoothing * target + (1.0 - self.smoothing) * self.value)
        return self.value


# --------------------------------------------------------------------------- node
class BudgetManager(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        mode = declare(self, 'mode', 'auto', 'schedule, load, deadline, or auto (schedule when a '
                       'file is given, else load)', read_only=True, choices=MODES)
        path = declare(self, 'schedule_file', '', "YAML list of [t, budget]; '' = none",
                       read_only=True)
        clock = declare(self, 'clock', 'node', 'schedule time: node (seconds since start) or '
                        'stream (source seconds since the first ground_truth/label stamp)',
                        read_only=True, choices=CLOCKS)
        loop = declare(self, 'loop_period_s', 0.0, 'repeat the schedule with this period '
                       '(0 = once)', read_only=True, value_range=(0.0, 1e9))
        declare(self, 'period_s', 1.0, 'load mode: seconds between measurements',
                read_only=True, value_range=(0.05, 3600.0))
        declare(self, 'min_budget', 0.25, 'load mode: budget at full load; deadline mode: the '
                'lowest budget it may choose', value_range=BUDGET_RANGE)
        declare(self, 'max_budget', 1.0, 'load mode: budget when idle; deadline mode: the '
                'highest budget it may choose', value_range=BUDGET_RANGE)
        declare(self, 'smoothing', 0.5, 'load mode: weight of the newest measurement',
                value_range=(0.01, 1.0))
        declare(self, 'min_change', 0.05, 'load mode: smallest budget change worth publishing',
                value_range=(0.0, 1.0))
        use_gpu = declare(self, 'use_gpu', True, 'load mode: include GPU utilisation (CUDA)',
                          read_only=True)
        d = DeadlineConfig()
        declare(self, 'deadline_ms', d.deadline_ms, 'deadline mode: latency target (ms)',
                read_only=True, value_range=(0.1, 1e6))
        declare(self, 'deadline_percentile', d.percentile, 'deadline mode: percentile of frame '
                'latency kept under deadline_ms', read_only=True, value_range=(50.0, 99.9))
        declare(self, 'deadline_window', d.window, 'deadline mode: frames the percentile is '
                'taken over', read_only=True, value_range=(2, 100000))
        declare(self, 'deadline_hold_frames', d.hold_frames, 'deadline mode: frames in a row a '
                'larger budget must be predicted to meet the deadline before a step up',
                read_only=True, value_range=(0, 100000))
        declare(self, 'deadline_step', d.step, 'deadline mode: budget grid step',
                read_only=True, value_range=(0.01, 1.0))
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        reason = budget_range_problem(param(self, 'min_budget'), param(self, 'max_budget'))
        if reason:
            raise ValueError(reason)
        self.add_on_set_parameters_callback(self._check_range)
        if mode == 'auto':
            mode = 'schedule' if path else 'load'
        if mode == 'schedule' and not path:
            raise ValueError('mode schedule needs schedule_file')
        self.mode = mode
        self.schedule = load_schedule(path, loop) if mode == 'schedule' else None
        self.pub = self.create_publisher(Float32, BUDGET, budget_qos())
        # (seconds since start, budget) of the latest changes: bounded, the node runs for days
        self.published: collections.deque = collections.deque(maxlen=1000)
        self.changes = 0
        self.current: Optional[float] = None
        self.cpu = self.gpu = None
        self.last_load: Tuple[float, float] = (0.0, 0.0)
        self._t0: Optional[int] = None
        self.stream_first_ns: Optional[int] = None
        self.stream_last_ns: Optional[int] = None
        if mode == 'schedule' and clock == 'stream':
            self.create_subscription(DiagnosticArray, wire.LABEL, self._on_label, 10)
        self.clock = clock
        self.deadline: Optional[DeadlineController] = None
        self._frames: collections.OrderedDict = collections.OrderedDict()  # stamp -> halves
        if mode == 'schedule':
            self.timer = self.create_timer(0.02, self._tick_schedule)
        elif mode == 'deadline':
            self.deadline = DeadlineController(self._deadline_config())
            self.create_subscription(wire.output_class(wire.INFERENCE), wire.INFERENCE,
                                     lambda msg: self._on_frame(msg, 'latency'), 10)
            self.create_subscription(wire.output_class(wire.ALLOCATION), wire.ALLOCATION,
                                     lambda msg: self._on_frame(msg, 'budget'), 10)
            self.publish(self.deadline.budget)
        else:
            self.cpu = CpuLoad()
            self.gpu = gpu_load_reader() if use_gpu else None
            self.follower = LoadFollower(param(self, 'min_budget'), param(self, 'max_budget'),
                                         param(self, 'smoothing'))
            self.timer = self.create_timer(float(param(self, 'period_s')), self._tick_load)
        self.diagnostics = Diagnostics(self)
        self.diagnostics.add('budget', self._status)
        self.get_logger().info(f'mode {mode}' + (f' from {path}' if self.schedule else ''))

    def _check_range(self, params):
        new = {p.name: p.value for p in params}
        reason = budget_range_problem(new.get('min_budget', param(self, 'min_budget')),
                                      new.get('max_budget', param(self, 'max_budget')))
        return set_result(not reason, reason or '')

    def elapsed_s(self) -> float:
        """Seconds on the node clock since the first tick (sim time under use_sim_time)."""
        now = self.get_clock().now().nanoseconds
        if self._t0 is None:
            self._t0 = now
        return (now - self._t0) / 1e9

    def schedule_time_s(self) -> float:
        """Where the schedule stands: node seconds, or source seconds (0 until data arrives)."""
        if self.clock == 'node':
            return self.elapsed_s()
        if self.stream_first_ns is None:
            return 0.0
        return (self.stream_last_ns - self.stream_first_ns) / 1e9

    def _on_label(self, msg) -> None:
        stamp = wire.stamp_to_ns(msg.header.stamp)
        if self.stream_first_ns is None:
            self.stream_first_ns = stamp
        self.stream_last_ns = max(stamp, self.stream_last_ns or stamp)
        self._tick_schedule()   # at once: the next frames already run under the new budget

    def publish(self, budget: float) -> None:
        self.current = float(budget)
        self.published.append((self.elapsed_s(), self.current))
        self.changes += 1
        self.pub.publish(Float32(data=self.current))

    def _tick_schedule(self) -> None:
        value = self.schedule.value_at(self.schedule_time_s())
        if value is not None and value != self.current:
            self.publish(value)

    def _tick_load(self) -> None:
        cpu = self.cpu()
        gpu = self.gpu() if self.gpu is not None else 0.0
        self.last_load = (cpu, gpu)
        # Parameters may have changed since the last tick.
        f = self.follower
        f.min_budget = min(param(self, 'min_budget'), param(self, 'max_budget'))
        f.max_budget, f.smoothing = param(self, 'max_budget'), param(self, 'smoothing')
        value = round(f.update(max(cpu, gpu)), 3)
        if self.current is None or abs(value - self.current) >= param(self, 'min_change'):
            self.publish(value)

    def _deadline_config(self) -> DeadlineConfig:
        return DeadlineConfig(
            deadline_ms=float(param(self, 'deadline_ms')),
            percentile=float(param(self, 'deadline_percentile')),
            min_budget=float(param(self, 'min_budget')), max_budget=float(param(self, 'max_budget')),
            step=float(param(self, 'deadline_step')), window=int(param(self, 'deadline_window')),
            min_samples=min(DeadlineConfig.min_samples, int(param(self, 'deadline_window'))),
            hold_frames=int(param(self, 'deadline_hold_frames')))

    def _on_frame(self, msg, half: str) -> None:
        """Deadline mode: one half of a frame (its latency or its budget); both -> the controller."""
        try:
            if half == 'latency':
                info = wire.read_inference(msg)
                stamp, value = info['stamp_ns'], info['latency_ms']
            else:
                info = wire.read_allocation(msg)
                stamp, value = info['stamp_ns'], info['fraction']
        except (KeyError, ValueError) as exc:
            self.deadline.rejected += 1
            self.get_logger().warning(f'ignoring a {half} message: {exc}',
                                      throttle_duration_sec=5.0)
            return
        frame = self._frames.setdefault(stamp, {})
        frame[half] = value
        if len(frame) < 2:
            while len(self._frames) > PENDING_FRAMES:
                self._frames.popitem(last=False)
            return
        del self._frames[stamp]
        ctrl = self.deadline
        if (ctrl.cfg.min_budget, ctrl.cfg.max_budget) != (param(self, 'min_budget'),
                                                          param(self, 'max_budget')):
            # The bounds changed at run time: same rule, new bounds, from the current budget.
            self.deadline = ctrl = DeadlineController(self._deadline_config(), initial=ctrl.budget)
        value = ctrl.update(frame['budget'], frame['latency'])
        if value != self.current:
            self.publish(value)

    def _status(self):
        values = {'mode': self.mode, 'budget': '' if self.current is None else self.current,
                  'changes': self.changes}
        if self.mode == 'load':
            values.update(cpu_load=f'{self.last_load[0]:.2f}', gpu_load=f'{self.last_load[1]:.2f}')
        if self.deadline is not None:
            values.update({k: v for k, v in self.deadline.state().items() if k != 'budget'})
        if self.current is None:
            return WARN, 'no budget published yet', values
        return OK, f'budget {self.current:g}', values


def main(args=None) -> NoReturn:
    node_main(BudgetManager, args)


if __name__ == '__main__':
    main()
