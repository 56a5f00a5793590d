"""A scripted scenario for the demo graph: phases in source time, each changing the budget, a
sensor's corruption, or whether a sensor publishes at all.

The YAML form (``config/scenarios/demo.yaml`` is the one ``make demo`` plays)::

    rate_hz: 5.0            # sensor frames per second
    duration_s: 60.0        # the source plays rate_hz * duration_s samples, then the graph ends
    dataset: synthetic
    phases:
      - {at: 0, name: clean at full budget, budget: 1.0}
      - {at: 11, name: camera dark, rgb: [low_light, 1.0]}
      - {at: 19, name: camera back, rgb: clean, depth: silent}

A phase lists only what changes when it starts; the rest carries over (the first phase starts
clean, at budget 1 unless it says otherwise). A level is ``clean``, ``silent`` (the sensor stops
publishing) or ``[corruption type, severity]``. The scenario compiles into the two files the
graph's nodes already read: a corruption schedule for ``noise_injector`` and a budget schedule for
``budget_manager`` (on the stream clock), so there is one way to script each of them.

No rclpy here: the demo and the tests use it directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import yaml

from admn_ros.fusion.validate import safe_load
from admn_ros.datasets.sample import MODALITIES
from admn_ros.datasets.schedules import CLEAN, SILENT, Level, check_level

PHASE_KEYS = {'at', 'name', 'budget', *MODALITIES}
SCENARIO_KEYS = {'rate_hz', 'duration_s', 'dataset', 'phases'}


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    budget: float
    levels: Mapping[str, Level]          # every modality; CLEAN when untouched

    def corrupted(self) -> Dict[str, Level]:
        return {m: lv for m, lv in self.levels.items() if lv != CLEAN}


@dataclass(frozen=True)
class Scenario:
    phases: Tuple[Phase, ...]
    rate_hz: float = 5.0
    duration_s: float = 60.0
    dataset: str = 'synthetic'

    @property
    def samples(self) -> int:
        return int(round(self.rate_hz * self.duration_s))

    def phase_index(self, t_s: float) -> int:
        """The phase in force at source time ``t_s`` (the first before it starts, the last after)."""
        index = 0
        for i, phase in enumerate(self.phases):
            if t_s >= phase.start_s:
                index = i
        return index

    def scaled(self, duration_s: float) -> 'Scenario':
        """The same script played in ``duration_s`` seconds (every phase time scaled alike)."""
        if not duration_s > 0:
            raise ValueError(f'duration must be > 0 seconds, got {duration_s}')
        k = duration_s / self.duration_s
        phases = tuple(replace(p, start_s=p.start_s * k, end_s=p.end_s * k) for p in self.phases)
        return replace(self, phases=phases, duration_s=float(duration_s))

    def corruption_schedule(self) -> Dict[str, Any]:
        """The ``noise_injector`` schedule (events form) that plays the corruption of each phase."""
        events, previous = [], {m: CLEAN for m in MODALITIES}
        for phase in self.phases:
            for m in MODALITIES:
                level = phase.levels[m]
                if level != previous[m] or phase is self.phases[0]:
                    events.append([round(phase.start_s, 6), m, level[0], level[1]])
                previous[m] = level
        return {'events': events}

    def budget_schedule(self) -> List[List[float]]:
        """``budget_manager``'s ``[t, budget]`` list (stream clock): one entry per change."""
        entries: List[List[float]] = []
        for phase in self.phases:
            if not entries or phase.budget != entries[-1][1]:
                entries.append([round(phase.start_s, 6), phase.budget])
        return entries

    def write_node_files(self, folder) -> Tuple[Path, Path]:
        """Write the corruption and budget schedules into ``folder``; returns both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        noise, budget = folder / 'scenario_corruption.yaml', folder / 'scenario_budget.yaml'
        noise.write_text(yaml.safe_dump(self.corruption_schedule(), sort_keys=False), encoding='utf-8')
        budget.write_text(yaml.safe_dump(self.budget_schedule()), encoding='utf-8')
        return noise, budget


def _number(value: Any, what: str, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f'{what} must be a number, got {value!r}')
    if value > high or value < low or (low_open and value == low):
        bound = f'({low:g}, {high:g}]' if low_open else f'[{low:g}, {high:g}]'
        raise ValueError(f'{what} must lie in {bound}, got {value!r}')
    return float(value)


def _level(modality: str, value: Any, what: str) -> Level:
    if value == 'clean':
        return CLEAN
    if value == SILENT:
        return (SILENT, 1.0)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{what} must be clean, silent or [type, severity], got {value!r}")
    return check_level(modality, value[0], value[1])


def parse_scenario(data: Any) -> Scenario:
    """Validate YAML data into a :class:`Scenario`; a ValueError names the offending entry."""
    if not isinstance(data, Mapping):
        raise ValueError(f'a scenario is a YAML map with keys {sorted(SCENARIO_KEYS)}')
    unknown = set(data) - SCENARIO_KEYS
    if unknown:
        raise ValueError(f'unknown scenario keys {sorted(unknown)}; allowed: {sorted(SCENARIO_KEYS)}')
    rate = _number(data.get('rate_hz', 5.0), 'rate_hz', 0.0, 1000.0, low_open=True)
    duration = _number(data.get('duration_s', 60.0), 'duration_s', 0.0, 86400.0, low_open=True)
    dataset = data.get('dataset', 'synthetic')
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f'dataset must be a dataset name, got {dataset!r}')
    items = data.get('phases')
    if not isinstance(items, list) or not items:
        raise ValueError('a scenario needs a non-empty list of phases')
    starts, names, budgets, levels = [], [], [], []
    budget, current = 1.0, {m: CLEAN for m in MODALITIES}
    for i, item in enumerate(items):
        what = f'phase {i + 1}'
        if not isinstance(item, Mapping):
            raise ValueError(f'{what} must be a map, got {item!r}')
        unknown = set(item) - PHASE_KEYS
        if unknown:
            raise ValueError(f'{what}: unknown keys {sorted(unknown)}; allowed: {sorted(PHASE_KEYS)}')
        start = _number(item.get('at'), f'{what} at', 0.0, duration)
        if i == 0 and start != 0:
            raise ValueError(f'the first phase must start at 0, got {start:g}')
        if starts and start <= starts[-1]:
            raise ValueError(f'{what} starts at {start:g}, not after the previous phase ({starts[-1]:g})')
        if 'budget' in item:
            budget = _number(item['budget'], f'{what} budget', 0.0, 1.0, low_open=True)
        current = dict(current)
        for m in MODALITIES:
            if m in item:
                current[m] = _level(m, item[m], f'{what} {m}')
        name = item.get('name') or f'phase {i + 1}'
        starts.append(start)
        names.append(str(name))
        budgets.append(budget)
        levels.append(current)
    if all(lv[m] == (SILENT, 1.0) for lv in levels[:1] for m in MODALITIES):
        raise ValueError('the first phase silences every sensor: nothing would be fused')
    ends = starts[1:] + [duration]
    phases = tuple(Phase(n, s, e, b, lv) for n, s, e, b, lv in zip(names, starts, ends, budgets, levels))
    return Scenario(phases, rate, duration, dataset)


def load_scenario(path) -> Scenario:
    try:
        with open(path, encoding='utf-8') as f:
            data = safe_load(f)
    except yaml.YAMLError as exc:
        raise ValueError(f'{path}: not valid YAML: {str(exc).splitlines()[0]}') from None
    try:
        return parse_scenario(data)
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}') from None
