"""Corruption levels over time, for streams: which corruption each modality suffers at time t.

A :class:`Schedule` holds one *track* per modality; every track answers
``level_at(t) -> (ctype, severity)`` and the schedule answers
``level_at(t) -> {modality: (ctype, severity)}`` for every modality in ``MODALITIES``
(modalities without a track are clean).  A level whose severity is 0 always reads
``('clean', 0.0)``, matching the labels :func:`admn_ros.datasets.corruptions.apply_corruption` writes.

Tracks (times in seconds; a breakpoint belongs to the segment that starts there):

* :class:`ConstantTrack` - one level forever;
* :class:`StepTrack` - ``before`` until ``t``, ``after`` from ``t`` on;
* :class:`RampTrack` - severity linear from ``s0`` to ``s1`` over ``[t0, t1]``, held outside;
* :class:`PeriodicTrack` - square (``low`` for the first ``1 - duty`` of each period, then
  ``high``) or sine (``low`` at the period's start, ``high`` half a period later);
* :class:`ScriptedTrack` - piecewise constant from ``(t, ctype, severity)`` events; clean
  before the first.

:func:`apply_levels` corrupts a raw batch (one frame of a stream) at such levels.

YAML form (``load_schedule`` / ``save_schedule``)::

    tracks:
      rgb:   {kind: ramp, ctype: gaussian_noise, t0: 2.0, t1: 10.0, s0: 0.0, s1: 1.0}
      audio: {kind: periodic, ctype: babble, low: 0.0, high: 0.8, period: 4.0, shape: square}
      depth: {kind: step, t: 5.0, before: [clean, 0.0], after: [holes, 0.6]}
    events:               # alternative to tracks, for modalities without one
      - [0.0, depth, blocked, 0.5]          # or {t: 0.0, modality: depth, ctype: blocked, ...}
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import yaml

from admn_ros.datasets.corruptions import CORRUPTION_TYPES, apply_corruption
from admn_ros.datasets.sample import MODALITIES
from admn_ros.datasets.validate import read_yaml

Level = Tuple[str, float]
CLEAN: Level = ('clean', 0.0)
# A stream-only level: the sensor publishes nothing (the noise injector drops its messages). Any
# modality may fall silent; it has no offline corruption, so apply_levels leaves the modality out.
SILENT = 'silent'


def _check_time(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f'{what} must be a finite number of seconds; got {value!r}')
    return float(value)


def check_level(modality: str, ctype: Any, severity: Any) -> Level:
    """Validate one level against ``CORRUPTION_TYPES``; severity 0 becomes ``('clean', 0.0)``."""
    if modality not in CORRUPTION_TYPES:
        raise ValueError(f'unknown modality {modality!r}; known: {tuple(CORRUPTION_TYPES)}')
    if ctype == SILENT:
        if severity not in (0, 1) or isinstance(severity, bool):
            raise ValueError(f"{modality}: '{SILENT}' takes severity 1 (or 0 = clean); got {severity!r}")
        return (SILENT, 1.0) if severity else CLEAN
    if ctype not in CORRUPTION_TYPES[modality]:
        raise ValueError(f'unknown {modality} corruption {ctype!r}; '
                         f'known: {CORRUPTION_TYPES[modality]}')
    if (isinstance(severity, bool) or not isinstance(severity, numbers.Real)
            or not 0.0 <= severity <= 1.0):
        raise ValueError(f'{modality} severity must be a number in [0, 1]; got {severity!r}')
    if ctype == 'clean' and severity != 0:
        raise ValueError(f"{modality}: type 'clean' needs severity 0; got {severity}")
    return _normalise(ctype, float(severity))


def _normalise(ctype: str, severity: float) -> Level:
    return CLEAN if severity <= 0.0 else (ctype, float(severity))


def _level_from(modality: str, value: Any, what: str) -> Level:
    """A level written as ``[ctype, severity]`` or ``{ctype: .., severity: ..}``."""
    if isinstance(value, Mapping):
        _no_extra_keys(value, {'ctype', 'severity'}, what)
        value = (value.get('ctype'), value.get('severity'))
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f'{what} must be [ctype, severity]; got {value!r}')
    return check_level(modality, value[0], value[1])


def _no_extra_keys(entry: Mapping, allowed: set, what: str) -> None:
    extra = set(entry) - allowed
    if extra:
        raise ValueError(f'{what}: unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}')


# --------------------------------------------------------------------------------------------
# Tracks (one modality each)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConstantTrack:
    """The same level at every time."""

    modality: str
    ctype: str
    severity: float

    def __post_init__(self):
        check_level(self.modality, self.ctype, self.severity)

    def level_at(self, t: float) -> Level:
        return _normalise(self.ctype, self.severity)

    def to_dict(self) -> Dict[str, Any]:
        return {'kind': 'constant', 'ctype': self.ctype, 'severity': self.severity}


@dataclass(frozen=True)
class StepTrack:
    """``before`` for times < ``t``, ``after`` from ``t`` on."""

    modality: str
    t: float
    before: Level
    after: Level

    def __post_init__(self):
        _check_time(self.t, 'step t')
        object.__setattr__(self, 'before', check_level(self.modality, *self.before))
        object.__setattr__(self, 'after', check_level(self.modality, *self.after))

    def level_at(self, t: float) -> Level:
        return self.after if t >= self.t else self.before

    def to_dict(self) -> Dict[str, Any]:
        return {'kind': 'step', 't': self.t, 'before': list(self.before),
                'after': list(self.after)}


@dataclass(frozen=True)
class RampTrack:
    """Severity ``s0`` until ``t0``, linear to ``s1`` at ``t1``, then ``s1``; one type."""

    modality: str
    ctype: str
    t0: float
    t1: float
    s0: float
    s1: float

    def __post_init__(self):
        if _check_time(self.t1, 'ramp t1') <= _check_time(self.t0, 'ramp t0'):
            raise ValueError(f'ramp times must increase: t0={self.t0}, t1={self.t1}')
        if self.ctype == 'clean':
            raise ValueError('a ramp needs a corruption type, not clean')
        check_level(self.modality, self.ctype, self.s0)
        check_level(self.modality, self.ctype, self.s1)

    def level_at(self, t: float) -> Level:
        frac = min(max((t - self.t0) / (self.t1 - self.t0), 0.0), 1.0)
        return _normalise(self.ctype, self.s0 + frac * (self.s1 - self.s0))

    def to_dict(self) -> Dict[str, Any]:
        return {'kind': 'ramp', 'ctype': self.ctype, 't0': self.t0, 't1': self.t1,
                's0': self.s0, 's1': self.s1}


PERIODIC_SHAPES = ('square', 'sine')


@dataclass(frozen=True)
class PeriodicTrack:
    """Alternates between severities ``low`` and ``high`` of one type with period ``period``.

    Square: ``low`` for the first ``1 - duty`` of each period (counted from ``phase``), then
    ``high``.  Sine: ``low`` at the period's start, ``high`` half a period later.
    """

    modality: str
    ctype: str
    low: float
    high: float
    period: float
    shape: str = 'square'
    phase: float = 0.0
    duty: float = 0.5

    def __post_init__(self):
        if _check_time(self.period, 'period') <= 0:
            raise ValueError(f'period must be positive; got {self.period}')
        _check_time(self.phase, 'phase')
        if self.shape not in PERIODIC_SHAPES:
            raise ValueError(f'unknown periodic shape {self.shape!r}; known: {PERIODIC_SHAPES}')
        if not 0.0 < self.duty < 1.0:
            raise ValueError(f'duty must lie in (0, 1); got {self.duty}')
        if self.ctype == 'clean':
            raise ValueError('a periodic track needs a corruption type, not clean')
        check_level(self.modality, self.ctype, self.low)
        check_level(self.modality, self.ctype, self.high)

    def level_at(self, t: float) -> Level:
        cycle = ((t - self.phase) / self.period) % 1.0
        if self.shape == 'square':
            severity = self.high if cycle >= 1.0 - self.duty else self.low
        else:
            rise = 0.5 * (1.0 - math.cos(2.0 * math.pi * cycle))
            severity = self.low + (self.high - self.low) * rise
        return _normalise(self.ctype, severity)

    def to_dict(self) -> Dict[str, Any]:
        return {'kind': 'periodic', 'ctype': self.ctype, 'low': self.low, 'high': self.high,
                'period': self.period, 'shape': self.shape, 'phase': self.phase,
                'duty': self.duty}


@dataclass(frozen=True)
class ScriptedTrack:
    """Piecewise constant: each event ``(t, ctype, severity)`` holds until the next; clean before
    the first.  Times must strictly increase."""

    modality: str
    events: Tuple[Tuple[float, str, float], ...]

    def __post_init__(self):
        checked = []
        for i, event in enumerate(self.events):
            if not isinstance(event, (list, tuple)) or len(event) != 3:
                raise ValueError(f'{self.modality} event {i} must be (t, ctype, severity); '
                                 f'got {event!r}')
            t = _check_time(event[0], f'{self.modality} event {i} time')
            if checked and t <= checked[-1][0]:
                raise ValueError(f'{self.modality} event times must strictly increase; '
                                 f'event {i} at {t} follows {checked[-1][0]}')
            checked.append((t,) + check_level(self.modality, event[1], event[2]))
        object.__setattr__(self, 'events', tuple(checked))

    def level_at(self, t: float) -> Level:
        level = CLEAN
        for when, ctype, severity in self.events:
            if when > t:
                break
            level = (ctype, severity)
        return level

    def to_dict(self) -> Dict[str, Any]:
        return {'kind': 'scripted', 'events': [list(e) for e in self.events]}


Track = Union[ConstantTrack, StepTrack, RampTrack, PeriodicTrack, ScriptedTrack]


# --------------------------------------------------------------------------------------------
# Schedules (all modalities)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """One track per modality; untracked modalities are clean."""

    tracks: Mapping[str, Track] = field(default_factory=dict)

    def __post_init__(self):
        for m, track in self.tracks.items():
            if m != track.modality:
                raise ValueError(f'track for {track.modality!r} filed under {m!r}')
            if m not in MODALITIES:
                raise ValueError(f'unknown modality {m!r}; known: {MODALITIES}')
        object.__setattr__(self, 'tracks', dict(self.tracks))

    def level_at(self, t: float) -> Dict[str, Level]:
        """``{modality: (ctype, severity)}`` at time ``t`` (seconds) for every modality."""
        return {m: self.tracks[m].level_at(t) if m in self.tracks else CLEAN for m in MODALITIES}

    def breakpoints(self) -> List[float]:
        """Times at which some level jumps or a ramp starts or ends (periodic tracks excluded)."""
        times = set()
        for track in self.tracks.values():
            if isinstance(track, StepTrack):
                times.add(track.t)
            elif isinstance(track, RampTrack):
                times.update((track.t0, track.t1))
            elif isinstance(track, ScriptedTrack):
                times.update(e[0] for e in track.events)
        return sorted(times)

    @classmethod
    def constant(cls, levels: Mapping[str, Level]) -> 'Schedule':
        """Fixed levels, e.g. ``{'rgb': ('low_light', 0.7)}``."""
        return cls({m: ConstantTrack(m, c, s) for m, (c, s) in levels.items()})

    @classmethod
    def scripted(cls, events: Sequence[Tuple[float, str, str, float]]) -> 'Schedule':
        """From ``(t, modality, ctype, severity)`` events sorted by time (ties across modalities
        allowed)."""
        return cls(_tracks_from_events(events))

    def to_dict(self) -> Dict[str, Any]:
        return {'tracks': {m: self.tracks[m].to_dict() for m in MODALITIES if m in self.tracks}}

    @classmethod
    def from_dict(cls, data: Any) -> 'Schedule':
        """Parse the YAML form (see the module docstring); raises ValueError on bad entries."""
        if not isinstance(data, Mapping):
            raise ValueError(f'a schedule must be a mapping with tracks and/or events; '
                             f'got {type(data).__name__}')
        _no_extra_keys(data, {'tracks', 'events'}, 'schedule')
        tracks_data = data.get('tracks') or {}
        if not isinstance(tracks_data, Mapping):
            raise ValueError('schedule tracks must map modality -> track')
        tracks = {m: _track_from_dict(m, entry) for m, entry in tracks_data.items()}
        for m, track in _tracks_from_events(data.get('events') or []).items():
            if m in tracks:
                raise ValueError(f'{m!r} has both a track and scripted events; pick one')
            tracks[m] = track
        return cls(tracks)


_TRACK_KEYS = {
    'constant': (ConstantTrack, {'ctype', 'severity'}, set()),
    'step': (StepTrack, {'t', 'before', 'after'}, set()),
    'ramp': (RampTrack, {'ctype', 't0', 't1', 's0', 's1'}, set()),
    'periodic': (PeriodicTrack, {'ctype', 'low', 'high', 'period'}, {'shape', 'phase', 'duty'}),
    'scripted': (ScriptedTrack, {'events'}, set()),
}


def _track_from_dict(modality: Any, entry: Any) -> Track:
    if modality not in MODALITIES:
        raise ValueError(f'unknown modality {modality!r}; known: {MODALITIES}')
    if not isinstance(entry, Mapping) or entry.get('kind') not in _TRACK_KEYS:
        raise ValueError(f'{modality} track must be a mapping with kind in '
                         f'{tuple(_TRACK_KEYS)}; got {entry!r}')
    cls, required, optional = _TRACK_KEYS[entry['kind']]
    params = {k: v for k, v in entry.items() if k != 'kind'}
    _no_extra_keys(params, required | optional, f'{modality} {entry["kind"]} track')
    missing = required - set(params)
    if missing:
        raise ValueError(f'{modality} {entry["kind"]} track lacks {sorted(missing)}')
    if cls is StepTrack:
        params['before'] = _level_from(modality, params['before'], f'{modality} step before')
        params['after'] = _level_from(modality, params['after'], f'{modality} step after')
    if cls is ScriptedTrack:
        if not isinstance(params['events'], list):
            raise ValueError(f'{modality} scripted events must be a list')
        params['events'] = tuple(tuple(e) if isinstance(e, list) else e for e in params['events'])
    return cls(modality=modality, **params)


def _tracks_from_events(events: Any) -> Dict[str, ScriptedTrack]:
    """Group ``(t, modality, ctype, severity)`` events (lists or mappings) into tracks."""
    if not isinstance(events, (list, tuple)):
        raise ValueError(f'events must be a list; got {type(events).__name__}')
    per_modality: Dict[str, List[Tuple[float, str, float]]] = {}
    last_t = -math.inf
    for i, event in enumerate(events):
        if isinstance(event, Mapping):
            _no_extra_keys(event, {'t', 'modality', 'ctype', 'severity'}, f'event {i}')
            event = (event.get('t'), event.get('modality'), event.get('ctype'),
                     event.get('severity'))
        if not isinstance(event, (list, tuple)) or len(event) != 4:
            raise ValueError(f'event {i} must be [t, modality, ctype, severity]; got {event!r}')
        t, modality, ctype, severity = event
        t = _check_time(t, f'event {i} time')
        if t < last_t:
            raise ValueError(f'event times must not decrease; event {i} at {t} follows {last_t}')
        last_t = t
        if modality not in MODALITIES:
            raise ValueError(f'event {i}: unknown modality {modality!r}; known: {MODALITIES}')
        per_modality.setdefault(modality, []).append((t, ctype, severity))
    return {m: ScriptedTrack(m, tuple(ev)) for m, ev in per_modality.items()}


def apply_levels(batch, levels: Mapping[str, Level], rng, *, babble_bank=None):
    """Corrupt every present modality of a raw batch at ``levels`` (e.g. ``level_at(t)``).

    Labels are written for every present modality (clean ones included); levels for absent
    modalities are ignored, since a schedule always names all of them. A ``silent`` modality is
    left out of the returned batch, as a sensor that published nothing.
    """
    out = dict(batch)
    for m in MODALITIES:
        if m in batch:
            ctype, severity = levels.get(m, CLEAN)
            if ctype == SILENT:
                out.pop(m)
                continue
            out = apply_corruption(out, m, ctype, severity, rng, babble_bank=babble_bank)
    return out


def load_schedule(path) -> Schedule:
    """Read a schedule from YAML (safe loader); raises ValueError on bad entries."""
    data = read_yaml(path, mapping=False)   # one line for a syntax error or a !!python tag
    try:
        return Schedule.from_dict(data)
    except ValueError as err:
        raise ValueError(f'{path}: {err}') from None


def save_schedule(schedule: Schedule, path) -> None:
    """Write a schedule as YAML that :func:`load_schedule` reads back to an equal schedule."""
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(schedule.to_dict(), f, sort_keys=False)
