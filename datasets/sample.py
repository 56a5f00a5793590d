"""The raw sample / batch contract shared by every dataset, corruption and preprocessing step.

A *raw batch* is a plain dict of numpy arrays, one leading batch axis everywhere:

===========  ===========================  ==============================================
key          dtype / shape                meaning
===========  ===========================  ==============================================
``rgb``      uint8 ``[B, H, W, 3]``       camera image, RGB order
``depth``    float32 ``[B, H, W]``        metric depth in metres, NaN = invalid (REP 118)
``audio``    float32 ``[B, T]``           mono waveform in [-1, 1] at ``SAMPLE_RATE``
``label``    int64 ``[B]``                class index
===========  ===========================  ==============================================

Any modality key may be absent (AV-digits has no depth; a user's folder may have only audio).
Corruption labels ride along as ``severity_<modality>`` (float32 ``[B]``, 0 = clean) and
``ctype_<modality>`` (int64 ``[B]``, index into that modality's corruption-type list, 0 = clean).
Nothing here imports torch: the batch becomes tensors only in :mod:`admn_ros.datasets.preprocess`.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

MODALITIES = ('rgb', 'depth', 'audio')
SAMPLE_RATE = 16000

RawBatch = Dict[str, np.ndarray]


def batch_size(batch: RawBatch) -> int:
    """Number of samples in a raw batch (taken from the label, else the first modality)."""
    for key in ('label',) + MODALITIES:
        if key in batch:
            return int(len(batch[key]))
    raise ValueError('raw batch has neither a label nor any modality')


def present_modalities(batch: RawBatch) -> tuple:
    """Modalities present in the batch, in canonical order."""
    return tuple(m for m in MODALITIES if m in batch)


def take(batch: RawBatch, index) -> RawBatch:
    """Select samples (an index array, slice or boolean mask) from every array in the batch."""
    return {k: v[index] for k, v in batch.items()}


def concat(batches) -> RawBatch:
    """Concatenate raw batches that share the same keys."""
    batches = list(batches)
    if not batches:
        raise ValueError('nothing to concatenate')
    keys = batches[0].keys()
    for b in batches[1:]:
        if b.keys() != keys:
            raise ValueError(f'batches disagree on keys: {sorted(keys)} vs {sorted(b.keys())}')
    return {k: np.concatenate([b[k] for b in batches]) for k in keys}
