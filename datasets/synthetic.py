"""The embedded synthetic RGB-D-audio world: the default dataset, generated on the CPU, no download.

Every scene shows two large *key* objects (one in each image half), up to two small distractors,
a checkered floor and sometimes a back wall, and comes with a one-second sound. The class is the
combination of three factors (3 x 2 x 2 = 12 classes). Each factor has a *primary* cue that one
modality sees cleanly and fainter *secondary* cues in the other two, so the sensors
overlap as a robot's do: every modality alone can tell most classes apart, and when one is
destroyed the other two still can, if they are read in depth.

==========  ==========================  ===============================  ===============================
factor      RGB                         depth                            audio
==========  ==========================  ===============================  ===============================
family (3)  **hue of the key objects**  distance band of the key pair    pitch register of the melody
            (red / green / blue)        (adjacent bands)                 (adjacent registers)
nearer (2)  nearer object looks         **which key object is nearer**   loudness trend: crescendo
            larger (size ratio)         (the nearest thing in view)      (left) / decrescendo (right)
contour(2)  key pair rises or falls     key pair rises or falls          **melody direction**
            left to right               left to right                    (every step and glide)
==========  ==========================  ===============================  ===============================

A secondary cue always points the right way but is faint for some samples and buried in
nuisances, so a single modality at full depth reaches well above chance but not the fused
accuracy, and only fusion or a deep read of the remaining sensors recovers a destroyed one's
factor. Nuisances: object shapes, poses,
textures and exact sizes, lighting, exposure, sensor noise, floor and wall appearance, wall
presence, camera jitter; exact pitch, timbre, rhythm, vibrato, per-note loudness, a noise band and
a hum.

Samples are drawn in fixed blocks of 64 (one random stream per block, parameters drawn as arrays),
so sample ``i`` depends only on (seed, config, i). This module holds the classes, the config and
:func:`generate`; the work is in three modules beside it:

* :mod:`admn_ros.datasets.synthetic_scene` - what each scene shows (objects, floor, wall, light);
* :mod:`admn_ros.datasets.synthetic_render` - ray casting a block of scenes at once with Open3D's
  ``RaycastingScene``, Lambertian shading in numpy;
* :mod:`admn_ros.datasets.synthetic_sound` - the melodies, by vectorised wavetable synthesis.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from admn_ros.datasets.sample import SAMPLE_RATE, RawBatch
from admn_ros.datasets.synthetic_render import BLOCK, render
from admn_ros.datasets.synthetic_scene import sample_scenes
from admn_ros.datasets.synthetic_sound import sample_sounds, synthesise

# Bump when the generated content changes, so on-disk caches built by older code are not reused.
GENERATOR_VERSION = 5

HUES = ('red', 'green', 'blue')
NEARER = ('leftnear', 'rightnear')
CONTOURS = ('rising', 'falling')

# Class c <-> factors (hue, nearer, contour), contour varying fastest: a prefix whose length is
# a multiple of 4 is still a full depth x audio factorial.
CLASS_FACTORS: Tuple[Tuple[int, int, int], ...] = tuple(
    (h, n, c) for h in range(len(HUES)) for n in range(len(NEARER)) for c in range(len(CONTOURS)))
CLASS_NAMES: Tuple[str, ...] = tuple(
    f'{HUES[h]}-{NEARER[n]}-{CONTOURS[c]}' for h, n, c in CLASS_FACTORS)

_LABEL_STREAM, _SAMPLE_STREAM = 0, 1


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that changes the generated content (the cache key hashes it)."""

    image_size: int = 64
    num_classes: int = len(CLASS_NAMES)
    seed: int = 0
    fov_deg: float = 60.0
    clip_seconds: float = 1.0
    max_distractors: int = 2
    wall_probability: float = 0.6

    def __post_init__(self):
        if not 8 <= self.image_size <= 1024:
            raise ValueError(f'image_size must be in [8, 1024], got {self.image_size}')
        if not 2 <= self.num_classes <= len(CLASS_NAMES):
            raise ValueError(f'num_classes must be in [2, {len(CLASS_NAMES)}], got {self.num_classes}')
        if not 20.0 <= self.fov_deg <= 90.0:
            raise ValueError(f'fov_deg must be in [20, 90], got {self.fov_deg}')
        if not 0.5 <= self.clip_seconds <= 10.0:
            raise ValueError(f'clip_seconds must be in [0.5, 10], got {self.clip_seconds}')
        if not 0 <= self.max_distractors <= 4:
            raise ValueError(f'max_distractors must be in [0, 4], got {self.max_distractors}')
        if not 0.0 <= self.wall_probability <= 1.0:
            raise ValueError(f'wall_probability must be in [0, 1], got {self.wall_probability}')

    @property
    def class_names(self) -> List[str]:
        return list(CLASS_NAMES[:self.num_classes])

    @property
    def focal_px(self) -> float:
        return 0.5 * self.image_size / np.tan(np.radians(self.fov_deg) / 2)

    @property
    def audio_length(self) -> int:
        return int(round(self.clip_seconds * SAMPLE_RATE))


def class_factors(labels) -> np.ndarray:
    """Factor indices ``[..., 3]`` (hue, nearer, contour) of class labels."""
    return np.asarray(CLASS_FACTORS, dtype=np.int64)[np.asarray(labels, dtype=np.int64)]


def balanced_labels(n: int, seed: int, num_classes: int) -> np.ndarray:
    """Labels in shuffled runs of ``num_classes``: every class once per run, so counts differ by <= 1."""
    runs = -(-n // num_classes)
    labels = [np.random.default_rng([seed, _LABEL_STREAM, r]).permutation(num_classes) for r in range(runs)]
    return np.concatenate(labels or [np.zeros(0, np.int64)])[:n].astype(np.int64)


def generate(n: int, seed: Optional[int] = None, cfg: Optional[SyntheticConfig] = None,
             *, workers: Optional[int] = None) -> RawBatch:
    """``n`` samples as a raw batch (rgb, depth, audio, label); deterministic in (seed, cfg).

    ``seed`` defaults to ``cfg.seed``. A shorter run is a prefix of a longer one. Blocks are
    generated by ``workers`` threads (default: up to 2; numpy and Open3D release the GIL); the
    result does not depend on it.
    """
    cfg = cfg or SyntheticConfig()
    seed = cfg.seed if seed is None else seed
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f'n must be a non-negative integer, got {n!r}')
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    n, seed = int(n), int(seed)
    blocks = -(-n // BLOCK)
    labels = balanced_labels(blocks * BLOCK, seed, cfg.num_classes)
    size = cfg.image_size
    out = {
        'rgb': np.empty((n, size, size, 3), np.uint8),
        'depth': np.empty((n, size, size), np.float32),
        'audio': np.empty((n, cfg.audio_length), np.float32),
        'label': labels[:n].copy(),
    }

    def make_block(block: int) -> None:
        start, stop = block * BLOCK, min(n, (block + 1) * BLOCK)
        rng = np.random.default_rng([seed, _SAMPLE_STREAM, block])
        factors = class_factors(labels[block * BLOCK:(block + 1) * BLOCK])
        # Fixed draw order and shapes: the first k samples of a block never depend on k.
        scenes = sample_scenes(rng, factors, cfg)
        sounds = sample_sounds(rng, factors, cfg)
        pixel_noise = rng.random((BLOCK, size, size, 3), dtype=np.float32)
        noise_spectrum = rng.random((BLOCK, cfg.audio_length // 2 + 1, 2), dtype=np.float32)
        k = stop - start
        # Written straight into the output slices; the noise draws double as scratch buffers.
        render(_take(scenes, k), pixel_noise[:k], cfg, out['rgb'][start:stop], out['depth'][start:stop])
        synthesise(_take(sounds, k), noise_spectrum[:k], cfg, out['audio'][start:stop])

    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    if workers <= 1 or blocks <= 1:
        for block in range(blocks):
            make_block(block)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(make_block, range(blocks)))   # list(): re-raise any worker error here
    return out


def _take(params: Dict[str, np.ndarray], k: int) -> Dict[str, np.ndarray]:
    return {name: value[:k] for name, value in params.items()}
