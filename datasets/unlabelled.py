"""Unlabelled frames and clips for self-supervised pretraining (``admn pretrain --data SPEC``).

Each modality is its own pool: an image needs no clip beside it, and a robot's camera and
microphone may have recorded for different lengths. Specs:

=========================  =================================================================
spec                       what
=========================  =================================================================
``folder:PATH``            a folder dataset (:mod:`admn_ros.datasets.folder`): every split
                           folder under PATH except ``val`` and ``test`` (``train``, and any
                           other such as ``unlabelled``); labels, where present, are ignored
``avdigits-unlabelled``    the AV-digits training pool without its labels: the 5,000 MNIST
                           training images and the clips of the four training speakers. Never
                           the MNIST test images (t10k: the validation and test images) nor the
                           validation and test voices (:data:`AVDIGITS_EXCLUDED_SPEAKERS`)
``synthetic``              the synthetic world's training split, labels dropped
``PATH`` (a rosbag2)       imported with ``admn data from-bag``'s reader (:func:`import_bag`,
                           no labels needed) into ``<work>/bags/<name>``, then read as a folder
=========================  =================================================================

Evaluation data stays out by construction: a folder's ``val``/``test`` splits are never read, and
the AV-digits pool is built from the training sources only (``tests/test_pretrain.py`` checks it
against the loaders of the validation and test splits).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from admn_ros.datasets.bags import is_bag
from admn_ros.datasets.sample import MODALITIES

EVALUATION_SPLITS = ('val', 'test')
AVDIGITS_SPEC = 'avdigits-unlabelled'


def avdigits_excluded_speakers() -> tuple:
    from admn_ros.datasets.avdigits import SPEAKER_SPLITS
    return SPEAKER_SPLITS['val'] + SPEAKER_SPLITS['test']


@dataclass
class UnlabelledPool:
    """Raw samples per modality (the raw-batch dtypes of :mod:`admn_ros.datasets.sample`) and
    where each came from."""

    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    sources: Dict[str, List[str]] = field(default_factory=dict)

    def add(self, modality: str, samples: np.ndarray, source: str) -> None:
        if not len(samples):
            return
        if modality in self.arrays:
            have = self.arrays[modality]
            if have.shape[1:] != samples.shape[1:]:
                raise ValueError(f'{source}: {modality} samples are {list(samples.shape[1:])}, '
                                 f'earlier sources gave {list(have.shape[1:])}; bring them to one '
                                 'size (e.g. --image-size on import)')
            samples = np.concatenate([have, samples.astype(have.dtype)])
        self.arrays[modality] = samples
        self.sources.setdefault(modality, []).append(source)

    def counts(self) -> Dict[str, int]:
        return {m: len(a) for m, a in self.arrays.items()}

    def describe(self) -> str:
        return ', '.join(f'{m}: {len(a)} from {" + ".join(self.sources[m])}' for m, a in self.arrays.items())


def avdigits_pool(data_root=None, *, with_files: bool = False):
    """The AV-digits training sources, unpaired and without labels (module docstring); with
    ``with_files``, also the clips' file names."""
    from admn_ros.datasets import avdigits
    root = avdigits.resolve_data_root(data_root)
    images, _ = avdigits.load_mnist(root, 'mnist_5k')
    speakers = avdigits.SPEAKER_SPLITS['train']
    if set(speakers) & set(avdigits_excluded_speakers()):   # the split table is the guard
        raise ValueError(f'AV-digits training speakers {speakers} overlap evaluation speakers')
    recordings = avdigits.fsdd_recordings(root, speakers)
    arrays = {'rgb': np.repeat(np.asarray(images)[..., None], 3, axis=-1),
              'audio': avdigits.load_clips(recordings)}
    return (arrays, [r.path.name for r in recordings]) if with_files else arrays


def load_pool(specs: Sequence[str], *, work: Optional[Path] = None, image_size: Optional[int] = None,
              modalities: Optional[Sequence[str]] = None, data_root=None) -> UnlabelledPool:
    """Every spec's samples pooled per modality (``modalities``: keep only these)."""
    from admn_ros.datasets.folder import load_folder
    from admn_ros.datasets.registry import load_dataset
    if not specs:
        raise ValueError('no --data given: name at least one folder:PATH, bag or avdigits-unlabelled')
    pool = UnlabelledPool()
    for spec in specs:
        parts: Dict[str, np.ndarray] = {}
        if spec == AVDIGITS_SPEC:
            parts = avdigits_pool(data_root)
        elif spec == 'synthetic':
            parts = load_dataset('synthetic', 'train').arrays
        elif spec.startswith('folder:'):
            root = Path(spec[len('folder:'):])
            for split in _pretraining_splits(root):
                batch, _ = load_folder(root, split, image_size=image_size)
                for m in MODALITIES:
                    if m in batch:
                        pool.add(m, batch[m], f'{spec}/{split}')
            continue
        elif is_bag(spec):
            folder = import_unlabelled_bag(Path(spec), Path(work or '.') / 'bags', image_size)
            for m, samples in load_folder(folder, 'train', image_size=image_size)[0].items():
                if m in MODALITIES:
                    pool.add(m, samples, str(spec))
            continue
        else:
            raise ValueError(f'--data {spec}: expected folder:PATH, a rosbag2 folder or file, '
                             f'{AVDIGITS_SPEC} or synthetic')
        for m in MODALITIES:
            if m in parts:
                pool.add(m, parts[m], spec)
    if modalities:
        pool.arrays = {m: a for m, a in pool.arrays.items() if m in modalities}
    if not pool.arrays:
        raise ValueError(f'--data {" ".join(specs)} gave no rgb, depth or audio samples'
                         + (f' of {", ".join(modalities)}' if modalities else ''))
    return pool


def _pretraining_splits(root: Path) -> List[str]:
    if not root.is_dir():
        raise FileNotFoundError(f'folder:{root}: no such folder')
    splits = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in EVALUATION_SPLITS)
    if not splits:
        raise ValueError(f'folder:{root} has no split folder to pretrain on (val and test are '
                         'evaluation data and are never read for pretraining)')
    return splits


def import_unlabelled_bag(bag: Path, out_root: Path, image_size: Optional[int]) -> Path:
    """The bag as a label-free folder dataset (once; reused when already imported)."""
    from admn_ros.datasets.from_bag import import_bag
    out = out_root / bag.stem
    if not (out / 'train').is_dir():
        report = import_bag(bag, out, unlabelled=True, image_size=image_size)
        print(report.describe(), flush=True)
    return out
