"""Test conditions: which modalities are degraded, how and how much, for evaluation by condition.

A :class:`Condition` is either *synthetic*, whose corruptions :func:`apply_condition` applies to
every sample of the clean test split, or *recorded*, which selects the samples whose own condition
tags (``severity_<m>`` / ``ctype_<m>``, e.g. from a folder dataset's ``meta.yaml``) match it and
leaves them as they are.

Presets (:func:`preset_conditions`, :func:`recorded_conditions`); each includes ``clean``:

============  ===================================================================================
``single``    every corruption type of every modality of the dataset alone, at severity 1.0
              and 0.5 (``rgb:low_light:1.0``, ...)
``pairs``     two modalities degraded at once at severity 1.0: for each pair of the dataset's
              modalities, the 2 x 2 combinations of one signal-loss and one noise type per
              modality (:data:`PAIR_TYPES`); every type x every type would be 36-42 conditions
              per pair, most of them repeating what ``single`` shows
``recorded``  no synthetic corruption: one condition per combination of recorded tags found in
              the test split (``clean`` for untagged samples)
============  ===================================================================================

A YAML file (:func:`load_conditions`) lists conditions of its own::

    - {name: dark, corrupted: [{modality: rgb, type: low_light, severity: 1.0}]}
    - {name: clean, corrupted: []}

The sets are built in memory, not cached on disk: one set per condition is as large as the test
split (about 100 MB for 1000 synthetic samples) and takes 0.3 s on average (1.6 s at most, pink
noise) to make on one core, about what reading it back would cost.
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from admn_ros.datasets.validate import safe_load
from admn_ros.datasets.corruptions import CORRUPTION_TYPES, apply_corruption
from admn_ros.datasets.sample import MODALITIES, RawBatch, batch_size, present_modalities, take

PRESETS = ('single', 'pairs', 'recorded')
SINGLE_SEVERITIES = (1.0, 0.5)
PAIR_SEVERITY = 1.0
# Per modality one type that removes the signal and one that adds noise to it.
PAIR_TYPES: Dict[str, Tuple[str, str]] = {'rgb': ('low_light', 'gaussian_noise'),
                                          'depth': ('blocked', 'gaussian_noise'),
                                          'audio': ('muted', 'white_noise')}
# Conditions that leave (next to) nothing of one modality; evaluation summarises them apart.
DESTROYING: Tuple[Tuple[str, str, float], ...] = (
    ('rgb', 'low_light', 1.0), ('rgb', 'occlusion', 1.0), ('depth', 'blocked', 1.0),
    ('audio', 'muted', 1.0), ('audio', 'white_noise', 1.0))
# Recorded severities are float32; they are compared and named at this many decimals.
_DECIMALS = 4

Corruption = Tuple[str, str, float]


@dataclass(frozen=True)
class Condition:
    """A named test condition: ``corrupted`` holds ``(modality, type, severity)`` per degraded
    modality (empty = clean); ``recorded`` selects tagged samples instead of corrupting."""

    name: str
    corrupted: Tuple[Corruption, ...] = ()
    recorded: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f'a condition needs a non-empty name, got {self.name!r}')
        object.__setattr__(self, 'corrupted', tuple(_check_corruption(*c) for c in self.corrupted))
        seen = [m for m, _, _ in self.corrupted]
        if len(set(seen)) != len(seen):
            raise ValueError(f'condition {self.name!r} degrades a modality twice: {seen}')

    @property
    def modalities(self) -> Tuple[str, ...]:
        return tuple(m for m, _, _ in self.corrupted)

    def describe(self) -> List[Dict]:
        """``corrupted`` as JSON-able ``[{modality, type, severity}]``."""
        return [{'modality': m, 'type': t, 'severity': s} for m, t, s in self.corrupted]


def _check_corruption(modality, ctype, severity) -> Corruption:
    if not isinstance(modality, str) or modality not in CORRUPTION_TYPES:
        raise ValueError(f'unknown modality {modality!r}; known: {", ".join(MODALITIES)}')
    types = CORRUPTION_TYPES[modality][1:]
    if not isinstance(ctype, str) or ctype not in types:
        raise ValueError(f'unknown {modality} corruption type {ctype!r}; known: {", ".join(types)}')
    if isinstance(severity, bool) or not isinstance(severity, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(severity) <= 1.0:
        raise ValueError(f'{modality}:{ctype} severity must be a number in [0, 1], got {severity!r}')
    return str(modality), str(ctype), round(float(severity), _DECIMALS)


def condition_name(corrupted: Sequence[Corruption]) -> str:
    """``clean``, or ``rgb:low_light:1.0+audio:muted:0.5`` (one part per degraded modality)."""
    return '+'.join(f'{m}:{t}:{float(s)!r}' for m, t, s in corrupted) or 'clean'


def _synthetic(corrupted: Sequence[Corruption]) -> Condition:
    return Condition(condition_name(corrupted), tuple(corrupted))


# --------------------------------------------------------------------------------- presets

def preset_conditions(preset: str, modalities: Sequence[str]) -> List[Condition]:
    """The ``single`` or ``pairs`` preset for a dataset with ``modalities`` (``recorded`` needs
    the data: :func:`recorded_conditions`)."""
    mods = [m for m in MODALITIES if m in modalities]
    out = [Condition('clean')]
    if preset == 'single':
        for m in mods:
            for t in CORRUPTION_TYPES[m][1:]:
                out += [_synthetic([(m, t, s)]) for s in SINGLE_SEVERITIES]
    elif preset == 'pairs':
        for a, b in itertools.combinations(mods, 2):
            out += [_synthetic([(a, ta, PAIR_SEVERITY), (b, tb, PAIR_SEVERITY)])
                    for ta in PAIR_TYPES[a] for tb in PAIR_TYPES[b]]
    else:
        raise ValueError(f'unknown condition preset {preset!r}; presets: {", ".join(PRESETS[:2])}')
    return out


def _tags(arrays: RawBatch) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{modality: (ctype codes, rounded severities)}`` for the tagged modalities of ``arrays``."""
    out = {}
    for m in present_modalities(arrays):
        if f'severity_{m}' in arrays and f'ctype_{m}' in arrays:
            codes = np.asarray(arrays[f'ctype_{m}'])
            sev = np.round(np.asarray(arrays[f'severity_{m}'], np.float64), _DECIMALS)
            degraded = (sev > 0) & (codes > 0)   # severity 0 is clean whatever the type
            out[m] = (np.where(degraded, codes, 0), np.where(degraded, sev, 0.0))
    return out


def recorded_conditions(arrays: RawBatch) -> List[Condition]:
    """One recorded condition per combination of tags in ``arrays`` (``clean`` first, then by the
    number of degraded modalities and name); untagged data gives just ``clean``."""
    tags = _tags(arrays)
    keys = set()
    for i in range(batch_size(arrays)):
        keys.add(tuple((m, CORRUPTION_TYPES[m][int(codes[i])], float(sev[i]))
                       for m, (codes, sev) in tags.items() if sev[i] > 0))
    ordered = sorted(keys, key=lambda k: (len(k), condition_name(k)))
    return [Condition(condition_name(k), k, recorded=True) for k in ordered]


def recorded_mask(arrays: RawBatch, condition: Condition) -> np.ndarray:
    """Which samples carry exactly ``condition``'s tags (untagged modalities count as clean)."""
    n = batch_size(arrays)
    tags = _tags(arrays)
    wanted = {m: (t, s) for m, t, s in condition.corrupted}
    mask = np.ones(n, bool)
    for m, (t, s) in wanted.items():
        if m not in tags:
            return np.zeros(n, bool)
        codes, sev = tags[m]
        mask &= (codes == CORRUPTION_TYPES[m].index(t)) & (sev == s)
    for m, (_, sev) in tags.items():
        if m not in wanted:
            mask &= sev == 0
    return mask


# ------------------------------------------------------------------------------ YAML files

def load_conditions(path, modalities: Optional[Sequence[str]] = None) -> List[Condition]:
    """Conditions from a YAML list of ``{name, corrupted: [{modality, type, severity}]}``.

    ``modalities`` (the dataset's) refuses conditions on modalities the data lacks. Every
    problem is one ValueError line naming the file and the entry.
    """
    path = Path(path)
    try:
        data = safe_load(path.read_text(encoding='utf8'))
    except yaml.YAMLError as err:
        raise ValueError(f'{path}: not valid YAML: {" ".join(str(err).split())}') from None
    if not isinstance(data, list) or not data:
        raise ValueError(f'{path}: expected a non-empty list of conditions '
                         '(- {name: ..., corrupted: [{modality, type, severity}]})')
    out: List[Condition] = []
    for i, item in enumerate(data, 1):
        where = f'{path}: condition {i}'
        try:
            out.append(_parse_condition(item, modalities))
        except ValueError as exc:
            raise ValueError(f'{where}: {exc}') from None
    names = [c.name for c in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f'{path}: condition names must be unique; repeated: {", ".join(twice)}')
    return out


def _parse_condition(item, modalities: Optional[Sequence[str]]) -> Condition:
    if not isinstance(item, dict):
        raise ValueError(f'expected a mapping {{name, corrupted}}, got {item!r}')
    unknown = sorted(set(item) - {'name', 'corrupted'})
    if unknown:
        raise ValueError(f'unknown keys {unknown}; allowed: name, corrupted')
    if not isinstance(item.get('name'), str) or not item['name'].strip():
        raise ValueError('needs a name (a non-empty string)')
    entries = item.get('corrupted') or []
    if not isinstance(entries, list):
        raise ValueError(f'{item["name"]}: corrupted must be a list of {{modality, type, severity}}')
    corrupted = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {'modality', 'type', 'severity'}:
            raise ValueError(f'{item["name"]}: each corrupted entry needs exactly modality, type '
                             f'and severity, got {entry!r}')
        if modalities is not None and entry['modality'] in MODALITIES \
                and entry['modality'] not in modalities:
            raise ValueError(f'{item["name"]}: the dataset has no {entry["modality"]} '
                             f'(it has {", ".join(modalities)})')
        corrupted.append((entry['modality'], entry['type'], entry['severity']))
    try:
        return Condition(item['name'], tuple(corrupted))
    except ValueError as exc:
        raise ValueError(f'{item["name"]}: {exc}') from None


def resolve_conditions(spec: str, test_arrays: RawBatch) -> List[Condition]:
    """``--conditions``: a preset name (for the modalities of ``test_arrays``) or a YAML file."""
    modalities = present_modalities(test_arrays)
    if spec == 'recorded':
        return recorded_conditions(test_arrays)
    if spec in PRESETS:
        return preset_conditions(spec, modalities)
    if Path(spec).is_file():
        return load_conditions(spec, modalities)
    raise ValueError(f'--conditions {spec!r} is neither a preset ({", ".join(PRESETS)}) nor a file')


# ------------------------------------------------------------------------------- applying

def _condition_seed(seed: int, condition: Condition) -> List[int]:
    """A generator seed from ``seed`` and what the condition does (not its name or its position
    in a list), so a condition's data is the same whichever others are evaluated with it."""
    digest = hashlib.sha256(repr(condition.corrupted).encode()).digest()
    return [int(seed), int.from_bytes(digest[:8], 'little')]


def apply_condition(test_arrays: RawBatch, condition: Condition, seed: int = 0) -> RawBatch:
    """The test split under ``condition``; a new batch, ``test_arrays`` is not changed.

    Synthetic: every sample gets each listed corruption (via
    :func:`admn_ros.datasets.corruptions.apply_corruption`, which writes ``severity_<m>`` / ``ctype_<m>``);
    other modalities keep their recorded tags, or are labelled clean where the data has none.
    Deterministic for a given ``seed``. Recorded: the samples with exactly those tags, unchanged.
    """
    if condition.recorded:
        return take(test_arrays, recorded_mask(test_arrays, condition))
    missing = [m for m in condition.modalities if m not in test_arrays]
    if missing:
        raise ValueError(f'condition {condition.name!r} degrades {", ".join(missing)}, which the '
                         f'data lacks (it has {", ".join(present_modalities(test_arrays))})')
    rng = np.random.default_rng(_condition_seed(seed, condition))
    out = dict(test_arrays)
    for m, t, s in condition.corrupted:
        out = apply_corruption(out, m, t, s, rng)
    for m in present_modalities(out):
        if f'severity_{m}' not in out:
            out = apply_corruption(out, m, 'clean', 0.0, rng)   # writes all-clean labels
    return out


__all__ = ['Condition', 'PRESETS', 'PAIR_TYPES', 'DESTROYING', 'preset_conditions',
           'recorded_conditions', 'recorded_mask', 'load_conditions', 'resolve_conditions',
           'apply_condition', 'condition_name']
