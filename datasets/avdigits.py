"""AV-digits: real handwritten MNIST digits paired by label with real FSDD spoken digits.

Each modality is real, the pairing is synthetic ("AV-MNIST" style; sources and licences in
``<data_root>/README.md``). A sample has ``rgb`` (the 28x28 grey digit replicated to uint8
``[28, 28, 3]``; the Preprocessor resizes), ``audio`` (the spoken digit, 8 kHz WAV resampled to
16 kHz with soxr, centre-cropped or centre-padded with zeros to 1.0 s, float32) and ``label``
(0-9); there is no depth.

Speaker-held-out splits (no speaker in two splits, every speaker's 500 clips in one split):

=======  ======================================  ==========================  ============
split    speakers (accent)                        images                      samples
=======  ======================================  ==========================  ============
train    george (GRC), jackson (USA), nicolas     ``mnist_5k.csv.gz``         2000
         (BEL/FR), theo (USA)                     (500 per class)
val      lucas (DEU)                              t10k images 0-4999          500
test     yweweler (DEU)                           t10k images 5000-9999       500
=======  ======================================  ==========================  ============

Validation and test voices are both German-accented and absent from training, so validation
is a fair stand-in for the unseen test voice. Each clip gets a distinct image of its digit,
drawn from that split's image pool with ``seed``; the sample order is shuffled with the same
seed. Image pools never overlap across splits.

Data root: the ``data_root`` argument, else ``$ADMN_DATA_ROOT``, else ``../shared/data`` from
the repository root. Decoded audio is cached as ``.npy`` under ``$ADMN_CACHE_DIR`` (default
``~/.cache/admn_ros``), keyed by the files' names, sizes and modification times.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import soundfile as sf
import soxr

from admn_ros.datasets.cache import default_cache_root
from admn_ros.datasets.sample import SAMPLE_RATE, RawBatch
from admn_ros.datasets.package_paths import PACKAGE_DIR, checkout_root

SPLITS = ('train', 'val', 'test')
SPEAKER_SPLITS = {
    'train': ('george', 'jackson', 'nicolas', 'theo'),
    'val': ('lucas',),
    'test': ('yweweler',),
}
CLASS_NAMES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
CLIP_SECONDS = 1.0
IMAGE_SIZE = 28
_CACHE_VERSION = 1   # bump when the audio pipeline changes

@dataclass(frozen=True)
class Recording:
    """One FSDD clip, named ``{digit}_{speaker}_{take}.wav``."""

    path: Path
    digit: int
    speaker: str
    take: int


@dataclass
class AVDigitsPairs:
    """Which clip and which image make up each sample of a split, in sample order."""

    split: str
    recordings: List[Recording]
    image_source: str           # 'mnist_5k' or 't10k'
    image_index: np.ndarray     # int64 [B], row in the image source
    image_labels: np.ndarray    # int64 [B]
    audio_labels: np.ndarray    # int64 [B]

    @property
    def speakers(self) -> List[str]:
        return [r.speaker for r in self.recordings]


def resolve_data_root(data_root=None) -> Path:
    """The argument, else ``$ADMN_DATA_ROOT``, else ``shared/data`` beside the source checkout."""
    if data_root is not None:
        return Path(data_root)
    if os.environ.get('ADMN_DATA_ROOT'):
        return Path(os.environ['ADMN_DATA_ROOT'])
    return ((checkout_root() or PACKAGE_DIR.parent) / '..' / 'shared' / 'data').resolve()


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f'AV-digits needs {what} at {path} (set data_root or '
                                '$ADMN_DATA_ROOT to the folder holding fsdd/ and mnist/)')
    return path


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f'unknown AV-digits split {split!r}; choose from {SPLITS}')


def fsdd_recordings(root: Path, speakers: Sequence[str]) -> List[Recording]:
    """FSDD clips of ``speakers``, sorted by (speaker, digit, take)."""
    folder = _require(Path(root) / 'fsdd' / 'recordings', 'the FSDD recordings')
    wanted = set(speakers)
    found = []
    for path in folder.glob('*.wav'):
        parts = path.stem.split('_')
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise ValueError(f'unexpected FSDD file name {path.name!r} '
                             '(expected {digit}_{speaker}_{take}.wav)')
        if parts[1] in wanted:
            found.append(Recording(path, int(parts[0]), parts[1], int(parts[2])))
    missing = wanted - {r.speaker for r in found}
    if missing:
        raise FileNotFoundError(f'no FSDD recordings of {sorted(missing)} in {folder}')
    return sorted(found, key=lambda r: (r.speaker, r.digit, r.take))


def load_mnist(root: Path, source: str) -> Tuple[np.ndarray, np.ndarray]:
    """MNIST images uint8 ``[N, 28, 28]`` and labels int64 ``[N]``; source 'mnist_5k' or 't10k'.

    Memoised per process (read-only arrays): pairing and loading both need the labels.
    """
    return _load_mnist_cached(str(Path(root).resolve()), source)


@functools.lru_cache(maxsize=4)
def _load_mnist_cached(root: str, source: str) -> Tuple[np.ndarray, np.ndarray]:
    images, labels = _load_mnist(Path(root), source)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _load_mnist(root: Path, source: str) -> Tuple[np.ndarray, np.ndarray]:
    mnist = root / 'mnist'
    if source == 'mnist_5k':
        path = _require(mnist / 'mnist_5k.csv.gz', 'the 5k MNIST training CSV')
        with gzip.open(path, 'rt') as f:
            table = np.loadtxt(f, delimiter=',', dtype=np.int64)
        if table.ndim != 2 or table.shape[1] != IMAGE_SIZE * IMAGE_SIZE + 1:
            raise ValueError(f'{path}: expected rows of 784 pixels + label, got {table.shape}')
        images = table[:, :-1].reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8)
        return np.ascontiguousarray(images), table[:, -1].copy()
    if source == 't10k':
        images = _read_idx(_require(mnist / 't10k-images-idx3-ubyte.gz', 'the MNIST test images'))
        labels = _read_idx(_require(mnist / 't10k-labels-idx1-ubyte.gz', 'the MNIST test labels'))
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f'MNIST t10k: {images.shape[0]} images but {labels.shape[0]} labels')
        return images.copy(), labels.astype(np.int64)
    raise ValueError(f'unknown MNIST source {source!r}')


def _read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte idx file (magic 0x0000 08 <ndim>, big-endian int32 dims)."""
    with gzip.open(path, 'rb') as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f'{path} is not an unsigned-byte idx file')
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype='>i4', count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f'{path}: header says {tuple(dims)} but holds {data.size} bytes')
    return data.reshape(tuple(int(d) for d in dims))


def _image_pool(split: str, labels: np.ndarray) -> np.ndarray:
    """Rows of the split's image source it may draw from (t10k is halved between val and test)."""
    if split == 'train':
        return np.arange(len(labels))
    half = len(labels) // 2
    return np.arange(half) if split == 'val' else np.arange(half, len(labels))


def pair_avdigits(split: str, data_root=None, seed: int = 0) -> AVDigitsPairs:
    """Decide the (clip, image) pairs of a split without decoding any audio."""
    _check_split(split)
    root = resolve_data_root(data_root)
    recordings = fsdd_recordings(root, SPEAKER_SPLITS[split])
    source = 'mnist_5k' if split == 'train' else 't10k'
    _, labels = load_mnist(root, source)
    rng = np.random.default_rng([int(seed), SPLITS.index(split)])

    order = rng.permutation(len(recordings))
    recordings = [recordings[i] for i in order]
    audio_labels = np.array([r.digit for r in recordings], dtype=np.int64)
    pool = _image_pool(split, labels)
    image_index = np.empty(len(recordings), dtype=np.int64)
    for digit in range(len(CLASS_NAMES)):
        slots = np.flatnonzero(audio_labels == digit)
        candidates = pool[labels[pool] == digit]
        if len(candidates) < len(slots):
            raise ValueError(f'{split}: {len(slots)} clips of digit {digit} but only '
                             f'{len(candidates)} images')
        image_index[slots] = rng.choice(candidates, size=len(slots), replace=False)
    return AVDigitsPairs(split, recordings, source, image_index, labels[image_index].copy(),
                         audio_labels)


def fit_clip(wave: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop or centre-pad (zeros) a 1-D wave to ``length`` samples."""
    n = len(wave)
    if n >= length:
        start = (n - length) // 2
        return wave[start:start + length]
    out = np.zeros(length, dtype=wave.dtype)
    offset = (length - n) // 2
    out[offset:offset + n] = wave
    return out


def decode_clip(path: Path, length: int = int(CLIP_SECONDS * SAMPLE_RATE)) -> np.ndarray:
    """One WAV -> mono float32 at 16 kHz, fitted to ``length`` samples."""
    wave, rate = sf.read(str(path), dtype='float32', always_2d=True)
    mono = wave.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return fit_clip(np.asarray(mono, dtype=np.float32), length)


def _cache_key(recordings: Sequence[Recording], length: int) -> str:
    h = hashlib.sha1(f'v{_CACHE_VERSION} {SAMPLE_RATE} {length}'.encode())
    for r in recordings:
        st = r.path.stat()
        h.update(f'{r.path.name} {st.st_size} {st.st_mtime_ns}\n'.encode())
    return h.hexdigest()[:16]


def load_clips(recordings: Sequence[Recording], *, use_cache: bool = True) -> np.ndarray:
    """Decoded clips float32 ``[N, 16000]`` in the given order (cached by file identity)."""
    length = int(CLIP_SECONDS * SAMPLE_RATE)
    ordered = sorted(range(len(recordings)), key=lambda i: recordings[i].path.name)
    canonical = [recordings[i] for i in ordered]   # the cache ignores sample order
    path = default_cache_root() / f'avdigits_audio_{_cache_key(canonical, length)}.npy'
    clips = None
    if use_cache and path.is_file():
        try:
            clips = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            clips = None   # a damaged cache file is rebuilt below
        if clips is not None and clips.shape != (len(canonical), length):
            clips = None
    if clips is None:
        clips = np.stack([decode_clip(r.path, length) for r in canonical]) if canonical \
            else np.zeros((0, length), np.float32)
        if use_cache:
            _save_atomic(path, clips)
    out = np.empty_like(clips)
    out[ordered] = clips
    return out


def _save_atomic(path: Path, array: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
        with open(tmp, 'wb') as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass   # a read-only cache location only costs speed


def load_avdigits(split: str, data_root=None, seed: int = 0) -> Tuple[RawBatch, List[str]]:
    """The raw batch of one split (rgb, audio, label; no depth) and the class names."""
    pairs = pair_avdigits(split, data_root=data_root, seed=seed)
    images, _ = load_mnist(resolve_data_root(data_root), pairs.image_source)
    grey = images[pairs.image_index]
    batch: RawBatch = {
        'rgb': np.repeat(grey[..., None], 3, axis=-1),
        'audio': load_clips(pairs.recordings),
        'label': pairs.audio_labels.copy(),
    }
    return batch, list(CLASS_NAMES)
