"""budget_manager: sets admn_fusion's compute budget over time, to emulate or follow multi-tenancy.

Publishes ``std_msgs/Float32`` on ``budget`` (reliable, TRANSIENT_LOCAL, depth 1, so a fusion node
that starts later still gets the current value) whenever the budget changes. Two modes
(``mode``; ``auto`` = ``schedule`` when ``schedule_file`` is set, else ``load``):

* ``schedule``: a YAML list of ``[t, budget]`` pairs (or ``{t: .., budget: ..}`` maps), ``t`` in
  seconds since the node started (node clock, so ``use_sim_time`` replays follow bag time; or,
  with ``clock: stream``, seconds of source time since the first ``ground_truth/label`` stamp, so
  the budget follows the data however late the source starts) and strictly increasing,
  ``budget`` in (0, 1]. The budget at time t is that of the last entry with
  ``t_i <= t``; nothing is published before the first entry. ``loop_period_s`` > 0 repeats the
  schedule with that period (it must exceed the last ``t``).
* ``load``: every ``period_s`` the machine's CPU utilisation (psutil, else ``/proc/stat``) and,
  when ``use_gpu`` and torch sees CUDA, the GPU's (``torch.cuda.utilization``, else the used share
  of its memory) are measured; the busier of the two maps linearly to a budget, ``max_budget``
  when idle down to ``min_budget`` when saturated, smoothed by an exponential moving average
  (``smoothing`` = weight of the newest sample). A change smaller than ``min_change`` is not
  published, which keeps the fusion node from chasing noise (its own load is part of what is
  measured, so some hysteresis is needed).
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Float32

from admn_ros import messages as M
from admn_ros.node_utils import OK, WARN, Diagnostics, declare, exit_without_teardown, param, run_node
from admn_ros.fusion_contract import BUDGET, budget_qos

NODE_NAME = 'budget_manager'
MODES = ('auto', 'schedule', 'load')
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
            if not math.isfinite(b) or not 0.0 < b <= 1.0:
                raise ValueError(f'schedule budget must lie in (0, 1], got {b!r} at t={t}')
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
    with open(path, encoding='utf-8') as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f'{path}: not valid YAML: {exc}') from None
    try:
        return parse_schedule(data, loop_period_s)
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}') from None


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
        if not 0.0 < self.min_budget <= self.max_budget <= 1.0:
            raise ValueError(f'need 0 < min_budget <= max_budget <= 1, got {self.min_budget}, '
                             f'{self.max_budget}')
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
        mode = declare(self, 'mode', 'auto', 'schedule, load, or auto (schedule when a file is '
                       'given)', read_only=True, choices=MODES)
        path = declare(self, 'schedule_file', '', "YAML list of [t, budget]; '' = none",
                       read_only=True)
        clock = declare(self, 'clock', 'node', 'schedule time: node (seconds since start) or '
                        'stream (source seconds since the first ground_truth/label stamp)',
                        read_only=True, choices=CLOCKS)
        loop = declare(self, 'loop_period_s', 0.0, 'repeat the schedule with this period '
                       '(0 = once)', read_only=True, value_range=(0.0, 1e9))
        declare(self, 'period_s', 1.0, 'load mode: seconds between measurements',
                read_only=True, value_range=(0.05, 3600.0))
        declare(self, 'min_budget', 0.25, 'load mode: budget at full load',
                value_range=(0.01, 1.0))
        declare(self, 'max_budget', 1.0, 'load mode: budget when idle', value_range=(0.01, 1.0))
        declare(self, 'smoothing', 0.5, 'load mode: weight of the newest measurement',
                value_range=(0.01, 1.0))
        declare(self, 'min_change', 0.05, 'load mode: smallest budget change worth publishing',
                value_range=(0.0, 1.0))
        use_gpu = declare(self, 'use_gpu', True, 'load mode: include GPU utilisation (CUDA)',
                          read_only=True)
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
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
            self.create_subscription(DiagnosticArray, M.LABEL, self._on_label, 10)
        self.clock = clock
        if mode == 'schedule':
            self.timer = self.create_timer(0.02, self._tick_schedule)
        else:
            self.cpu = CpuLoad()
            self.gpu = gpu_load_reader() if use_gpu else None
            self.follower = LoadFollower(param(self, 'min_budget'), param(self, 'max_budget'),
                                         param(self, 'smoothing'))
            self.timer = self.create_timer(float(param(self, 'period_s')), self._tick_load)
        self.diagnostics = Diagnostics(self)
        self.diagnostics.add('budget', self._status)
        self.get_logger().info(f'mode {mode}' + (f' from {path}' if self.schedule else ''))

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
        stamp = M.stamp_to_ns(msg.header.stamp)
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

    def _status(self):
        values = {'mode': self.mode, 'budget': '' if self.current is None else self.current,
                  'changes': self.changes}
        if self.mode == 'load':
            values.update(cpu_load=f'{self.last_load[0]:.2f}', gpu_load=f'{self.last_load[1]:.2f}')
        if self.current is None:
            return WARN, 'no budget published yet', values
        return OK, f'budget {self.current:g}', values


def main(args=None) -> int:
    return run_node(BudgetManager, args)


if __name__ == '__main__':   # see exit_without_teardown (torch may be loaded for the GPU)
    exit_without_teardown(main())
