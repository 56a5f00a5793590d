"""Datasets by name: ``load_dataset(name, split) -> LoadedDataset``.

=================  ==========================================================================
name               what
=================  ==========================================================================
``synthetic``      the embedded RGB-D-audio world (:mod:`admn_ros.datasets.synthetic`); splits use
                   disjoint seeds; default sizes 6000 / 1000 / 1000; cached on disk
``tensors``        tiny generated arrays of the right dtypes and shapes with a simple class signal, for tests (4 classes)
``avdigits``       MNIST digits paired with spoken digits (:mod:`admn_ros.datasets.avdigits`)
``folder:PATH``    a user's folder of recordings (:mod:`admn_ros.datasets.folder`)
``heldout:S:NAME`` the leave-one-source-out fold of ``NAME`` that holds source ``S`` out (test = its
                   samples, train/val = the other sources'; :mod:`admn_ros.datasets.sources`)
=================  ==========================================================================

``size`` takes a subset: the first ``size`` samples for ``synthetic`` (its samples do not depend
on how many are drawn), a seeded random subset for the loaders of fixed splits.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from admn_ros.datasets import avdigits, folder, sources, synthetic
from admn_ros.datasets.cache import ArrayCache, quantise_audio_roundtrip
from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE, RawBatch, batch_size, present_modalities, take

SPLITS = ('train', 'val', 'test')
DATASET_NAMES = ('synthetic', 'tensors', 'avdigits', 'folder:PATH', 'heldout:SOURCE:NAME')
SYNTHETIC_SIZES = {'train': 6000, 'val': 1000, 'test': 1000}
TENSORS_VERSION = 3   # bump when _random_tensors changes what it makes
TENSOR_SIZES = {'train': 64, 'val': 32, 'test': 32}
TENSOR_CLASSES = 4


@dataclass
class LoadedDataset:
    """One split of a dataset: the raw arrays and what they mean."""

    name: str
    arrays: RawBatch
    class_names: List[str]
    modalities: Tuple[str, ...]

    def __len__(self) -> int:
        return batch_size(self.arrays)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def split_seed(seed: int, split: str) -> int:
    """The generator seed of one split: distinct splits (and base seeds) never share a stream."""
    state = np.random.SeedSequence([int(seed), 0x5EED, SPLITS.index(split)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def load_dataset(name: str, split: str, *, seed: int = 0, size: Optional[int] = None, data_root=None,
                 cache: bool = True, synthetic_config=None,
                 image_size: Optional[int] = None) -> LoadedDataset:
    """Load one split of a named dataset (see the module docstring for names).

    ``cache=False`` bypasses the on-disk cache (synthetic only); ``synthetic_config`` overrides
    the :class:`admn_ros.datasets.synthetic.SyntheticConfig` (its ``seed`` is replaced by ``seed``).
    ``image_size`` resizes ``folder:`` images on load to the model's input size (the built-in
    datasets are generated at it or below).
    """
    if not isinstance(name, str):
        raise ValueError(f'dataset name must be a string, got {type(name).__name__}')
    if split not in SPLITS:
        raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
    if size is not None and (isinstance(size, bool) or int(size) != size or size <= 0):
        raise ValueError(f'size must be a positive integer or None, got {size!r}')
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    seed = int(seed)
    size = None if size is None else int(size)

    if name == 'synthetic':
        arrays, class_names = _load_synthetic(split, seed, size, cache, synthetic_config)
    elif name == 'tensors':
        arrays, class_names = _random_tensors(split, seed, size or TENSOR_SIZES[split])
    elif name == 'avdigits':
        arrays, class_names = avdigits.load_avdigits(split, data_root=data_root, seed=seed)
        arrays = _subset(arrays, size, seed, name)
    elif name.startswith('folder:'):
        path = name[len('folder:'):]
        if not path:
            raise ValueError("dataset 'folder:' needs a path, e.g. 'folder:/data/my_recordings'")
        arrays, class_names = folder.load_folder(path, split, image_size=image_size)
        arrays = _subset(arrays, size, seed, name)
    elif name.startswith(sources.PREFIX):
        arrays, class_names = sources.load_fold(name, split, seed=seed, data_root=data_root,
                                                image_size=image_size)
        arrays = _subset(arrays, size, seed, name)
    else:
        raise ValueError(f'unknown dataset {name!r}; known: {", ".join(DATASET_NAMES)}')
    _validate(arrays, class_names, name)
    return LoadedDataset(name=name, arrays=arrays, class_names=list(class_names),
                         modalities=present_modalities(arrays))


def content_version(name: str) -> int:
    """Version of the content a built-in generator makes for ``name`` (0 for data read from files);
    caches of derived arrays key on it so they are rebuilt when the generator changes."""
    if name == 'synthetic':
        return synthetic.GENERATOR_VERSION
    return TENSORS_VERSION if name == 'tensors' else 0


def _load_synthetic(split, seed, size, cache, config):
    cfg = config or synthetic.SyntheticConfig()
    cfg = dataclasses.replace(cfg, seed=split_seed(seed, split))
    n = size or SYNTHETIC_SIZES[split]
    parts = {'dataset': 'synthetic', 'generator_version': content_version('synthetic'),
             'config': dataclasses.asdict(cfg), 'split': split, 'seed': seed, 'size': n}

    def build():
        return synthetic.generate(n, cfg=cfg)

    arrays = ArrayCache().get_or_create(parts, build) if cache else quantise_audio_roundtrip(build())
    return arrays, cfg.class_names


def _random_tensors(split: str, seed: int, n: int):
    """Generated arrays with the raw-batch dtypes (rgb 64x64, depth with NaN holes, 1 s of audio) and a
    simple class signal in every modality (brightness, distance, tone pitch), so a model can learn it."""
    rng = np.random.default_rng([seed, 0x7E5, SPLITS.index(split)])
    label = (rng.permutation(n) % TENSOR_CLASSES).astype(np.int64)
    level = (label / max(1, TENSOR_CLASSES - 1)).astype(np.float32)[:, None, None]
    rgb = rng.normal(40 + 170 * level[..., None], 40, (n, 64, 64, 3))
    # Clipped: metres are positive (NaN = no reading), as the raw-sample contract says.
    depth = np.maximum(0.5 + 3.0 * level + rng.normal(0, 0.3, (n, 64, 64)), 0.05).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = np.nan
    t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * (300 + 2400 * level[:, 0]) * t)
    arrays = {
        'rgb': np.clip(rgb, 0, 255).astype(np.uint8),
        'depth': depth,
        'audio': np.clip(tone + rng.normal(0.0, 0.1, (n, SAMPLE_RATE)), -1, 1).astype(np.float32),
        'label': label,
    }
    return arrays, [f'class{i}' for i in range(TENSOR_CLASSES)]


def _subset(arrays: RawBatch, size: Optional[int], seed: int, name: str) -> RawBatch:
    """A seeded random subset of ``size`` samples, kept in the loader's order."""
    if size is None:
        return arrays
    n = batch_size(arrays)
    if size > n:
        raise ValueError(f'dataset {name!r} has {n} samples in this split; cannot take size={size}')
    index = np.sort(np.random.default_rng([seed, 0x5B5E7]).permutation(n)[:size])
    return take(arrays, index)


_CONTRACT = {'rgb': (np.uint8, 4), 'depth': (np.float32, 3), 'audio': (np.float32, 2), 'label': (np.int64, 1)}


def _validate(arrays: RawBatch, class_names, name: str) -> None:
    """Refuse batches that break the raw-batch contract (datasets.sample) with a clear message."""
    if not present_modalities(arrays):
        raise ValueError(f'dataset {name!r} gave none of the modalities {MODALITIES}')
    if 'label' not in arrays:
        raise ValueError(f'dataset {name!r} gave no labels')
    n = batch_size(arrays)
    for key, (dtype, ndim) in _CONTRACT.items():
        if key not in arrays:
            continue
        value = arrays[key]
        if value.dtype != dtype or value.ndim != ndim or len(value) != n:
            raise ValueError(f'dataset {name!r}: {key} must be {np.dtype(dtype).name} with {ndim} dims and '
                             f'{n} samples, got {value.dtype} {value.shape}')
    if 'rgb' in arrays and arrays['rgb'].shape[-1] != 3:
        raise ValueError(f'dataset {name!r}: rgb must have 3 channels, got shape {arrays["rgb"].shape}')
    labels = arrays['label']
    if n and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f'dataset {name!r}: labels span [{labels.min()}, {labels.max()}] but there are '
                         f'{len(class_names)} class names')
