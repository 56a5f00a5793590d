"""Leave-one-source-out folds for datasets that name where each sample came from.

A *source* is whatever a model should generalise across: a speaker, a recording session, a
microphone, a robot. A fold holds one source out: its test split is every sample of that source,
and its train and validation splits are drawn from the other sources only, so neither stage 1,
the controller nor any choice made on validation ever sees the held-out source.

Folds are datasets with their own name, ``heldout:SOURCE:BASE`` (e.g. ``heldout:lucas:avdigits``),
which :func:`admn_ros.datasets.registry.load_dataset` resolves like any other; every trainer and
``admn eval`` take them unchanged. The base's own train/val/test splits are pooled first, then cut
by source.

=============  ==============================================================================
base           sources
=============  ==============================================================================
``avdigits``   the FSDD speaker of each clip (6 speakers, 500 clips each)
``tensors``    three generated sources ``a``, ``b``, ``c`` (by sample index), for tests
``folder:P``   each record's ``source`` in its ``meta.yaml`` (docs/folder_format.md); the
               splits the folder has are pooled
=============  ==============================================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from admn_ros.datasets.sample import RawBatch, concat, take

PREFIX = 'heldout:'
SPLITS = ('train', 'val', 'test')
SOURCE_DATASETS = ('avdigits', 'tensors', 'folder:PATH')
TENSOR_SOURCES = ('a', 'b', 'c')
VAL_FRACTION = 0.2   # of the other sources' samples, for checkpoint selection


@dataclass
class Pooled:
    """Every sample of a dataset with the source it came from."""

    arrays: RawBatch
    sources: np.ndarray       # str [N]
    class_names: List[str]

    @property
    def names(self) -> List[str]:
        return sorted(set(self.sources.tolist()))


@dataclass(frozen=True)
class Fold:
    """One source held out: sample indices of each split into :class:`Pooled`."""

    source: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def split(self, name: str) -> np.ndarray:
        return {'train': self.train, 'val': self.val, 'test': self.test}[name]


def fold_name(source: str, base: str) -> str:
    """The dataset name of the fold that holds ``source`` of ``base`` out."""
    return f'{PREFIX}{source}:{base}'


def parse_fold_name(name: str) -> Tuple[str, str]:
    """``heldout:SOURCE:BASE`` -> (source, base)."""
    source, _, base = name[len(PREFIX):].partition(':')
    if not name.startswith(PREFIX) or not source or not base:
        raise ValueError(f'a held-out fold is named heldout:SOURCE:DATASET (e.g. heldout:lucas:avdigits), '
                         f'got {name!r}')
    return source, base


def _split_sources(base: str, split: str, n: int, seed: int, data_root) -> np.ndarray:
    if base == 'avdigits':
        from admn_ros.datasets.avdigits import pair_avdigits
        return np.array(pair_avdigits(split, data_root=data_root, seed=seed).speakers)
    if base == 'tensors':
        return np.array([TENSOR_SOURCES[i % len(TENSOR_SOURCES)] for i in range(n)])
    if base.startswith('folder:'):
        from admn_ros.datasets.folder import folder_sources
        return folder_sources(base[len('folder:'):], split)
    raise ValueError(f'dataset {base!r} names no sources; leave-one-source-out folds need one of '
                     f'{", ".join(SOURCE_DATASETS)}')


def pool_sources(base: str, *, seed: int = 0, data_root=None, image_size: Optional[int] = None) -> Pooled:
    """All splits of ``base`` concatenated, with each sample's source."""
    from admn_ros.datasets.registry import load_dataset   # the registry resolves fold names through us
    if base.startswith(PREFIX):
        raise ValueError(f'{base!r} is already a fold')
    folder = Path(base[len('folder:'):]) if base.startswith('folder:') else None
    if base not in SOURCE_DATASETS and folder is None:
        _split_sources(base, 'train', 0, seed, data_root)   # raises the one-line error
    splits = [s for s in SPLITS if folder is None or (folder / s).is_dir()]
    parts, sources, class_names = [], [], None
    for split in splits:
        loaded = load_dataset(base, split, seed=seed, data_root=data_root, image_size=image_size)
        parts.append(loaded.arrays)
        sources.append(_split_sources(base, split, len(loaded), seed, data_root))
        class_names = class_names or loaded.class_names
    return Pooled(concat(parts), np.concatenate(sources), list(class_names))


def source_folds(sources: Sequence[str], *, seed: int = 0, val_fraction: float = VAL_FRACTION) -> List[Fold]:
    """One fold per source, in sorted order: test = that source's samples; validation = a seeded
    ``val_fraction`` of the other sources' samples (at least one); train = the rest of them."""
    sources = np.asarray(sources)
    names = sorted(set(sources.tolist()))
    if len(names) < 2:
        raise ValueError(f'leave-one-source-out needs at least 2 sources, got {names}')
    if not 0 < val_fraction < 1:
        raise ValueError(f'val_fraction must be in (0, 1), got {val_fraction}')
    folds = []
    for k, name in enumerate(names):
        others = np.flatnonzero(sources != name)
        order = np.random.default_rng([int(seed), 0x10F0, k]).permutation(others)
        n_val = min(len(others) - 1, max(1, int(round(val_fraction * len(others)))))
        folds.append(Fold(name, np.sort(order[n_val:]), np.sort(order[:n_val]),
                          np.flatnonzero(sources == name)))
    return folds


def load_fold(name: str, split: str, *, seed: int = 0, data_root=None,
              image_size: Optional[int] = None) -> Tuple[RawBatch, List[str]]:
    """One split of the fold ``heldout:SOURCE:BASE`` and the class names."""
    source, base = parse_fold_name(name)
    pooled = pool_sources(base, seed=seed, data_root=data_root, image_size=image_size)
    folds = {f.source: f for f in source_folds(pooled.sources, seed=seed)}
    if source not in folds:
        raise ValueError(f'{base!r} has no source {source!r}; its sources: {", ".join(folds)}')
    return take(pooled.arrays, folds[source].split(split)), pooled.class_names
