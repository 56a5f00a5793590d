"""rosbag2 recording and replay of raw batches with ``rosbags`` (no ROS install needed).

**Layout written by** :func:`write_bag` (topics, encodings and messages from
:mod:`admn_ros.datasets.ros_messages`, the encoders the nodes publish with):
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
first stream). A continuous microphone stream (one long clip) is windowed per frame only with
``read_bag(audio_window=...)``, as a live node windows it; ``topics=`` reads a bag whose streams
have other topic names (a robot's camera on ``/camera/image_raw``, say). :func:`read_streams` gives
the decoded streams and assembled audio before that matching (``admn data from-bag`` picks its
own samples from them).

Errors: a missing bag is ``FileNotFoundError``; a directory without ``metadata.yaml``, a
truncated or garbled storage file, or an MCAP checksum that does not match
(:mod:`admn_ros.datasets.mcap_crc`; written bags are sealed with them) raise :class:`BagError` (a
``ValueError``) naming the bag. A single message that does not decode is counted per topic
(``BagSamples.undecodable``) and the rest is read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from admn_ros.datasets import ros_messages as wire
from admn_ros.datasets.ros_messages import topics as T
from admn_ros.datasets.ros_messages.typestore import bag_messages, make_typestore
from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE, RawBatch, batch_size, present_modalities
from admn_ros.datasets.sync import ApproxSync

# (stamp_ns, the sample's arrays) -> (topic, msgtype, message) records to log with the sample
OutputHook = Callable[[int, Mapping[str, np.ndarray]], Iterable[Tuple[str, str, Any]]]

DEFAULT_START_NS = 1_700_000_000_000_000_000   # fixed, so written bags are reproducible
STORAGES = ('mcap', 'sqlite3')
CUSTOM_CLASS_NAMES = 'admn_ros.class_names'
CUSTOM_AUDIO_RATE = 'admn_ros.audio_sample_rate'
CUSTOM_RATE_HZ = 'admn_ros.rate_hz'
CUSTOM_DATASET = 'admn_ros.dataset'     # written by `admn bag record`: whose default model fits


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
    undecodable: Dict[str, int] = field(default_factory=dict)  # messages that did not decode, per topic
    recorded: Dict[str, int] = field(default_factory=dict)  # messages in the bag, per stream
    broken: Dict[str, int] = field(default_factory=dict)    # of those, undecodable, per stream
    period_ns: int = 0                                      # the recording's sample period

    def mostly_undecodable(self, streams: Sequence[str]) -> List[str]:
        """Those of ``streams`` recorded in the bag whose messages mostly (over half) did not
        decode, each as ``'<stream> <broken> of <recorded> undecodable'``."""
        return [f'{k} {self.broken[k]} of {self.recorded[k]} undecodable' for k in streams
                if self.recorded.get(k) and 2 * self.broken.get(k, 0) > self.recorded[k]]


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


def is_bag(path) -> bool:
    """Whether ``path`` is a rosbag2 recording: an ``.mcap`` or ``.db3`` file, or a folder with a
    ``metadata.yaml`` or such files (what ``admn data check`` and ``admn pretrain`` accept)."""
    path = Path(path)
    if path.is_file():
        return path.suffix in ('.mcap', '.db3')
    return path.is_dir() and ((path / 'metadata.yaml').is_file() or any(path.glob('*.mcap'))
                              or any(path.glob('*.db3')))


def write_bag(path, batch, *, class_names: Optional[Sequence[str]] = None, rate_hz: float = 10.0,
              storage: str = 'mcap', start_ns: int = DEFAULT_START_NS,
              audio_chunk: Optional[int] = None, depth_encoding: str = T.DEPTH_ENCODING,
              audio_encoding: str = T.AUDIO_ENCODING,
              metadata: Optional[Mapping[str, str]] = None,
              outputs: Optional[OutputHook] = None) -> Path:
    """Record a raw batch (or a ``LoadedDataset``) as a rosbag2 directory at ``path``.

    ``outputs(stamp_ns, sample)`` (``sample``: modality -> that sample's array, as recorded)
    returns ``(topic, msgtype, rosbags message)`` records logged at the sample's stamp after its
    inputs: admn_fusion's outputs (:func:`admn_ros.bag_tools.fusion_output_hook`).

    ``class_names`` defaults to the dataset's, else ``str(class_id)``. ``depth_encoding`` is
    ``32FC1`` (metres) or ``16UC1`` (millimetres); ``audio_encoding`` ``16SC1`` or ``32FC1``.
    ``metadata`` goes into the bag's ``custom_data`` too (:func:`bag_custom_data` reads it).
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
    bag = bag_messages()
    # (log time, order of writing, topic, message type, message)
    records: List[Tuple[int, int, str, str, Any]] = []

    def add(t_ns: int, topic: str, msgtype: str, msg: Any) -> None:
        records.append((t_ns, len(records), topic, msgtype, msg))

    for i, t in enumerate(stamps):
        if 'rgb' in batch:
            add(t, T.RGB_TOPIC, T.IMAGE_TYPE, wire.rgb_msg(batch['rgb'][i], t, flavour=bag))
        if 'depth' in batch:
            add(t, T.DEPTH_TOPIC, T.IMAGE_TYPE, wire.depth_msg(
                batch['depth'][i], t, encoding=depth_encoding, flavour=bag))
        if 'audio' in batch:
            clip = batch['audio'][i]
            step = int(audio_chunk) if audio_chunk is not None else max(clip_len, 1)
            for start in range(0, max(clip_len, 1), step):
                t_chunk = t + int(round(start * 1e9 / SAMPLE_RATE))
                add(t_chunk, T.AUDIO_TOPIC, T.IMAGE_TYPE, wire.audio_msg(
                    clip[start:start + step], t_chunk, encoding=audio_encoding, flavour=bag))
        if labels is not None:
            c = int(labels[i])
            add(t, T.LABEL_TOPIC, T.DIAGNOSTIC_ARRAY_TYPE,
                wire.label_msg(t, c, class_names[c], flavour=bag))
        if corruption:
            levels = {m: (corruption[m][i], float(batch[f'severity_{m}'][i]))
                      for m in MODALITIES if m in corruption}
            add(t, T.CORRUPTION_TOPIC, T.DIAGNOSTIC_ARRAY_TYPE,
                wire.corruption_msg(t, levels, flavour=bag))
        if outputs is not None:
            for topic, msgtype, msg in outputs(t, {m: batch[m][i] for m in present}):
                add(t, topic, msgtype, msg)
    records.sort(key=lambda r: (r[0], r[1]))

    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    try:
        writer = Writer(path, version=9, storage_plugin=plugin)
        writer.set_custom_data(CUSTOM_CLASS_NAMES, json.dumps(class_names))
        writer.set_custom_data(CUSTOM_AUDIO_RATE, str(SAMPLE_RATE))
        writer.set_custom_data(CUSTOM_RATE_HZ, repr(float(rate_hz)))
        for key, value in (metadata or {}).items():
            writer.set_custom_data(str(key), str(value))
        with writer:
            connections = {}
            for t_ns, _, topic, msgtype, msg in records:
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
                writer.write(connections[topic], t_ns, store.serialize_cdr(msg, msgtype))
    except WriterError as err:
        raise BagError(f'cannot write bag {path}: {err}') from err
    if storage == 'mcap':
        from admn_ros.datasets.mcap_crc import seal_bag
        seal_bag(path)   # rosbags leaves the CRCs 0: fill them in so readers can verify
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
    undecodable: Dict[str, int] = field(default_factory=dict)   # recorded topic -> messages
    recorded: Dict[str, int] = field(default_factory=dict)      # stream -> messages in the bag
    broken: Dict[str, int] = field(default_factory=dict)        # stream -> undecodable messages

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
    from admn_ros.datasets.validate import safe_load
    try:
        meta = safe_load(meta_path.read_text(encoding='utf8'))
        return dict(meta['rosbag2_bagfile_information'])
    except Exception as err:   # malformed YAML or missing top-level key
        raise BagError(f'{meta_path} is not valid rosbag2 metadata: {err}') from err


def _custom_data(meta: Mapping[str, Any]) -> Dict[str, str]:
    return {str(k): str(v) for k, v in (meta.get('custom_data') or {}).items()}


def bag_custom_data(path) -> Dict[str, str]:
    """The bag's ``custom_data`` metadata (``{}`` when it has none)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'bag {path} does not exist')
    return _custom_data(_bag_metadata(path))


# Streams whose topic a foreign bag may name differently, and the names written here.
STREAM_TOPICS = {'rgb': T.RGB_TOPIC, 'depth': T.DEPTH_TOPIC, 'audio': T.AUDIO_TOPIC,
                 'audio_info': T.AUDIO_INFO_TOPIC, 'label': T.LABEL_TOPIC,
                 'corruption': T.CORRUPTION_TOPIC}


# The stream each topic (as named here, after renames) feeds: counts of recorded and undecodable
# messages are kept per stream, whatever the bag called the topic.
_TOPIC_STREAMS = {**{t: k for k, t in STREAM_TOPICS.items()}, T.AUDIO_STAMPED_TOPIC: 'audio'}


def topic_renames(topics: Mapping[str, str], recorded: Mapping[str, str]) -> Dict[str, str]:
    """``{recorded topic: topic name used here}`` for the streams a foreign bag names otherwise.

    ``topics`` maps stream keys (:data:`STREAM_TOPICS`) to the bag's names (empty = keep);
    ``recorded`` is the bag's ``{topic: message type}``. Audio recorded as an Image goes to
    the Image audio topic, anything else to the ``AudioDataStamped`` one.
    """
    out = {}
    for key, topic in topics.items():
        if key not in STREAM_TOPICS:
            raise ValueError(f'unknown stream {key!r}; streams: {sorted(STREAM_TOPICS)}')
        if not topic:
            continue
        topic = '/' + str(topic).lstrip('/')
        if topic not in recorded:
            raise BagError(f'{key} topic {topic} is not in the bag; its topics: {sorted(recorded)}')
        target = STREAM_TOPICS[key]
        if key == 'audio' and recorded[topic] != T.IMAGE_TYPE:
            target = T.AUDIO_STAMPED_TOPIC
        out[topic] = target
    return out


def _decode_message(dec: _Decoded, store, topic: str, msgtype: str, log_ns: int, raw) -> None:
    if topic in (T.RGB_TOPIC, T.DEPTH_TOPIC) and msgtype == T.IMAGE_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        arr = wire.read_image(msg)
        if topic == T.RGB_TOPIC:
            if arr.ndim != 3:
                raise ValueError(f'{topic} carries {msg.encoding}, not a colour image')
            key = 'rgb'
        else:
            if msg.encoding not in ('32FC1', '16UC1'):
                raise ValueError(f'{topic} carries {msg.encoding}; depth must be 32FC1 or 16UC1')
            key = 'depth'
            arr = arr.astype(np.float32)
        dec.streams.setdefault(key, []).append((log_ns, wire.header_stamp_ns(msg), arr))
    elif topic == T.AUDIO_TOPIC and msgtype == T.IMAGE_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        wave = wire.audio_from_image(msg)
        dec.image_audio.append(_Chunk(log_ns, wire.header_stamp_ns(msg), wave.shape[1], wave))
    elif topic == T.AUDIO_STAMPED_TOPIC and msgtype == T.AUDIO_STAMPED_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        data = np.asarray(msg.audio.data, dtype=np.uint8).tobytes()
        dec.stamped_audio.append(_Chunk(log_ns, wire.header_stamp_ns(msg), len(data), data))
    elif topic == T.AUDIO_INFO_TOPIC and msgtype == T.AUDIO_INFO_TYPE:
        info = store.deserialize_cdr(raw, msgtype)
        before = None if dec.audio_info is None else wire.audio_info_key(dec.audio_info)
        if before is not None and wire.audio_info_key(info) != before:
            raise ValueError(f'{topic} changes format mid-bag: {before} '
                             f'then {wire.audio_info_key(info)}')
        dec.audio_info = info
    elif topic == T.LABEL_TOPIC and msgtype == T.DIAGNOSTIC_ARRAY_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        class_id, name = wire.read_label(msg)
        if name:
            dec.label_names[class_id] = name
        dec.streams.setdefault('label', []).append((log_ns, wire.header_stamp_ns(msg), class_id))
    elif topic == T.CORRUPTION_TOPIC and msgtype == T.DIAGNOSTIC_ARRAY_TYPE:
        msg = store.deserialize_cdr(raw, msgtype)
        levels = wire.read_corruption(msg)
        dec.streams.setdefault('corruption', []).append((log_ns, wire.header_stamp_ns(msg), levels))


def _read_messages(path: Path, topics: Optional[Mapping[str, str]] = None) -> _Decoded:
    from rosbags.rosbag2 import Reader

    from admn_ros.datasets.mcap_crc import McapCrcError, verify_bag
    try:
        verify_bag(path)   # a flipped byte in an MCAP file is refused before anything is read
    except McapCrcError as err:
        raise BagError(str(err)) from None
    store = make_typestore()
    dec = _Decoded()
    try:
        with Reader(path) as reader:
            renames = topic_renames(topics or {}, {t: i.msgtype for t, i in reader.topics.items()})
            known = set(STREAM_TOPICS.values()) | {T.AUDIO_STAMPED_TOPIC}
            # A mapped topic replaces the bag's own stream of that name; other topics are skipped
            # unread (a robot's bag holds much this model does not use).
            wanted = {c.id: renames.get(c.topic, c.topic) for c in reader.connections
                      if c.topic in renames or (c.topic in known - set(renames.values()))}
            conns = [c for c in reader.connections if c.id in wanted]
            # rosbags reads every connection when given none: nothing wanted, nothing read.
            for conn, log_ns, raw in reader.messages(connections=conns) if conns else ():
                stream = _TOPIC_STREAMS.get(wanted[conn.id])
                if stream:
                    dec.recorded[stream] = dec.recorded.get(stream, 0) + 1
                try:
                    _decode_message(dec, store, wanted[conn.id], conn.msgtype, int(log_ns), raw)
                except BagError:
                    raise
                except Exception:   # one bad message: counted per topic, the rest still read
                    dec.undecodable[conn.topic] = dec.undecodable.get(conn.topic, 0) + 1
                    if stream:
                        dec.broken[stream] = dec.broken.get(stream, 0) + 1
    except BagError:
        raise
    except Exception as err:   # rosbags ReaderError, sqlite3/struct errors, bad fields
        raise BagError(f'cannot read bag {path} (truncated or corrupt?): '
                       f'{type(err).__name__}: {err}') from err
    return dec


def _assemble_clips(dec: _Decoded, anchors: np.ndarray, image_rate: int, path: Path,
                    window: Optional[int] = None) -> List[Tuple[int, int, np.ndarray]]:
    """Audio chunks -> (log time, stamp, mono float32 clip at 16 kHz) per clip, or with
    ``window`` per chunk: the last ``window`` samples of its run up to its end."""
    if not dec.audio_chunks:
        return []
    if dec.audio_source == 'audio_common':
        if dec.audio_info is None:
            raise BagError(f'{path}: {T.AUDIO_STAMPED_TOPIC} has no {T.AUDIO_INFO_TOPIC} '
                           'AudioInfo, so the sample format, rate and channels are unknown')
        try:
            frame_bytes = wire.pcm_frame_bytes(dec.audio_info)
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
        # A live node's rolling window does not cut at frame stamps: with a window, neither here.
        if (not runs or abs(chunk.stamp_ns - expected) > tol_ns
                or (window is None and is_anchor(chunk.stamp_ns))):
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
                wave = wire.pcm_bytes_to_array(b''.join(c.payload for c in run), dec.audio_info)
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
        if window is None:
            clips.append((run[0].log_ns, run[0].stamp_ns, mono))
            continue
        frames = 0.0
        for chunk in run:
            frames += chunk.size / frame_bytes
            end = min(len(mono), int(round(int(frames) * SAMPLE_RATE / rate)))
            clips.append((chunk.log_ns, chunk.stamp_ns, mono[max(0, end - int(window)):end]))
    return clips


# Streams whose message stamps end an audio clip when no rolling window is asked for.
CLIP_CUT_STREAMS = ('rgb', 'depth', 'label')


@dataclass
class BagStreams:
    """A bag's decoded streams before synchronisation (:func:`read_streams`).

    ``streams`` maps each stream the bag holds - ``rgb`` (uint8 HxWx3), ``depth`` (float32 HxW,
    metres), ``audio`` (mono float32 at 16 kHz), ``label`` (class id) and ``corruption``
    (``{modality: (type, severity)}``) - to its messages as ``(log time ns, header stamp ns,
    value)``: decoded streams in the order read, audio clips (or windows) by stamp.
    """

    streams: Dict[str, List[Tuple[int, int, Any]]]
    custom_data: Dict[str, str]            # the bag's custom metadata ({} when it has none)
    start_ns: int                          # the bag's starting time (0 when unknown)
    label_names: Dict[int, str]            # class id -> name carried by label messages
    undecodable: Dict[str, int]            # recorded topic -> messages that did not decode
    recorded: Dict[str, int] = field(default_factory=dict)  # stream -> messages in the bag
    broken: Dict[str, int] = field(default_factory=dict)    # stream -> messages that did not decode

    def class_names(self, *, every_label_id: bool = False) -> List[str]:
        """The list in the bag's metadata, else the names label messages carried, indexed by
        class id (an id with no name is named ``str(id)``). ``every_label_id`` also covers the
        ids of label messages that carried no name, up to the largest id recorded."""
        if CUSTOM_CLASS_NAMES in self.custom_data:
            return [str(c) for c in json.loads(self.custom_data[CUSTOM_CLASS_NAMES])]
        ids = set(self.label_names)
        if every_label_id:
            ids |= {v for _, _, v in self.streams.get('label', [])}
        return [self.label_names.get(i, str(i)) for i in range(max(ids) + 1)] if ids else []


def read_streams(path, *, topics: Optional[Mapping[str, str]] = None,
                 audio_rate_hz: int = SAMPLE_RATE, audio_window: Optional[int] = None) -> BagStreams:
    """Decode the streams of the bag at ``path`` and assemble its audio, without matching them.

    The MCAP checksums are verified first; errors are those of :func:`read_bag`. ``topics`` names
    the streams of a bag that uses other topics (:func:`topic_renames`); ``audio_rate_hz`` is the
    rate of Image-carried audio when the bag's metadata does not say. Without ``audio_window``
    audio chunks are joined into clips, a clip ending where a gap opens or an RGB, depth or label
    message is stamped; with it, every audio message gives the last ``audio_window`` samples
    (16 kHz) of its contiguous run up to its end, as a live node's rolling window does.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'bag {path} does not exist')
    meta = _bag_metadata(path) if path.is_dir() else {}
    custom = _custom_data(meta)
    dec = _read_messages(path, topics)
    image_rate = int(custom.get(CUSTOM_AUDIO_RATE, audio_rate_hz))
    cuts = np.array(sorted(s for key in CLIP_CUT_STREAMS for _, s, _ in dec.streams.get(key, [])),
                    dtype=np.int64)
    clips = _assemble_clips(dec, cuts, image_rate, path, audio_window)
    streams = dict(dec.streams)
    if clips:
        streams['audio'] = clips
    start_ns = int((meta.get('starting_time') or {}).get('nanoseconds_since_epoch', 0))
    return BagStreams(streams=streams, custom_data=custom, start_ns=start_ns,
                      label_names=dict(dec.label_names), undecodable=dict(dec.undecodable),
                      recorded=dict(dec.recorded), broken=dict(dec.broken))


def _median_spacing_ns(stamps) -> Optional[int]:
    distinct = np.unique(np.asarray(stamps, dtype=np.int64))
    return int(np.median(np.diff(distinct))) if len(distinct) >= 2 else None


def _sample_period_ns(bag: BagStreams, anchor: str) -> int:
    """The recording's sample period: the rate its metadata names (``admn bag record``), else the
    smaller median stamp spacing of the anchor and the label stream (200 ms when neither has two
    distinct stamps). The label stream counts because undecodable frames thin the anchor out: a
    camera with most frames broken must not widen the matching until labels pair with other
    samples' frames."""
    rate = bag.custom_data.get(CUSTOM_RATE_HZ)
    try:
        if rate is not None and float(rate) > 0:
            return max(1, int(round(1e9 / float(rate))))
    except ValueError:
        pass
    spacings = [_median_spacing_ns([s for _, s, _ in bag.streams[k]])
                for k in (anchor, 'label') if k in bag.streams]
    spacings = [d for d in spacings if d]
    return min(spacings) if spacings else 200_000_000


def read_bag(path, *, slop_s: Optional[float] = None, queue_size: int = 100,
             audio_rate_hz: int = SAMPLE_RATE, topics: Optional[Mapping[str, str]] = None,
             audio_window: Optional[int] = None) -> BagSamples:
    """Read a bag written by :func:`write_bag` (or recorded live) back into a raw batch.

    ``slop_s`` defaults to half the recording's sample period (:func:`_sample_period_ns`), so a
    label never pairs with a frame of another sample. ``audio_rate_hz`` is the
    rate of Image-carried audio when the bag's metadata does not say (AudioDataStamped audio
    takes its rate from ``AudioInfo``). ``topics`` names the streams of a bag that uses other
    topics (:func:`topic_renames`). ``audio_window`` (samples at 16 kHz) cuts audio as a live
    node's rolling window does: every audio message gives the last ``audio_window`` samples of
    its contiguous run up to its end, stamped like the message, and those windows are matched
    with the other streams - so a continuous microphone stream gives one clip per frame, and a
    bag of whole per-sample clips gives each clip (its last ``audio_window`` samples).
    """
    path = Path(path)
    bag = read_streams(path, topics=topics, audio_rate_hz=audio_rate_hz, audio_window=audio_window)
    streams = bag.streams
    names = [m for m in MODALITIES if m in streams]
    if not names:
        recorded = {m: bag.recorded[m] for m in MODALITIES if bag.recorded.get(m)}
        if recorded:
            raise BagError(f'{path}: none of its {sum(recorded.values())} camera/depth/audio '
                           'messages decodes (' + ', '.join(
                               f'{m} {bag.broken.get(m, 0)} of {n} undecodable'
                               for m, n in recorded.items()) + ')')
        raise BagError(f'{path} has no {"/".join(T.MODALITY_TOPICS.values())} or '
                       f'{T.AUDIO_STAMPED_TOPIC} messages')
    names += [k for k in ('label', 'corruption') if k in streams]
    anchor = names[0]

    period_ns = _sample_period_ns(bag, anchor)
    slop_ns = max(1, period_ns // 2) if slop_s is None else int(round(slop_s * 1e9))
    matched: List[Tuple[Any, ...]] = []
    sync = ApproxSync(len(names), queue_size, slop_ns, lambda *items: matched.append(items))
    arrivals = sorted((log_ns, k, stamp, value) for k, name in enumerate(names)
                      for log_ns, stamp, value in _with_index(streams[name]))
    for _, k, stamp, value in arrivals:
        sync.add(k, stamp, (stamp, value[1]))
    if not matched:
        raise BagError(f'{path}: no synchronised samples across {names} with slop '
                       f'{slop_ns / 1e9:.4g} s (messages: '
                       f'{ {n: len(streams[n]) for n in names} })')
    matched.sort(key=lambda items: items[0][0])

    batch = _stack(names, [[value for _, value in items] for items in matched], path)
    stamps = np.array([items[0][0] for items in matched], dtype=np.int64)
    unmatched = {n: len(streams[n]) - len(matched) for n in names}
    return BagSamples(batch=batch, stamps_ns=stamps, class_names=bag.class_names(),
                      anchor=anchor, unmatched=unmatched, undecodable=dict(bag.undecodable),
                      recorded=dict(bag.recorded), broken=dict(bag.broken), period_ns=period_ns)


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
