"""rosbag2 recording and replay of raw batches with ``rosbags`` (no ROS install needed).

**Layout written by** :func:`write_bag` (topics and encodings in :mod:`admn_ros.datasets.topics`):
sample ``i`` is stamped ``t_i = start_ns + round(i * 1e9 / rate_hz)`` and every message of that
sample carries ``header.stamp == t_i`` and bag log time ``t_i`` - except audio chunks: a clip is
sent as one message, or with ``audio_chunk=n`` as chunks of ``n`` samples where chunk ``k`` is
stamped at its first sample, ``t_i + round(k * n * 1e9 / 16000)``. Chunked clips of consecutive
samples must not interleave in time, so ``clip length <= 1 / rate_hz`` is required then. Ground
truth goes on ``/ground_truth/label`` and ``/ground_truth/corruption`` (DiagnosticArray). The
class names and audio sample rate are also kept in the bag's ``custom_data`` metadata.

**Reading** (:func:`read_bag`) decodes RGB (rgb8/bgr8/rgba8/bgra8), depth (32FC1 or 16UC1 mm),
audio as an Image (16SC1/32FC1) or as ros-drivers ``audio_common_msgs/AudioDataStamped`` with the
format from ``/audio/audio_info`` (``AudioInfo``; the Image topic wins when both are recorded), and
the ground-truth topics. Audio chunks are
reassembled into clips: a chunk continues the current clip when it starts where the clip ends
(within one sample period) and no other stream (RGB, depth, label) has a message stamped at that
instant; multi-channel audio is averaged to mono and resampled to 16 kHz with soxr. Clips of
different lengths are zero-padded at the end to the longest. Streams are then matched by header
stamp with :class:`admn_ros.datasets.sync.ApproxSync` fed in log-time order (the messages a live node
would see), and the samples come out sorted by the anchor's stamp (RGB if present, else the
first stream). A continuous microphone stream (one long clip) is not windowed per frame here.

Errors: a missing bag is ``FileNotFoundError``; a directory without ``metadata.yaml``, a
truncated or garbled storage file, or undecodable messages raise :class:`BagError` (a
``ValueError``) naming the bag.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from admn_ros.datasets import topics as T
from admn_ros.datasets.rosmsg_codec import (audio_from_image, audio_to_image_fields, header_stamp_ns,
                                   image_fields, image_to_array, pcm_bytes_to_array,
                                   pcm_frame_bytes, split_stamp)
from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE, RawBatch, batch_size, present_modalities
from admn_ros.datasets.sync import ApproxSync

DEFAULT_START_NS = 1_700_000_000_000_000_000   # fixed, so written bags are reproducible
STORAGES = ('mcap', 'sqlite3')
CUSTOM_CLASS_NAMES = 'admn_ros.class_names'
CUSTOM_AUDIO_RATE = 'admn_ros.audio_sample_rate'
CUSTOM_RATE_HZ = 'admn_ros.rate_hz'


class BagError(ValueError):
    """A bag that cannot be read or written (names the bag path)."""


@dataclass
class BagSamples:
    """Samples recovered from a bag."""

    batch: RawBatch                       # raw batch incl. label / corruption labels if recorded
    stamps_ns: np.ndarray                 # int64 [B], the anchor stream's header stamps
    class_names: List[str]
    anchor: str = ''                      # stream whose stamps are reported
    unmatched: Dict[str, int] = field(default_factory=dict)  # messages left out, per stream


# --------------------------------------------------------------------------------------------
# Typestore
# --------------------------------------------------------------------------------------------

_STORE = None


def make_typestore():
    """The ROS 2 Kilted typestore plus the ros-drivers audio_common_msgs types (cached)."""
    global _STORE
    if _STORE is None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        from admn_ros.datasets.msg import audio_common_definitions

        store = get_typestore(Stores.ROS2_KILTED)
        types = {}
        for name, text in audio_common_definitions().items():
            types.update(get_types_from_msg(text, name))
        store.register(types)
        _STORE = store
    return _STORE


def _header(store, stamp_ns: int, frame_id: str):
    sec, nanosec = split_stamp(stamp_ns)
    stamp = store.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec)
    return store.types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)


def _image_msg(store, fields: Dict[str, Any], stamp_ns: int, frame_id: str):
    fields = dict(fields)
    fields['data'] = np.frombuffer(fields['data'], dtype=np.uint8)
    return store.types[T.IMAGE_TYPE](header=_header(store, stamp_ns, frame_id), **fields)


def _diagnostic_array(store, stamp_ns: int, statuses: Sequence[Tuple[str, Dict[str, str]]]):
    kv = store.types['diagnostic_msgs/msg/KeyValue']
    status = store.types['diagnostic_msgs/msg/DiagnosticStatus']
    items = [status(level=0, name=name, message='', hardware_id='',
                    values=[kv(key=k, value=v) for k, v in values.items()])
             for name, values in statuses]
    return store.types[T.DIAGNOSTIC_ARRAY_TYPE](header=_header(store, stamp_ns, ''), status=items)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _check_batch(batch: RawBatch) -> Tuple[int, Tuple[str, ...]]:
    present = present_modalities(batch)
    if not present:
        raise ValueError(f'batch has no modality to record; keys: {sorted(batch)}')
    n = batch_size(batch)
    expected = {'rgb': (np.uint8, 4), 'depth': (np.floating, 3), 'audio': (np.floating, 2)}
    for key, value in batch.items():
        if len(value) != n:
            raise ValueError(f'batch key {key!r} has {len(value)} rows, expected {n}')
    for m in present:
        dtype, ndim = expected[m]
        x = batch[m]
        if not np.issubdtype(x.dtype, dtype) or x.ndim != ndim or (m == 'rgb' and x.shape[-1] != 3):
            raise ValueError(f'batch[{m!r}] has dtype {x.dtype} shape {x.shape}; '
                             'see datasets.sample for the raw-batch contract')
    return n, present


def _corruption_names(batch: RawBatch) -> Dict[str, List[str]]:
    """Per-modality corruption type names for every sample, from ``ctype_<m>`` labels."""
    from admn_ros.datasets.corruptions import corruption_labels
    return {m: names for m, (names, _) in corruption_labels(batch).items()}


def write_bag(path, batch, *, class_names: Optional[Sequence[str]] = None, rate_hz: float = 10.0,
              storage: str = 'mcap', start_ns: int = DEFAULT_START_NS,
              audio_chunk: Optional[int] = None, depth_encoding: str = T.DEPTH_ENCODING,
              audio_encoding: str = T.AUDIO_ENCODING) -> Path:
    """Record a raw batch (or a ``LoadedDataset``) as a rosbag2 directory at ``path``.

    ``class_names`` defaults to the dataset's, else ``str(class_id)``. ``depth_encoding`` is
    ``32FC1`` (metres) or ``16UC1`` (millimetres); ``audio_encoding`` ``16SC1`` or ``32FC1``.
    The directory must not exist. Returns the bag path.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    if hasattr(batch, 'arrays'):   # a LoadedDataset
        if class_names is None:
            class_names = getattr(batch, 'class_names', None)
        batch = batch.arrays
    path = Path(path)
    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {STORAGES}, got {storage!r}')
    if not rate_hz > 0:
        raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
    if depth_encoding not in ('32FC1', '16UC1'):
        raise ValueError(f'depth_encoding must be 32FC1 or 16UC1, got {depth_encoding!r}')
    n, present = _check_batch(batch)
    labels = batch.get('label')
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if class_names is None:
            class_names = [str(i) for i in range(int(labels.max()) + 1 if n else 0)]
        if n and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f'labels span {labels.min()}..{labels.max()} but there are '
                             f'{len(class_names)} class names')
    class_names = [str(c) for c in (class_names or [])]
    corruption = _corruption_names(batch)

    period_ns = 1e9 / rate_hz
    stamps = [int(start_ns) + int(round(i * period_ns)) for i in range(n)]
    clip_len = batch['audio'].shape[1] if 'audio' in batch else 0
    if audio_chunk is not None:
        if int(audio_chunk) < 1:
            raise ValueError(f'audio_chunk must be >= 1 sample, got {audio_chunk}')
        if 'audio' in batch and n > 1 and clip_len * 1e9 / SAMPLE_RATE > period_ns:
            raise ValueError(f'chunked audio clips of {clip_len / SAMPLE_RATE:.3f} s would '
                             f'interleave at {rate_hz} Hz; use rate_hz <= '
                             f'{SAMPLE_RATE / clip_len:.4g} or audio_chunk=None')

    store = make_typestore()
    # (log time, order of writing, topic, message type, message)
    records: List[Tuple[int, int, str, str, Any]] = []

    def add(t_ns: int, topic: str, msgtype: str, msg: Any) -> None:
        records.append((t_ns, len(records), topic, msgtype, msg))

    for i, t in enumerate(stamps):
        if 'rgb' in batch:
            add(t, T.RGB_TOPIC, T.IMAGE_TYPE, _image_msg(
                store, image_fields(batch['rgb'][i], T.RGB_ENCODING), t, T.FRAME_IDS['rgb']))
        if 'depth' in batch:
            add(t, T.DEPTH_TOPIC, T.IMAGE_TYPE, _image_msg(
                store, image_fields(np.asarray(batch['depth'][i], np.float32), depth_encoding),
                t, T.FRAME_IDS['depth']))
        if 'audio' in batch:
            clip = batch['audio'][i]
            step = int(audio_chunk) if audio_chunk is not None else max(clip_len, 1)
            for start in range(0, max(clip_len, 1), step):
                t_chunk = t + int(round(start * 1e9 / SAMPLE_RATE))
                fields = audio_to_image_fields(clip[start:start + step], audio_encoding)
                add(t_chunk, T.AUDIO_TOPIC, T.IMAGE_TYPE,
                    _image_msg(store, fields, t_chunk, T.FRAME_IDS['audio']))
        if labels is not None:
            c = int(labels[i])
            add(t, T.LABEL_TOPIC, T.DIAGNOSTIC_ARRAY_TYPE, _diagnostic_array(
                store, t, [(T.LABEL_STATUS_NAME, {T.LABEL_KEY_ID: str(c),
                                                  T.LABEL_KEY_NAME: class_names[c]})]))
        if corruption:
            statuses = [(m, {T.CORRUPTION_KEY_TYPE: corruption[m][i],
                             T.CORRUPTION_KEY_SEVERITY:
                                 f'{float(batch[f"severity_{m}"][i]):.9g}'})
                        for m in MODALITIES if m in corruption]
            add(t, T.CORRUPTION_TOPIC, T.DIAGNOSTIC_ARRAY_TYPE,
                _diagnostic_array(store, t, statuses))
    records.sort(key=lambda r: (r[0], r[1]))

    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    try:
        writer = Writer(path, version=9, storage_plugin=plugin)
        writer.set_custom_data(CUSTOM_CLASS_NAMES, json.dumps(class_names))
        writer.set_custom_data(CUSTOM_AUDIO_RATE, str(SAMPLE_RATE))
        writer.set_custom_data(CUSTOM_RATE_HZ, repr(float(rate_hz)))
        with writer:
            connections = {}
            for t_ns, _, topic, msgtype, msg in records:
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
                writer.write(connections[topic], t_ns, store.serialize_cdr(msg, msgtype))
    except WriterError as err:
        raise BagError(f'cannot write bag {path}: {err}') from err
    return path


def apply_schedule(batch: RawBatch, schedule: Any, *, rate_hz: float = 10.0,
                   rng: Optional[np.random.Generator] = None, seed: int = 0) -> RawBatch:
    """Corrupt sample ``i`` with ``schedule.level_at(i / rate_hz)`` (levels for absent
    modalities are ignored; modalities the schedule omits are labelled clean)."""
    from admn_ros.datasets.corruptions import apply_corruption

    if not rate_hz > 0:
        raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
    rng = np.random.default_rng(seed) if rng is None else rng
    n = batch_size(batch)
    levels = [schedule.level_at(i / rate_hz) for i in range(n)]
    out = dict(batch)
    for m in present_modalities(batch):
        per_sample = [lv.get(m, ('clean', 0.0)) for lv in levels]
        ctypes = [c for c, _ in per_sample]
        severity = np.array([s for _, s in per_sample], dtype=np.float64)
        out = apply_corruption(out, m, ctypes, severity, rng)
    return out


def write_schedule_bag(path, batch, schedule: Any, *, rate_hz: float = 10.0, seed: int = 0,
                       **write_kwargs) -> Path:
    """:func:`apply_schedule` (time ``i / rate_hz``) then :func:`write_bag` at the same rate."""
    if hasattr(batch, 'arrays'):
        write_kwargs.setdefault('class_names', getattr(batch, 'class_names', None))
        batch = batch.arrays
    corrupted = apply_schedule(batch, schedule, rate_hz=rate_hz, seed=seed)
    return write_bag(path, corrupted, rate_hz=rate_hz, **write_kwargs)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

@dataclass
class _Chunk:
    log_ns: int
    stamp_ns: int
    size: int               # frames (Image audio) or bytes (AudioDataStamped) in this chunk
    payload: Any            # float32 [C, n] (Image audio) or bytes (AudioDataStamped)


@dataclass
class _Decoded:
    """Per-stream (log time, header stamp, value) lists gathered from the bag."""

    streams: Dict[str, List[Tuple[int, int, Any]]] = field(default_factory=dict)
    image_audio: List[_Chunk] = field(default_factory=list)     # /audio/pcm
    stamped_audio: List[_Chunk] = field(default_factory=list)   # /audio/audio_stamped
    audio_info: Any = None
    label_names: Dict[int, str] = field(default_factory=dict)

    @property
    def audio_source(self) -> str:
        """The Image topic wins when a bag holds both (a full ROS system may publish both)."""
        if self.image_audio:
            return 'image'
        return 'audio_common' if self.stamped_audio else ''

    @property
    def audio_chunks(self) -> List[_Chunk]:
        return self.image_audio if self.image_audio else self.stamped_audio


def _bag_metadata(path: Path) -> Dict[str, Any]:
    meta_path = path / 'metadata.yaml'
    if not meta_path.is_file():
        raise BagError(f'{path} has no metadata.yaml: not a rosbag2 directory, or the recording '
                       'was interrupted (`ros2 bag reindex` can rebuild it)')
    import yaml
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding='utf8'))
        return dict(meta['rosbag2_bagfile_information'])
    except Exception as err:   # malformed YAML or missing top-level key
        raise BagError(f'{meta_path} is not valid rosbag2 metadata: {err}') from err


def _values(status) -> Dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _decode_message(dec: _Decoded, store, topic: str, msgtype: str, log_ns: int, raw) -> None:
    if topic in (T.RGB_TOPIC, T.DEPTH_TOPIC) and msgtype == T.IMAGE_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        arr = image_to_array(msg)
        if topic == T.RGB_TOPIC:
            if arr.ndim != 3:
                raise ValueError(f'{topic} carries {msg.encoding}, not a colour image')
            key = 'rgb'
        else:
            if msg.encoding not in ('32FC1', '16UC1'):
                raise ValueError(f'{topic} carries {msg.encoding}; depth must be 32FC1 or 16UC1')
            key = 'depth'
            arr = arr.astype(np.float32)
        dec.streams.setdefault(key, []).append((log_ns, header_stamp_ns(msg), arr))
    elif topic == T.AUDIO_TOPIC and msgtype == T.IMAGE_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        wave = audio_from_image(msg)
        dec.image_audio.append(_Chunk(log_ns, header_stamp_ns(msg), wave.shape[1], wave))
    elif topic == T.AUDIO_STAMPED_TOPIC and msgtype == T.AUDIO_STAMPED_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        data = np.asarray(msg.audio.data, dtype=np.uint8).tobytes()
        dec.stamped_audio.append(_Chunk(log_ns, header_stamp_ns(msg), len(data), data))
    elif topic == T.AUDIO_INFO_TOPIC and msgtype == T.AUDIO_INFO_TYPE:
        info = store.deserialize_cdr(raw, msgtype)
        if dec.audio_info is not None and _info_tuple(info) != _info_tuple(dec.audio_info):
            raise ValueError(f'{topic} changes format mid-bag: {_info_tuple(dec.audio_info)} '
                             f'then {_info_tuple(info)}')
        dec.audio_info = info
    elif topic == T.LABEL_TOPIC and msgtype == T.DIAGNOSTIC_ARRAY_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        found = [s for s in msg.status if s.name == T.LABEL_STATUS_NAME]
        if len(found) != 1:
            raise ValueError(f'{topic} message needs exactly one status named '
                             f'{T.LABEL_STATUS_NAME!r}, found {len(found)}')
        values = _values(found[0])
        class_id = int(values[T.LABEL_KEY_ID])
        if T.LABEL_KEY_NAME in values:
            dec.label_names[class_id] = values[T.LABEL_KEY_NAME]
        dec.streams.setdefault('label', []).append((log_ns, header_stamp_ns(msg), class_id))
    elif topic == T.CORRUPTION_TOPIC and msgtype == T.DIAGNOSTIC_ARRAY_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        levels = {}
        for s in msg.status:
            values = _values(s)
            levels[s.name] = (values[T.CORRUPTION_KEY_TYPE],
                              float(values[T.CORRUPTION_KEY_SEVERITY]))
        dec.streams.setdefault('corruption', []).append((log_ns, header_stamp_ns(msg), levels))


def _info_tuple(info) -> Tuple:
    return (int(info.channels), int(info.sample_rate), str(info.sample_format),
            str(info.coding_format))


def _read_messages(path: Path) -> _Decoded:
    from rosbags.rosbag2 import Reader

    store = make_typestore()
    dec = _Decoded()
    try:
        with Reader(path) as reader:
            for conn, log_ns, raw in reader.messages():
                _decode_message(dec, store, conn.topic, conn.msgtype, int(log_ns), raw)
    except BagError:
        raise
    except Exception as err:   # rosbags ReaderError, sqlite3/struct errors, bad fields
        raise BagError(f'cannot read bag {path} (truncated or corrupt?): '
                       f'{type(err).__name__}: {err}') from err
    return dec


def _assemble_clips(dec: _Decoded, anchors: np.ndarray, image_rate: int,
                    path: Path) -> List[Tuple[int, int, np.ndarray]]:
    """Audio chunks -> (log time, stamp, mono float32 clip at 16 kHz) per clip."""
    if not dec.audio_chunks:
        return []
    if dec.audio_source == 'audio_common':
        if dec.audio_info is None:
            raise BagError(f'{path}: {T.AUDIO_STAMPED_TOPIC} has no {T.AUDIO_INFO_TOPIC} '
                           'AudioInfo, so the sample format, rate and channels are unknown')
        try:
            frame_bytes = pcm_frame_bytes(dec.audio_info)
        except ValueError as err:
            raise BagError(f'{path}: {T.AUDIO_INFO_TOPIC}: {err}') from err
        rate = int(dec.audio_info.sample_rate)
    else:
        rate, frame_bytes = int(image_rate), 1
    tol_ns = 1e9 / rate    # one sample period

    def is_anchor(stamp: int) -> bool:
        k = np.searchsorted(anchors, stamp)
        near = [anchors[j] for j in (k - 1, k) if 0 <= j < len(anchors)]
        return any(abs(int(a) - stamp) <= tol_ns for a in near)

    runs: List[List[_Chunk]] = []
    expected = None
    for chunk in sorted(dec.audio_chunks, key=lambda c: c.stamp_ns):
        if (not runs or abs(chunk.stamp_ns - expected) > tol_ns or is_anchor(chunk.stamp_ns)):
            runs.append([])
            start = chunk.stamp_ns
            frames = 0.0
        runs[-1].append(chunk)
        frames += chunk.size / frame_bytes     # fractional when a buffer splits a frame
        expected = start + frames * 1e9 / rate

    clips = []
    for run in runs:
        if dec.audio_source == 'audio_common':
            try:
                wave = pcm_bytes_to_array(b''.join(c.payload for c in run), dec.audio_info)
            except ValueError as err:
                raise BagError(f'{path}: audio clip at {run[0].stamp_ns} ns: {err}') from err
        else:
            channels = {c.payload.shape[0] for c in run}
            if len(channels) != 1:
                raise BagError(f'{path}: audio chunks of one clip disagree on channels {channels}')
            wave = np.concatenate([c.payload for c in run], axis=1)
        mono = wave.mean(axis=0).astype(np.float32)
        if rate != SAMPLE_RATE:
            import soxr
            mono = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
        clips.append((run[0].log_ns, run[0].stamp_ns, mono))
    return clips


def _default_slop_ns(anchor_stamps: np.ndarray) -> int:
    """Half the median spacing of the anchor stream (100 ms when it has one distinct stamp)."""
    distinct = np.unique(anchor_stamps)
    if len(distinct) < 2:
        return 100_000_000
    return max(1, int(np.median(np.diff(distinct)) // 2))


def read_bag(path, *, slop_s: Optional[float] = None, queue_size: int = 100,
             audio_rate_hz: int = SAMPLE_RATE) -> BagSamples:
    """Read a bag written by :func:`write_bag` (or recorded live) back into a raw batch.

    ``slop_s`` defaults to half the anchor stream's median period. ``audio_rate_hz`` is the
    rate of Image-carried audio when the bag's metadata does not say (AudioDataStamped audio
    takes its rate from ``AudioInfo``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'bag {path} does not exist')
    custom = {}
    if path.is_dir():
        custom = _bag_metadata(path).get('custom_data') or {}
    dec = _read_messages(path)
    image_rate = int(custom.get(CUSTOM_AUDIO_RATE, audio_rate_hz))

    anchor_stamps = np.array(sorted(s for key in ('rgb', 'depth', 'label')
                                    for _, s, _ in dec.streams.get(key, [])), dtype=np.int64)
    clips = _assemble_clips(dec, anchor_stamps, image_rate, path)
    if clips:
        dec.streams['audio'] = clips
    names = [m for m in MODALITIES if m in dec.streams]
    if not names:
        raise BagError(f'{path} has no {"/".join(T.MODALITY_TOPICS.values())} or '
                       f'{T.AUDIO_STAMPED_TOPIC} messages')
    names += [k for k in ('label', 'corruption') if k in dec.streams]
    anchor = names[0]

    slop_ns = (_default_slop_ns(np.array([s for _, s, _ in dec.streams[anchor]]))
               if slop_s is None else int(round(slop_s * 1e9)))
    matched: List[Tuple[Any, ...]] = []
    sync = ApproxSync(len(names), queue_size, slop_ns, lambda *items: matched.append(items))
    arrivals = sorted((log_ns, k, stamp, value) for k, name in enumerate(names)
                      for log_ns, stamp, value in _with_index(dec.streams[name]))
    for _, k, stamp, value in arrivals:
        sync.add(k, stamp, (stamp, value[1]))
    if not matched:
        raise BagError(f'{path}: no synchronised samples across {names} with slop '
                       f'{slop_ns / 1e9:.4g} s (messages: '
                       f'{ {n: len(dec.streams[n]) for n in names} })')
    matched.sort(key=lambda items: items[0][0])

    batch = _stack(names, [[value for _, value in items] for items in matched], path)
    stamps = np.array([items[0][0] for items in matched], dtype=np.int64)
    unmatched = {n: len(dec.streams[n]) - len(matched) for n in names}
    return BagSamples(batch=batch, stamps_ns=stamps, class_names=_class_names(custom, dec),
                      anchor=anchor, unmatched=unmatched)


def _with_index(items):
    """Attach an arrival index so sorting never compares payloads."""
    for idx, (log_ns, stamp, value) in enumerate(items):
        yield log_ns, stamp, (idx, value)


def _stack(names: List[str], rows: List[List[Any]], path: Path) -> RawBatch:
    batch: RawBatch = {}
    for k, name in enumerate(names):
        column = [row[k] for row in rows]
        if name in ('rgb', 'depth'):
            shapes = {c.shape for c in column}
            if len(shapes) != 1:
                raise BagError(f'{path}: {name} frames differ in size: {sorted(shapes)}')
            batch[name] = np.stack(column)
        elif name == 'audio':
            longest = max(len(c) for c in column)
            out = np.zeros((len(column), longest), np.float32)
            for i, c in enumerate(column):
                out[i, :len(c)] = c
            batch['audio'] = out
        elif name == 'label':
            batch['label'] = np.array(column, dtype=np.int64)
        elif name == 'corruption':
            batch.update(_corruption_labels(column, path))
    return batch


def _corruption_labels(levels: List[Dict[str, Tuple[str, float]]], path: Path) -> RawBatch:
    from admn_ros.datasets.corruptions import CORRUPTION_TYPES

    modalities = [m for m in MODALITIES if any(m in lv for lv in levels)]
    unknown = {name for lv in levels for name in lv} - set(MODALITIES)
    if unknown:
        raise BagError(f'{path}: corruption statuses for unknown modalities {sorted(unknown)}')
    out: RawBatch = {}
    for m in modalities:
        types = CORRUPTION_TYPES[m]
        sev = np.zeros(len(levels), np.float32)
        codes = np.zeros(len(levels), np.int64)
        for i, lv in enumerate(levels):
            ctype, severity = lv.get(m, ('clean', 0.0))
            if ctype not in types:
                raise BagError(f'{path}: unknown {m} corruption {ctype!r}; known: {types}')
            codes[i], sev[i] = types.index(ctype), severity
        out[f'severity_{m}'] = sev
        out[f'ctype_{m}'] = codes
    return out


def _class_names(custom: Dict[str, Any], dec: _Decoded) -> List[str]:
    if CUSTOM_CLASS_NAMES in custom:
        return [str(c) for c in json.loads(custom[CUSTOM_CLASS_NAMES])]
    if not dec.label_names:
        return []
    return [dec.label_names.get(i, str(i)) for i in range(max(dec.label_names) + 1)]
