"""On-disk cache of generated datasets: npz shards keyed by a hash of what made them.

Layout: ``$ADMN_CACHE_DIR/<label>-<hash>/`` (default root ``~/.cache/admn_ros``) holding
``shard_00000.npz ...`` and ``manifest.json``. An entry is built in a private temporary folder and
renamed into place in one step, so readers never see a half-written entry and two writers racing
on the same key both end with one complete copy.

Audio is stored as 16-bit PCM. :func:`quantise_audio_roundtrip` applies the same quantisation to
freshly generated data, so a cache hit returns exactly what the miss returned.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from admn_ros.datasets.sample import RawBatch, batch_size, take

CACHE_ENV = 'ADMN_CACHE_DIR'
CACHE_FORMAT = 1       # bump when the on-disk layout changes
_PCM_SCALE = 32767.0
_AUDIO_TOLERANCE = 1e-3  # float round-off above full scale that is clipped rather than refused


def default_cache_root() -> Path:
    """``$ADMN_CACHE_DIR`` if set and non-empty, else ``~/.cache/admn_ros``."""
    root = os.environ.get(CACHE_ENV, '').strip()
    return Path(root).expanduser() if root else Path.home() / '.cache' / 'admn_ros'


def cache_key(parts: Mapping[str, Any]) -> str:
    """Stable short hash of JSON-able key parts (dataset, config, split, seed, size, versions)."""
    text = json.dumps(parts, sort_keys=True, separators=(',', ':'), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def content_digest(batch: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of named arrays (names, dtypes, shapes, bytes), e.g. a raw batch: a cache key part for
    arrays derived from data read from files, which no generator version describes."""
    h = hashlib.sha256()
    for name in sorted(batch):
        arr = np.ascontiguousarray(batch[name])
        h.update(f'{name} {arr.dtype.str} {arr.shape};'.encode())
        h.update(memoryview(arr).cast('B'))
    return h.hexdigest()


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f'cache key part of type {type(value).__name__} is not JSON-able: {value!r}')


def quantise_audio(audio: np.ndarray) -> np.ndarray:
    """Float waveform in [-1, 1] -> int16 PCM (round to nearest)."""
    audio = np.asarray(audio)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if not np.isfinite(peak) or peak > 1.0 + _AUDIO_TOLERANCE:
        raise ValueError(f'audio must be finite and within [-1, 1] to be stored as PCM; peak is {peak}')
    return np.rint(np.clip(audio, -1.0, 1.0) * _PCM_SCALE).astype(np.int16)


def dequantise_audio(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 waveform."""
    return (np.asarray(pcm, np.int16).astype(np.float32) / np.float32(_PCM_SCALE)).astype(np.float32)


def quantise_audio_roundtrip(batch: RawBatch) -> RawBatch:
    """The batch as the cache will return it: audio through int16 and back, the rest untouched."""
    if 'audio' not in batch:
        return batch
    out = dict(batch)
    out['audio'] = dequantise_audio(quantise_audio(batch['audio']))
    return out


@dataclass
class ArrayCache:
    """Sharded npz store for raw batches under ``root``."""

    root: Path = field(default_factory=default_cache_root)
    shard_size: int = 2000
    # Store audio as 16-bit PCM (half the disk; what sensors deliver). False keeps float32 exactly,
    # for arrays that must come back bit-equal (e.g. corrupted test sets).
    pcm_audio: bool = True

    def __post_init__(self):
        self.root = Path(self.root).expanduser()
        if self.shard_size <= 0:
            raise ValueError(f'shard_size must be positive, got {self.shard_size}')

    def entry_dir(self, parts: Mapping[str, Any]) -> Path:
        label = ''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in str(parts.get('dataset', 'data')))
        return self.root / f'{label}-{cache_key(parts)}'

    def load(self, parts: Mapping[str, Any]) -> Optional[RawBatch]:
        """The cached batch for these key parts, or None when absent (or unreadable)."""
        entry = self.entry_dir(parts)
        manifest_path = entry / 'manifest.json'
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get('format') != CACHE_FORMAT:
                return None
            shards = []
            for name in manifest['shards']:
                with np.load(entry / name, allow_pickle=False) as npz:
                    shards.append({k: npz[k] for k in npz.files})
        except (OSError, ValueError, KeyError) as exc:
            # A damaged entry is a miss, not a crash: it gets rebuilt (and replaced) below.
            _warn(f'ignoring unreadable cache entry {entry}: {exc}')
            return None
        stored = {k: np.concatenate([s[k] for s in shards]) for k in manifest['keys']}
        if 'audio' in stored and stored['audio'].dtype == np.int16:
            stored['audio'] = dequantise_audio(stored['audio'])
        if batch_size(stored) != manifest['n']:
            _warn(f'ignoring cache entry {entry}: holds {batch_size(stored)} samples, manifest says {manifest["n"]}')
            return None
        return stored

    def save(self, parts: Mapping[str, Any], batch: RawBatch) -> Path:
        """Write ``batch`` atomically; returns the entry folder. Audio must lie in [-1, 1]."""
        entry = self.entry_dir(parts)
        self.root.mkdir(parents=True, exist_ok=True)
        n = batch_size(batch)
        stored = dict(batch)
        if 'audio' in stored and self.pcm_audio:
            stored['audio'] = quantise_audio(stored['audio'])
        tmp = Path(tempfile.mkdtemp(prefix=f'.{entry.name}.', dir=self.root))
        try:
            names = []
            for i, start in enumerate(range(0, max(n, 1), self.shard_size)):
                name = f'shard_{i:05d}.npz'
                np.savez_compressed(tmp / name, **take(stored, slice(start, start + self.shard_size)))
                names.append(name)
            manifest = {'format': CACHE_FORMAT, 'n': n, 'keys': sorted(stored), 'shards': names,
                        'parts': json.loads(json.dumps(parts, default=_jsonable))}
            (tmp / 'manifest.json').write_text(json.dumps(manifest, indent=1, sort_keys=True))
            if entry.exists():   # a stale or damaged entry: move it aside, then swap in ours
                stale = Path(tempfile.mkdtemp(prefix=f'.{entry.name}.stale.', dir=self.root))
                try:
                    os.replace(entry, stale / 'old')
                except OSError:
                    pass
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, entry)
            except OSError:
                if not (entry / 'manifest.json').is_file():
                    raise
                # Another process finished the same entry first; keep theirs.
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return entry

    def get_or_create(self, parts: Mapping[str, Any], build: Callable[[], RawBatch]) -> RawBatch:
        """Load the entry, or build, store and return it (audio quantised the same either way)."""
        cached = self.load(parts)
        if cached is not None:
            return cached
        batch = quantise_audio_roundtrip(build()) if self.pcm_audio else build()
        self.save(parts, batch)
        return batch


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
