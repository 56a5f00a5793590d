"""The folder format for users' own recordings: one directory per sample.

::

    <root>/
      classes.txt                  one class name per line (line i = class index i)
      <split>/                     e.g. train, val, test
        <record>/                  any name; records load in sorted name order
          rgb.png | rgb.jpg        colour image (grey or RGBA images become RGB)
          depth.png | depth.npy    16-bit PNG in millimetres (0 = invalid), or float32 metres
                                   (NaN = invalid)
          audio.wav                any rate / channel count / sample format
          label.txt                class name or index (one line)
          meta.yaml                optional: label, per-modality condition tags, source

``meta.yaml``::

    label: dog                    # class name or index (may replace label.txt)
    conditions:                   # optional ground-truth corruption tags
      rgb: {type: low_light, severity: 0.5}
    source: robot_2               # optional: where the record came from (leave-one-source-out)

Loading rules (:func:`load_folder`):

- Every record of a split must hold the same modalities, and either all records or none have a
  label; otherwise ValueError naming the first record that differs. A record with both
  ``rgb.png`` and ``rgb.jpg`` (or both depth files) is ambiguous and rejected.
- Images (and depth maps) of different sizes are resized to the first record's size: area
  interpolation for RGB, nearest neighbour for depth so invalid pixels never blend into valid.
- Audio is mixed down to mono (channel mean) and resampled to 16 kHz with soxr. Clips shorter
  than the split's longest are zero-padded at the end; pass ``clip_seconds`` to centre-crop /
  pad every clip to a fixed length instead.
- Condition types must be names from ``datasets.corruptions.CORRUPTION_TYPES`` with severity in
  [0, 1]; they become ``severity_<m>`` / ``ctype_<m>`` labels. Records without a tag for a
  modality that others tag count as clean.

:func:`write_folder` writes the same layout (PNG images, 16-bit PNG or ``.npy`` depth, 16-bit
PCM WAV at 16 kHz, ``label.txt``, conditions in ``meta.yaml``), for exports and round trips.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import soundfile as sf
import soxr
import yaml

from admn_ros.datasets.validate import safe_load
from admn_ros.datasets.avdigits import fit_clip
from admn_ros.datasets.corruptions import CORRUPTION_TYPES, corruption_labels
from admn_ros.datasets.preprocess import shrink_to_input
from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE, RawBatch, batch_size, present_modalities
from admn_ros.datasets.ros_messages.image_codec import depth_to_mm

CLASSES_FILE = 'classes.txt'
_RGB_FILES = ('rgb.png', 'rgb.jpg')
_DEPTH_FILES = ('depth.png', 'depth.npy')
_AUDIO_FILE = 'audio.wav'


# --------------------------------------------------------------------------------------------
# Reading one record
# --------------------------------------------------------------------------------------------

def _one_of(record: Path, names: Sequence[str]) -> Optional[Path]:
    found = [record / n for n in names if (record / n).is_file()]
    if len(found) > 1:
        raise ValueError(f'record {record} has {" and ".join(p.name for p in found)}; '
                         'keep only one')
    return found[0] if found else None


def read_rgb(path: Path) -> np.ndarray:
    """An image file -> uint8 ``[H, W, 3]`` RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)   # grey / RGBA / 16-bit become 8-bit BGR
    if img is None:
        raise ValueError(f'cannot decode image {path}')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_depth(path: Path) -> np.ndarray:
    """``depth.png`` (uint16 mm, 0 invalid) or ``depth.npy`` (float metres) -> float32 metres."""
    if path.suffix == '.npy':
        depth = np.load(path, allow_pickle=False)
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
            raise ValueError(f'{path} must hold a 2-D float array in metres, '
                             f'got {depth.dtype} {depth.shape}')
        return depth.astype(np.float32)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f'cannot decode depth image {path}')
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f'{path} must be a single-channel 16-bit PNG in millimetres, '
                         f'got {raw.dtype} with shape {raw.shape}')
    depth = raw.astype(np.float32) * np.float32(0.001)
    depth[raw == 0] = np.nan
    return depth


def read_audio(path: Path) -> np.ndarray:
    """Any WAV (rate, channels, format) -> mono float32 at 16 kHz; a WAV whose sample data is
    shorter than its header says is refused (libsndfile would silently return what is there)."""
    problem = wav_truncation(path)
    if problem:
        raise ValueError(f'cannot decode audio {path}: {problem}')
    try:
        wave, rate = sf.read(str(path), dtype='float32', always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        raise ValueError(f'cannot decode audio {path}: {err}') from err
    mono = wave.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.asarray(mono, dtype=np.float32)


def wav_truncation(path) -> Optional[str]:
    """Why a RIFF/WAVE file is truncated (its ``data`` chunk declares more bytes than the file
    holds), or None; None too for files that are not RIFF/WAVE (soundfile judges those)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, 'rb') as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b'RIFF', b'RIFX') or head[8:12] != b'WAVE':
            return None
        order = '<' if head[:4] == b'RIFF' else '>'
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, length = struct.unpack(order + '4sI', f.read(8))
            if chunk_id == b'data':
                held = size - offset - 8
                if length != 0xFFFFFFFF and length > held:   # 0xFFFFFFFF: a stream of unknown length
                    return (f'truncated: the header declares {length} bytes of samples, the file '
                            f'holds {held}')
                return None
            offset += 8 + length + (length & 1)
    return 'truncated: no data chunk before the end of the file'


def _parse_label(value: Any, class_names: List[str], where: str) -> int:
    """A class name or index (int or digit string) -> index."""
    if isinstance(value, bool):
        raise ValueError(f'{where}: label {value!r} is neither a class name nor an index')
    if isinstance(value, (int, np.integer)):
        index = int(value)
    else:
        text = str(value).strip()
        if text in class_names:
            return class_names.index(text)
        if not text.lstrip('-').isdigit():
            raise ValueError(f'{where}: unknown class {text!r}; classes.txt lists {class_names}')
        index = int(text)
    if not 0 <= index < len(class_names):
        raise ValueError(f'{where}: class index {index} out of range for {len(class_names)} '
                         'classes in classes.txt')
    return index


def _read_meta(record: Path) -> Dict[str, Any]:
    path = record / 'meta.yaml'
    if not path.is_file():
        return {}
    try:
        meta = safe_load(path.read_text(encoding='utf8'))
    except yaml.YAMLError as err:
        raise ValueError(f'{path} is not valid YAML: {err}') from err
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ValueError(f'{path} must hold a mapping (label, conditions, source)')
    unknown = set(meta) - {'label', 'conditions', 'source'}
    if unknown:
        raise ValueError(f'{path}: unknown keys {sorted(unknown)}; allowed: label, conditions, source')
    return meta


def folder_sources(path, split: str) -> np.ndarray:
    """Each record's ``source`` (meta.yaml) in :func:`load_folder`'s order; ValueError naming
    the first record without one."""
    split_dir = Path(path) / split
    names = []
    for record in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        source = _read_meta(record).get('source')
        if source is None or not str(source).strip():
            raise ValueError(f'{record} names no source: leave-one-source-out needs `source` in '
                             'every record\'s meta.yaml')
        names.append(str(source).strip())
    return np.array(names)


def _parse_conditions(conditions: Any, where: str) -> Dict[str, Tuple[int, float]]:
    """``{modality: {type, severity}}`` -> ``{modality: (ctype index, severity)}``."""
    if conditions is None:
        return {}
    if not isinstance(conditions, dict):
        raise ValueError(f'{where}: conditions must map modality -> {{type, severity}}')
    out = {}
    for m, tag in conditions.items():
        if m not in MODALITIES:
            raise ValueError(f'{where}: condition for unknown modality {m!r}; known: {MODALITIES}')
        if not isinstance(tag, dict) or 'type' not in tag:
            raise ValueError(f'{where}: condition for {m} needs a type (and a severity)')
        extra = set(tag) - {'type', 'severity'}
        if extra:
            raise ValueError(f'{where}: condition for {m} has unknown keys {sorted(extra)}')
        ctype = str(tag['type'])
        if ctype not in CORRUPTION_TYPES[m]:
            raise ValueError(f'{where}: unknown {m} condition type {ctype!r}; '
                             f'known: {CORRUPTION_TYPES[m]}')
        if 'severity' not in tag:
            if ctype != 'clean':
                raise ValueError(f'{where}: condition {m}/{ctype} needs a severity in [0, 1]')
            tag = dict(tag, severity=0.0)
        severity = tag['severity']
        if isinstance(severity, bool) or not isinstance(severity, (int, float)) \
                or not 0.0 <= float(severity) <= 1.0:
            raise ValueError(f'{where}: {m} severity must be a number in [0, 1], got {severity!r}')
        if ctype == 'clean' and float(severity) != 0.0:
            raise ValueError(f"{where}: {m} type 'clean' needs severity 0")
        # Severity 0 is clean whatever the type, as apply_corruption labels it.
        out[m] = (CORRUPTION_TYPES[m].index(ctype) if float(severity) > 0 else 0, float(severity))
    return out


def read_classes(root: Path) -> List[str]:
    """``<root>/classes.txt`` -> class names (blank lines ignored, names unique)."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        return []
    names = [line.strip() for line in path.read_text(encoding='utf8').splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f'{path} lists a class name twice')
    return names


def _read_record(record: Path, class_names: List[str]) -> Dict[str, Any]:
    """Everything in one record: modality arrays, optional label and conditions."""
    sample: Dict[str, Any] = {}
    rgb = _one_of(record, _RGB_FILES)
    if rgb is not None:
        sample['rgb'] = read_rgb(rgb)
    depth = _one_of(record, _DEPTH_FILES)
    if depth is not None:
        sample['depth'] = read_depth(depth)
    if (record / _AUDIO_FILE).is_file():
        sample['audio'] = read_audio(record / _AUDIO_FILE)

    meta = _read_meta(record)
    given = []   # (source, raw label)
    if (record / 'label.txt').is_file():
        text = (record / 'label.txt').read_text(encoding='utf8').strip()
        if not text:
            raise ValueError(f'{record / "label.txt"} is empty')
        given.append(('label.txt', text))
    if 'label' in meta:
        given.append(('meta.yaml', meta['label']))
    if given:
        if not class_names:
            raise ValueError(f'{record} has a label but {CLASSES_FILE} is missing or empty')
        indices = {_parse_label(value, class_names, f'{record / src}') for src, value in given}
        if len(indices) > 1:
            raise ValueError(f'{record}: label.txt and meta.yaml disagree '
                             f'({given[0][1]!r} vs {given[1][1]!r})')
        sample['label'] = indices.pop()
    sample['conditions'] = _parse_conditions(meta.get('conditions'), str(record))
    return sample


# --------------------------------------------------------------------------------------------
# Reading a split
# --------------------------------------------------------------------------------------------

def _resize_to(arr: np.ndarray, shape: Tuple[int, int], interpolation: int) -> np.ndarray:
    if arr.shape[:2] == tuple(shape):
        return arr
    return cv2.resize(arr, (shape[1], shape[0]), interpolation=interpolation)


def load_folder(path, split: str, *, clip_seconds: Optional[float] = None,
                image_size: Optional[int] = None) -> Tuple[RawBatch, List[str]]:
    """Load ``<path>/<split>/*/`` into a raw batch; returns ``(batch, class_names)``.

    ``image_size``: resize on load - every image larger than that is centre-cropped and shrunk
    to ``image_size`` squared as it is read, as the preprocessing would do later
    (:func:`admn_ros.datasets.preprocess.shrink_to_input`)."""
    root = Path(path)
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f'no split folder {split_dir}')
    records = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not records:
        raise ValueError(f'split folder {split_dir} holds no record folders')
    class_names = read_classes(root)

    samples = []
    for record in records:
        sample = _read_record(record, class_names)
        if image_size:
            for m in ('rgb', 'depth'):
                if m in sample:
                    sample[m] = shrink_to_input(sample[m], int(image_size), m)
        mods = tuple(m for m in MODALITIES if m in sample)
        if not mods:
            raise ValueError(f'record {record} has no rgb, depth or audio file')
        if samples:
            first_mods = tuple(m for m in MODALITIES if m in samples[0])
            if mods != first_mods:
                raise ValueError(f'record {record} has modalities {mods} but {records[0].name} '
                                 f'has {first_mods}; all records of a split must match')
            if ('label' in sample) != ('label' in samples[0]):
                raise ValueError(f'record {record} {"has" if "label" in sample else "lacks"} a '
                                 f'label unlike {records[0].name}; label all records or none')
        samples.append(sample)

    first = samples[0]
    batch: RawBatch = {}
    if 'rgb' in first:
        size = first['rgb'].shape[:2]
        batch['rgb'] = np.stack([_resize_to(s['rgb'], size, cv2.INTER_AREA) for s in samples])
    if 'depth' in first:
        size = first['depth'].shape[:2]
        batch['depth'] = np.stack([_resize_to(s['depth'], size, cv2.INTER_NEAREST)
                                   for s in samples]).astype(np.float32)
    if 'audio' in first:
        batch['audio'] = _stack_audio([s['audio'] for s in samples], clip_seconds)
    if 'label' in first:
        batch['label'] = np.array([s['label'] for s in samples], dtype=np.int64)
    tagged = [m for m in MODALITIES if any(m in s['conditions'] for s in samples)]
    for m in tagged:
        levels = [s['conditions'].get(m, (0, 0.0)) for s in samples]
        batch[f'ctype_{m}'] = np.array([c for c, _ in levels], dtype=np.int64)
        batch[f'severity_{m}'] = np.array([v for _, v in levels], dtype=np.float32)
    return batch, class_names


def _stack_audio(clips: List[np.ndarray], clip_seconds: Optional[float]) -> np.ndarray:
    if clip_seconds is not None:
        if not clip_seconds > 0:
            raise ValueError(f'clip_seconds must be > 0, got {clip_seconds}')
        length = int(round(clip_seconds * SAMPLE_RATE))
        return np.stack([fit_clip(c, length) for c in clips]).astype(np.float32)
    out = np.zeros((len(clips), max(len(c) for c in clips)), np.float32)
    for i, c in enumerate(clips):
        out[i, :len(c)] = c
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def write_folder(path, split: str, batch, class_names: Sequence[str] = (), *,
                 depth_format: str = 'png', record_names: Optional[Sequence[str]] = None) -> Path:
    """Write a raw batch (or a ``LoadedDataset``) as ``<path>/<split>/<record>/``.

    Records are named ``000000``, ``000001``, ... unless ``record_names`` is given.
    ``depth_format`` is ``png`` (16-bit mm; NaN -> 0; values are rounded to 1 mm) or ``npy``
    (exact float32). Audio must lie in [-1, 1] and is stored as 16-bit PCM. The split folder
    must not exist yet; an existing ``classes.txt`` must match ``class_names``.
    Returns the split folder.
    """
    if hasattr(batch, 'arrays'):   # a LoadedDataset
        class_names = class_names or getattr(batch, 'class_names', ())
        batch = batch.arrays
    if depth_format not in ('png', 'npy'):
        raise ValueError(f"depth_format must be 'png' or 'npy', got {depth_format!r}")
    root = Path(path)
    split_dir = root / split
    if split_dir.exists():
        raise FileExistsError(f'{split_dir} exists already; write each split once')
    present = present_modalities(batch)
    if not present:
        raise ValueError(f'batch has no modality to write; keys: {sorted(batch)}')
    n = batch_size(batch)
    names = list(record_names) if record_names is not None else [f'{i:06d}' for i in range(n)]
    if len(names) != n or len(set(names)) != n:
        raise ValueError(f'need {n} distinct record names, got {len(names)}')
    class_names = [str(c) for c in class_names]
    if 'label' in batch:
        labels = np.asarray(batch['label'], dtype=np.int64)
        if not class_names:
            raise ValueError('batch has labels: pass class_names to write classes.txt')
        if n and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f'labels span {labels.min()}..{labels.max()} but there are '
                             f'{len(class_names)} class names')
    if 'audio' in batch:
        audio = np.asarray(batch['audio'])
        if audio.size and (not np.all(np.isfinite(audio)) or np.max(np.abs(audio)) > 1.0):
            raise ValueError('audio must be finite and within [-1, 1] to store as 16-bit PCM')
    conditions = corruption_labels(batch)
    depth_mm = depth_to_mm(batch['depth']) if 'depth' in batch and depth_format == 'png' else None

    root.mkdir(parents=True, exist_ok=True)
    classes_path = root / CLASSES_FILE
    if class_names:
        existing = read_classes(root)
        if existing and existing != class_names:
            raise ValueError(f'{classes_path} lists {existing}, not {class_names}')
        if not existing:
            classes_path.write_text(''.join(f'{c}\n' for c in class_names), encoding='utf8')

    split_dir.mkdir()
    for i, name in enumerate(names):
        record = split_dir / name
        record.mkdir()
        if 'rgb' in batch:
            cv2.imwrite(str(record / 'rgb.png'), cv2.cvtColor(batch['rgb'][i], cv2.COLOR_RGB2BGR))
        if 'depth' in batch:
            if depth_mm is not None:
                cv2.imwrite(str(record / 'depth.png'), depth_mm[i])
            else:
                np.save(record / 'depth.npy', np.asarray(batch['depth'][i], np.float32))
        if 'audio' in batch:
            sf.write(str(record / _AUDIO_FILE), batch['audio'][i], SAMPLE_RATE, subtype='PCM_16')
        if 'label' in batch:
            (record / 'label.txt').write_text(f'{class_names[int(batch["label"][i])]}\n',
                                              encoding='utf8')
        if conditions:
            meta = {'conditions': {m: {'type': types[i], 'severity': float(sev[i])}
                                   for m, (types, sev) in conditions.items()}}
            (record / 'meta.yaml').write_text(yaml.safe_dump(meta, sort_keys=False),
                                              encoding='utf8')
    return split_dir
