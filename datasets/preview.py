"""``admn data preview``: PNG grids of a dataset's samples, clean and corrupted.

One row per sample; columns RGB, depth (colour-mapped, invalid pixels black) and the log-mel
spectrogram the models see, for the modalities present. The corrupted grid uses the standard
evaluation mix (:meth:`admn_ros.datasets.corruptions.CorruptionSampler.standard`) and names the corruption
above each panel.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import matplotlib
import numpy as np

from admn_ros.datasets.corruptions import CORRUPTION_TYPES, CorruptionSampler
from admn_ros.datasets.preprocess import DB_MEAN, DB_STD, PreprocessConfig, Preprocessor
from admn_ros.datasets.registry import load_dataset
from admn_ros.datasets.sample import RawBatch, present_modalities
from admn_ros.datasets.figures import agg_figure

_TITLES = {'rgb': 'RGB', 'depth': 'depth (m)', 'audio': 'log-mel'}


def write_preview(dataset_name: str, out_dir, n: int = 8, seed: int = 0, *, split: str = 'val',
                  data_root=None) -> List[Path]:
    """Write ``<dataset>_clean.png`` and ``<dataset>_corrupted.png`` into ``out_dir``; return the paths."""
    if isinstance(n, bool) or int(n) != n or n <= 0:
        raise ValueError(f'n must be a positive integer, got {n!r}')
    data = load_dataset(dataset_name, split, seed=seed, size=int(n), data_root=data_root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = ''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in dataset_name)
    paths = [_write_grid(data.arrays, data.class_names, out_dir / f'{stem}_clean.png',
                         f'{dataset_name} ({split}, seed {seed}): clean')]
    paths.append(_write_grid(_corrupt(data.arrays, seed), data.class_names, out_dir / f'{stem}_corrupted.png',
                             f'{dataset_name} ({split}, seed {seed}): corrupted (standard mix)'))
    return paths


def _corrupt(arrays: RawBatch, seed: int) -> RawBatch:
    """The standard corruption mix (:meth:`CorruptionSampler.standard`), seeded."""
    return CorruptionSampler.standard()(dict(arrays), np.random.default_rng([seed, 0xC0DE]))


def _corruption_label(arrays: RawBatch, modality: str, i: int) -> str:
    key = f'ctype_{modality}'
    if key not in arrays:
        return ''
    code, severity = int(arrays[key][i]), float(arrays[f'severity_{modality}'][i])
    if code == 0 or severity == 0:
        return 'clean'
    try:
        name = CORRUPTION_TYPES[modality][code]
    except (KeyError, IndexError):
        name = f'type {code}'
    return f'{name} {severity:.2f}'


def _write_grid(arrays: RawBatch, class_names, path: Path, title: str) -> Path:
    modalities = present_modalities(arrays)
    n = len(arrays['label'])
    depth_max = PreprocessConfig().depth_max_m
    mel = Preprocessor().log_mel(arrays['audio']).numpy()[:, 0] * DB_STD + DB_MEAN if 'audio' in arrays else None
    fig = agg_figure((2.3 * len(modalities) + 0.8, 2.1 * n))
    axes = fig.subplots(n, len(modalities), squeeze=False)
    cmap = matplotlib.colormaps['viridis'].with_extremes(bad='black')
    for i in range(n):
        for j, m in enumerate(modalities):
            ax = axes[i, j]
            if m == 'rgb':
                ax.imshow(arrays['rgb'][i], interpolation='nearest')
            elif m == 'depth':
                shown = ax.imshow(np.ma.masked_invalid(arrays['depth'][i]), cmap=cmap, vmin=0.0, vmax=depth_max,
                                  interpolation='nearest')
                if i == 0:
                    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            else:
                ax.imshow(mel[i], origin='lower', aspect='auto', cmap='magma', vmin=-80, vmax=0)
            label = _corruption_label(arrays, m, i)
            heading = _TITLES[m] if i == 0 else ''
            ax.set_title('\n'.join(s for s in (heading, label) if s), fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(class_names[int(arrays['label'][i])], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
