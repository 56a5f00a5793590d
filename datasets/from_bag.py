"""A recorded rosbag2 -> the folder format (:mod:`admn_ros.datasets.folder`): ``admn data from-bag``.

    admn data from-bag runs/my_robot_bag --out data/my_robot --rate 2 --labels-csv labels.csv \\
        --splits train=0.7,val=0.15,test=0.15 --image-size 64

**When a sample is taken.** ``--rate HZ``: every ``1/HZ`` seconds from the first camera frame to
the last. ``--trigger TOPIC``: at each message of that topic (its header stamp, or its log time
when it has no header) - a button, a detector, a timer. Neither: at every frame of the first
image stream (rgb, else depth). At a sample time ``t`` each image stream gives its frame with the
nearest header stamp and the audio stream the window a live node would hear: the last
``clip_seconds`` of the contiguous run up to the end of the audio message nearest ``t``
(:func:`admn_ros.datasets.bags.read_streams`' ``audio_window``). A stream with nothing within
``max_gap_s`` of ``t`` (default: half the first image stream's median frame period) skips the
sample, counted by reason; so does an audio window shorter than a clip (the recording's first
second).

**Labels** come from a label topic (``/ground_truth/label``, the project's DiagnosticArray, as
``sensor_source`` and ``admn bag record`` write it) - the latest label at or before ``t`` holds,
so a topic published on change works - or from a CSV of time ranges ``start,end,label`` (seconds
from the bag's start, or absolute UNIX seconds with ``csv_time='absolute'``; a header row is
allowed; ranges are half open ``[start, end)`` and may not overlap). A sample with no label is
skipped and counted. **Condition tags** come from the noise injector's ``ground_truth/corruption``
topic (latest at or before ``t``) or a CSV ``start,end,modality,type,severity`` (types from
:data:`admn_ros.datasets.corruptions.CORRUPTION_TYPES`); they are written to ``meta.yaml``, and
training and ``admn eval --conditions recorded`` keep them as they are.

**Topic names** of a robot's bag map onto the streams with ``topics`` (``--rgb``, ``--depth``,
``--audio``, ``--audio-info``, ``--label``, ``--corruption``, as for ``admn bag eval``).
**Splits**: one split (``split``) or fractions (``splits``) cut from each class's samples in time
order - first ``train``, then ``val``, then ``test`` - so near-identical neighbouring frames
meet across a split boundary at most once per class. **Resize on load**: ``image_size`` stores
images centre-cropped and shrunk to the model's input size
(:func:`admn_ros.datasets.preprocess.shrink_to_input`); the model inputs are the same as from
the full frames, and training reads a fraction of the bytes.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from admn_ros.datasets.bags import read_streams
from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE

IMAGE_MODALITIES = ('rgb', 'depth')
CSV_TIMES = ('bag', 'absolute')


@dataclass
class ImportReport:
    """What :func:`import_bag` wrote and what it left out (and why)."""

    out: Path
    class_names: List[str]
    samples: Dict[str, int] = field(default_factory=dict)          # split -> records written
    skipped: Dict[str, int] = field(default_factory=dict)          # reason -> sample times
    tagged: Dict[str, int] = field(default_factory=dict)           # modality -> degraded records
    modalities: Tuple[str, ...] = ()
    undecodable: Dict[str, int] = field(default_factory=dict)      # topic -> messages

    def describe(self) -> str:
        lines = [f'{self.out}: {sum(self.samples.values())} samples '
                 f'({", ".join(f"{k} {v}" for k, v in self.samples.items())}), modalities '
                 f'{", ".join(self.modalities)}, classes {", ".join(self.class_names)}']
        if self.tagged:
            lines.append('  degraded (tags): ' + ', '.join(f'{m} {n}' for m, n in self.tagged.items()))
        for reason, n in self.skipped.items():
            lines.append(f'  skipped {n}: {reason}')
        for topic, n in self.undecodable.items():
            lines.append(f'  undecodable messages on {topic}: {n}')
        return '\n'.join(lines)


# ------------------------------------------------------------------------------------- CSV files

def _read_rows(path, columns: Sequence[str]) -> List[List[str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no such CSV file {path}')
    rows = []
    with open(path, newline='', encoding='utf8') as f:
        for i, row in enumerate(csv.reader(f)):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith('#'):
                continue
            if i == 0 and row[0].lower() == columns[0]:
                continue   # a header row
            if len(row) != len(columns):
                raise ValueError(f'{path} line {i + 1}: expected {len(columns)} columns '
                                 f'({",".join(columns)}), got {len(row)}')
            rows.append(row)
    return rows


def _seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f'{where}: {text!r} is not a time in seconds') from None
    if not np.isfinite(value):
        raise ValueError(f'{where}: time {text!r} is not finite')
    return value


def read_label_ranges(path) -> List[Tuple[float, float, str]]:
    """``start,end,label`` rows -> sorted ``(start, end, label)``; overlapping ranges refused."""
    ranges = []
    for row in _read_rows(path, ('start', 'end', 'label')):
        where = f'{path}: range {",".join(row)}'
        start, end = _seconds(row[0], where), _seconds(row[1], where)
        if not end > start:
            raise ValueError(f'{where}: end must be after start')
        if not row[2]:
            raise ValueError(f'{where}: empty label')
        ranges.append((start, end, row[2]))
    ranges.sort()
    for (s0, e0, l0), (s1, e1, l1) in zip(ranges, ranges[1:]):
        if s1 < e0:
            raise ValueError(f'{path}: ranges [{s0}, {e0}) {l0} and [{s1}, {e1}) {l1} overlap')
    return ranges


def read_condition_ranges(path) -> List[Tuple[float, float, str, str, float]]:
    """``start,end,modality,type,severity`` rows, checked against the corruption types."""
    from admn_ros.datasets.corruptions import CORRUPTION_TYPES
    out = []
    for row in _read_rows(path, ('start', 'end', 'modality', 'type', 'severity')):
        where = f'{path}: condition {",".join(row)}'
        start, end = _seconds(row[0], where), _seconds(row[1], where)
        modality, ctype = row[2], row[3]
        if not end > start:
            raise ValueError(f'{where}: end must be after start')
        if modality not in CORRUPTION_TYPES:
            raise ValueError(f'{where}: unknown modality {modality!r}; known: {", ".join(MODALITIES)}')
        if ctype not in CORRUPTION_TYPES[modality]:
            raise ValueError(f'{where}: unknown {modality} type {ctype!r}; known: '
                             f'{", ".join(CORRUPTION_TYPES[modality])}')
        severity = _seconds(row[4], where)
        if not 0.0 <= severity <= 1.0:
            raise ValueError(f'{where}: severity must lie in [0, 1]')
        out.append((start, end, modality, ctype, severity))
    return out


# ------------------------------------------------------------------------------------- matching

def _nearest(stamps: np.ndarray, t: int, gap: int) -> int:
    """Index of the stamp nearest ``t`` within ``gap`` ns, or -1."""
    k = int(np.searchsorted(stamps, t))
    best, best_d = -1, gap + 1
    for j in (k - 1, k):
        if 0 <= j < len(stamps) and abs(int(stamps[j]) - t) < best_d:
            best, best_d = j, abs(int(stamps[j]) - t)
    return best


def _latest(stamps: np.ndarray, t: int, gap: int) -> int:
    """Index of the last stamp at or before ``t + gap``, or -1 (a state that holds until changed)."""
    return int(np.searchsorted(stamps, t + gap, side='right')) - 1


def _stream(items) -> Tuple[np.ndarray, list]:
    items = sorted(items, key=lambda it: it[1])
    return np.array([s for _, s, _ in items], dtype=np.int64), [v for _, _, v in items]


def _trigger_stamps(path: Path, topic: str) -> np.ndarray:
    """Header stamps (log times for headerless messages) of every message on ``topic``."""
    from rosbags.rosbag2 import Reader

    from admn_ros.datasets.ros_messages import header_stamp_ns
    from admn_ros.datasets.ros_messages.typestore import make_typestore
    store = make_typestore()
    topic = '/' + topic.lstrip('/')
    stamps = []
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise ValueError(f'trigger topic {topic} is not in the bag; its topics: '
                             f'{sorted(reader.topics)}')
        for conn, log_ns, raw in reader.messages(connections=conns):
            try:
                stamps.append(header_stamp_ns(store.deserialize_cdr(raw, conn.msgtype)))
            except Exception:   # no header, or a type this typestore does not know: log time
                stamps.append(int(log_ns))
    return np.unique(np.array(stamps, dtype=np.int64))


# ------------------------------------------------------------------------------------- import

def import_bag(bag, out, *, topics: Optional[Mapping[str, str]] = None, rate_hz: Optional[float] = None,
               trigger: Optional[str] = None, max_gap_s: Optional[float] = None,
               labels_csv=None, conditions_csv=None, csv_time: str = 'bag',
               classes: Optional[Sequence[str]] = None, split: str = 'train',
               splits: Optional[Mapping[str, float]] = None, image_size: Optional[int] = None,
               clip_seconds: float = 1.0, depth_format: str = 'png',
               modalities: Optional[Sequence[str]] = None, unlabelled: bool = False) -> ImportReport:
    """Turn the bag at ``bag`` into a folder dataset at ``out`` (module docstring).
    ``unlabelled``: take every sample without a label (for ``admn pretrain``), all into ``split``."""
    bag, out = Path(bag), Path(out)
    if not bag.exists():
        raise FileNotFoundError(f'bag {bag} does not exist')
    if rate_hz is not None and trigger:
        raise ValueError('give --rate or --trigger, not both')
    if rate_hz is not None and not rate_hz > 0:
        raise ValueError(f'rate must be > 0 Hz, got {rate_hz}')
    if csv_time not in CSV_TIMES:
        raise ValueError(f'csv_time must be one of {CSV_TIMES}, got {csv_time!r}')
    topics = dict(topics or {})
    if labels_csv and topics.get('label'):
        raise ValueError('labels come from a label topic or a CSV, not both')
    if conditions_csv and topics.get('corruption'):
        raise ValueError('condition tags come from the corruption topic or a CSV, not both')
    split_fractions = _check_splits(split, splits)

    clip = int(round(clip_seconds * SAMPLE_RATE))
    # Audio as a live node hears it: the last clip of sound up to each audio message.
    recorded = read_streams(bag, topics=topics, audio_window=clip)
    streams = {m: _stream(recorded.streams[m]) for m in (*IMAGE_MODALITIES, 'audio')
               if m in recorded.streams}
    present = tuple(m for m in MODALITIES if m in streams)
    if modalities:
        missing = sorted(set(modalities) - set(present))
        if missing:
            raise ValueError(f'the bag has no {", ".join(missing)} stream (it has '
                             f'{", ".join(present) or "none"}); map its topic with --rgb / --depth / --audio')
        present = tuple(m for m in MODALITIES if m in modalities)
    if not present:
        raise ValueError(f'{bag}: no rgb, depth or audio messages '
                         '(map a topic with --rgb, --depth, --audio)')

    first = np.unique(streams[present[0]][0])
    gap = (int(round(max_gap_s * 1e9)) if max_gap_s is not None
           else max(1, int(np.median(np.diff(first)) // 2)) if len(first) > 1 else 100_000_000)
    times = _sample_times(bag, first, rate_hz, trigger)

    # Labels: a CSV of ranges, else the label stream (latest at or before the sample).
    offset = recorded.start_ns if csv_time == 'bag' else 0
    label_ranges = read_label_ranges(labels_csv) if labels_csv else None
    label_stream = None
    if unlabelled:
        names, split_fractions = [], {split: 1.0}
    elif label_ranges is not None:
        names = list(classes) if classes else sorted({lab for _, _, lab in label_ranges})
        unknown = sorted({lab for _, _, lab in label_ranges} - set(names))
        if unknown:
            raise ValueError(f'{labels_csv} uses labels {unknown} that --classes lacks')
        label_stream = None
    else:
        label_stream = _stream(recorded.streams['label']) if 'label' in recorded.streams else None
        if label_stream is None:
            raise ValueError(f'{bag}: no label topic messages; give --label TOPIC or --labels-csv')
        names = list(classes) if classes else recorded.class_names(every_label_id=True)
    condition_ranges = read_condition_ranges(conditions_csv) if conditions_csv else None
    condition_stream = (_stream(recorded.streams['corruption'])
                        if condition_ranges is None and 'corruption' in recorded.streams else None)

    rows: Dict[str, list] = {m: [] for m in present}
    labels, tags, stamps = [], [], []
    skipped: Dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for t in (int(t) for t in times):
        index = {m: _nearest(streams[m][0], t, gap) for m in present}
        missing = [m for m in present if index[m] < 0]
        if missing:
            skip(f'no {missing[0]} within {gap / 1e9:.3g} s')
            continue
        picked = {m: streams[m][1][index[m]] for m in present}
        if 'audio' in picked and len(picked['audio']) < clip:
            skip('audio window shorter than a clip')
            continue
        label = -1 if unlabelled else _label_at(t, label_ranges, label_stream, offset, gap, names)
        if label is None:
            skip('no label at that time')
            continue
        for m in present:
            rows[m].append(picked[m])
        labels.append(label)
        tags.append(_tags_at(t, condition_ranges, condition_stream, offset, gap, present))
        stamps.append(t)
    if not labels:
        raise ValueError(f'{bag}: no sample has every stream and a label '
                         f'({", ".join(f"{k}: {v}" for k, v in skipped.items()) or "no sample times"})')

    report = ImportReport(out=out, class_names=names, skipped=skipped, modalities=present,
                          undecodable=dict(recorded.undecodable))
    batch = _batch(rows, labels, tags, present, image_size)
    if unlabelled:
        del batch['label']
    for m in MODALITIES:
        if f'severity_{m}' in batch:
            report.tagged[m] = int((batch[f'severity_{m}'] > 0).sum())
    order = _assign_splits(np.array(labels), split_fractions)
    from admn_ros.datasets.folder import write_folder
    from admn_ros.datasets.sample import take
    for name, index in order.items():
        if not len(index):
            continue
        write_folder(out, name, take(batch, index), names, depth_format=depth_format,
                     record_names=[f'{i:06d}_{stamps[i]}' for i in index])
        report.samples[name] = int(len(index))
    return report


def _sample_times(bag: Path, first: np.ndarray, rate_hz: Optional[float],
                  trigger: Optional[str]) -> np.ndarray:
    """Trigger stamps, a ``rate_hz`` grid over the first stream's span, or its own stamps."""
    if trigger:
        return _trigger_stamps(bag, trigger)
    if rate_hz is None:
        return first
    period = 1e9 / rate_hz
    count = int((first[-1] - first[0]) // period) + 1
    return np.array([first[0] + round(k * period) for k in range(count)], np.int64)


def _label_at(t, ranges, stream, offset, gap, names) -> Optional[int]:
    if ranges is not None:
        s = (t - offset) / 1e9
        for start, end, label in ranges:
            if start <= s < end:
                return names.index(label)
        return None
    stamps, values = stream
    j = _latest(stamps, t, gap)
    if j < 0:
        return None
    if not 0 <= int(values[j]) < len(names):
        raise ValueError(f'label id {values[j]} has no class name (classes: {names}); pass --classes')
    return int(values[j])


def _tags_at(t, ranges, stream, offset, gap, present) -> Dict[str, Tuple[str, float]]:
    if ranges is not None:
        s = (t - offset) / 1e9
        return {m: (ctype, sev) for start, end, m, ctype, sev in ranges
                if start <= s < end and m in present}
    if stream is None:
        return {}
    stamps, values = stream
    j = _latest(stamps, t, gap)
    return {m: v for m, v in values[j].items() if m in present} if j >= 0 else {}


def _batch(rows, labels, tags, present, image_size) -> Dict[str, np.ndarray]:
    from admn_ros.datasets.corruptions import CORRUPTION_TYPES
    from admn_ros.datasets.preprocess import shrink_to_input
    batch: Dict[str, np.ndarray] = {}
    for m in present:
        if m == 'audio':
            batch['audio'] = np.clip(np.stack(rows['audio']), -1.0, 1.0).astype(np.float32)
            continue
        frames = [shrink_to_input(f, int(image_size), m) if image_size else f for f in rows[m]]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise ValueError(f'{m} frames differ in size {sorted(shapes)}; pass --image-size to '
                             'bring them to one')
        batch[m] = np.stack(frames).astype(np.uint8 if m == 'rgb' else np.float32)
    batch['label'] = np.array(labels, np.int64)
    for m in [m for m in MODALITIES if any(m in tg for tg in tags)]:
        types = CORRUPTION_TYPES[m]
        levels = [tg.get(m, ('clean', 0.0)) for tg in tags]
        for ctype, _ in levels:
            if ctype not in types:
                raise ValueError(f'unknown {m} condition type {ctype!r}; known: {", ".join(types)}')
        severity = np.array([float(s) for _, s in levels], np.float32)
        batch[f'severity_{m}'] = severity
        batch[f'ctype_{m}'] = np.array([types.index(c) if s > 0 else 0
                                        for (c, _), s in zip(levels, severity)], np.int64)
    return batch


def _check_splits(split: str, splits: Optional[Mapping[str, float]]) -> Dict[str, float]:
    from admn_ros.datasets.registry import SPLITS
    if not splits:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        return {split: 1.0}
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f'unknown splits {unknown}; known: {SPLITS}')
    fractions = {s: float(splits[s]) for s in SPLITS if s in splits}
    if any(not 0 < f <= 1 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ValueError(f'split fractions must be in (0, 1] and sum to 1, got {fractions}')
    return fractions


def parse_splits(text: str) -> Dict[str, float]:
    """``train=0.7,val=0.15,test=0.15`` -> ``{'train': 0.7, ...}``."""
    out = {}
    for part in text.split(','):
        name, sep, value = part.partition('=')
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ''
        if not sep:
            raise ValueError(f'--splits {text}: expected NAME=FRACTION,..., e.g. train=0.7,val=0.15,test=0.15')
    return out


def _assign_splits(labels: np.ndarray, fractions: Dict[str, float]) -> Dict[str, np.ndarray]:
    """Per class, samples in time order cut into consecutive blocks by ``fractions``."""
    out: Dict[str, list] = {s: [] for s in fractions}
    for c in np.unique(labels):
        index = np.flatnonzero(labels == c)          # time order: samples are taken in order
        edges = np.round(np.cumsum([0.0] + list(fractions.values())) * len(index)).astype(int)
        for (name, _), lo, hi in zip(fractions.items(), edges[:-1], edges[1:]):
            out[name] += index[lo:hi].tolist()
    return {s: np.array(sorted(v), np.int64) for s, v in out.items()}
