"""Score a recorded bag offline: decode it once, then run every (policy, budget) cell in batches.

    report = evaluate_bag('runs/bag', policies=['admn', 'full'], budgets=[0.5, 1.0])

The bag is read with :func:`admn_ros.datasets.bags.read_bag` (``topics`` names the streams of a
foreign bag) with audio windowed as the fusion node windows it: the last clip of the checkpoint's
length up to each audio message, zero-padded at the end when shorter. A bag of whole per-sample
clips thus gives each sample its own clip, and a robot's continuous microphone one clip per
camera frame. Each cell then runs the model as the node runs it - the checkpoint's own
preprocessing, a policy over every model modality with the absent ones not ``present``, real
layer skipping (:mod:`admn_ros.quality_estimators.inference`) - on ``batch_size`` frames at a
time. For policies that treat frames independently (all but the seeded ``random``) every frame
gets the class and the layers the node would give it.

Without a label topic the cells hold predictions, allocations and timings, and no accuracy. The
checkpoint defaults to the shipped default of the dataset the bag says it was recorded from
(``admn bag record`` writes it into the bag's metadata), else of ``dataset``.

The report is plain JSON-able data (see :func:`evaluate_bag`); ``admn bag eval`` writes it with
its Markdown and plots (:mod:`admn_ros.bag_report`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from admn_ros.datasets.bags import CUSTOM_DATASET, BagError, BagSamples, bag_custom_data, read_bag
from admn_ros.datasets.corruptions import corruption_labels
from admn_ros.datasets.sample import RawBatch, take
from admn_ros.quality_estimators.budget import Budget
from admn_ros.quality_estimators.inference import (LoadedModel, allocate_and_run, default_checkpoint,
                                                   executed_flops, load_model)

DEFAULT_BATCH = 64


def bag_dataset(bag) -> Optional[str]:
    """The dataset a bag was recorded from, when its metadata says (``admn bag record``)."""
    return bag_custom_data(bag).get(CUSTOM_DATASET) or None


def resolve_checkpoint(bag, checkpoint=None, dataset: Optional[str] = None) -> str:
    """``checkpoint``, else the default of ``dataset``, else of the dataset the bag names."""
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
        return str(checkpoint)
    name = dataset or bag_dataset(bag)
    if not name:
        raise ValueError(f'{bag} does not say which dataset it holds (a bag not recorded by '
                         '`admn bag record`): pass --checkpoint FILE or --dataset NAME')
    return str(default_checkpoint(name))


def fit_audio(batch: RawBatch, clip_samples: int) -> RawBatch:
    """Audio zero-padded at the end to the model's clip (as the node pads a stream's first
    chunks); longer clips keep their last ``clip_samples``, as the node's rolling window does."""
    if 'audio' not in batch:
        return batch
    audio = batch['audio']
    if audio.shape[1] > clip_samples:
        audio = audio[:, -clip_samples:]
    elif audio.shape[1] < clip_samples:
        audio = np.pad(audio, ((0, 0), (0, clip_samples - audio.shape[1])))
    return {**batch, 'audio': np.ascontiguousarray(audio, dtype=np.float32)}


def read_for_model(bag, loaded: LoadedModel, topics: Optional[Mapping[str, str]] = None
                   ) -> BagSamples:
    """The bag's synchronised frames, cut and padded for ``loaded``'s model."""
    clip = loaded.preprocessor.cfg.clip_samples
    samples = read_bag(bag, topics=topics, audio_window=clip)
    samples.batch = fit_audio(samples.batch, clip)
    return samples


def _levels(batch: RawBatch) -> List[Optional[Dict[str, List]]]:
    """Per frame ``{modality: [type, severity]}`` from the recorded corruption (None without)."""
    n = len(next(iter(batch.values())))
    labels = corruption_labels(batch)
    if not labels:
        return [None] * n
    return [{m: [names[i], round(float(sev[i]), 6)] for m, (names, sev) in labels.items()}
            for i in range(n)]


def score_cell(loaded: LoadedModel, samples: BagSamples, spec: str, budget: Budget, *,
               batch_size: int = DEFAULT_BATCH, seed: int = 0) -> Dict[str, Any]:
    """One (policy, budget) cell over every frame of the bag; see :func:`evaluate_bag`."""
    batch = samples.batch
    present = tuple(m for m in loaded.modalities if m in batch)
    if not present:
        raise ValueError(f'the bag holds none of the model modalities {loaded.modalities}')
    policy, extra = loaded.policy(spec, seed=seed)
    n = len(samples.stamps_ns)
    labels = batch.get('label')
    predicted, scores, flops = [], [], []
    layers = {m: [] for m in present}
    seconds = {'preprocess': 0.0, 'policy': 0.0, 'model': 0.0}
    start = time.perf_counter()
    for lo in range(0, n, batch_size):
        raw = take(batch, slice(lo, lo + batch_size))
        t0 = time.perf_counter()
        inputs = {m: x.to(loaded.device) for m, x in loaded.preprocessor(raw).items() if m in present}
        seconds['preprocess'] += time.perf_counter() - t0
        run = allocate_and_run(loaded.model, policy, raw, inputs, budget, present, loaded.device)
        seconds['policy'] += run.policy_s
        seconds['model'] += run.model_s
        probs = torch.softmax(run.logits.float(), dim=-1).cpu().numpy()
        predicted.append(probs.argmax(-1))
        scores.append(probs.max(-1))
        flops.append(executed_flops(loaded.cost, run.keep, present, extra))
        for m in present:
            layers[m].append(np.asarray(run.keep[m]).sum(-1))
    total = time.perf_counter() - start
    predicted = np.concatenate(predicted)
    scores = np.concatenate(scores)
    gflops = np.concatenate(flops) / 1e9
    per_layers = {m: np.concatenate(v) for m, v in layers.items()}
    correct = None if labels is None else predicted == np.asarray(labels)
    levels = _levels(batch)
    names = class_names(loaded, samples)
    t0 = int(samples.stamps_ns[0]) if n else 0
    frames = []
    for i in range(n):
        frames.append({
            't_s': round((int(samples.stamps_ns[i]) - t0) / 1e9, 6),
            'stamp_ns': int(samples.stamps_ns[i]),
            'predicted': int(predicted[i]), 'class_name': names[int(predicted[i])],
            'score': round(float(scores[i]), 6),
            'label': None if labels is None else int(labels[i]),
            'correct': None if correct is None else bool(correct[i]),
            'layers': {m: int(per_layers[m][i]) for m in present},
            'gflops': round(float(gflops[i]), 6),
            'levels': levels[i]})
    per_sample = {f'{k}_ms_per_frame': 1e3 * v / max(n, 1) for k, v in seconds.items()}
    return {
        'policy': spec, 'budget': budget.fraction, 'budget_unit': budget.unit, 'path': 'offline',
        'frames_scored': n, 'matched': 0 if correct is None else n,
        'accuracy': None if correct is None else float(correct.mean()) if n else None,
        'mean_gflops': float(gflops.mean()) if n else None,
        'mean_layers': {m: float(v.mean()) for m, v in per_layers.items()} if n else {},
        'timing': {'total_s': total, 'frames_per_s': n / total if total > 0 else None,
                   **per_sample},
        'frames': frames}


def check_decodable(bag, samples: BagSamples, modalities: Sequence[str],
                    allow_missing_modalities: bool = False) -> None:
    """:class:`BagError` (one line) when a model modality or the labels are mostly undecodable,
    or (unless allowed) a model modality is absent; see :func:`evaluate_bag`."""
    broken = samples.mostly_undecodable(list(modalities) + ['label'])
    if broken:
        raise BagError(f'{bag}: not scored: ' + ', '.join(broken)
                       + ' (an accuracy from the few frames left would not describe the bag)')
    missing = [m for m in modalities if m not in samples.batch]
    if missing and not allow_missing_modalities:
        raise BagError(f'{bag} has no {", ".join(missing)} for the model (modalities '
                       f'{", ".join(modalities)}): pass --allow-missing-modalities to score '
                       'without them')


def class_names(loaded: LoadedModel, samples: BagSamples) -> List[str]:
    """The model's class names (the bag's when the model has none of its own)."""
    n = int(loaded.model.cfg.num_classes)
    for names in (loaded.meta.get('class_names'), samples.class_names):
        if names and len(names) == n:
            return [str(c) for c in names]
    return [str(i) for i in range(n)]


def evaluate_bag(bag, *, checkpoint=None, dataset: Optional[str] = None,
                 policies: Sequence[str] = ('admn',), budgets: Sequence[float] = (0.5,),
                 unit: str = 'layers', topics: Optional[Mapping[str, str]] = None,
                 device: str = 'auto', batch_size: int = DEFAULT_BATCH, seed: int = 0,
                 allow_missing_modalities: bool = False) -> Dict[str, Any]:
    """Every (policy, budget) cell on the frames of ``bag``.

    Returns ``{bag, checkpoint, dataset, path: 'offline', class_names, labelled,
    corruption_recorded, modalities, frames, unmatched, topics, device, read_s, cells}``; each
    cell holds ``policy, budget, accuracy`` (None without labels), ``matched``, ``mean_gflops``,
    ``mean_layers``, ``timing`` (wall seconds, frames per second, milliseconds per frame spent
    preprocessing, allocating and in the model) and ``frames`` (per frame: seconds since the
    first, stamp, predicted class and name, score, label and whether it was right, layers per
    present modality, executed GFLOPs, recorded corruption levels). ``undecodable`` counts the
    messages per recorded topic that did not decode.

    Refused (:class:`BagError`, one line) rather than scored: a bag where a model modality or
    the labels are recorded but mostly (over half) undecodable - the accuracy would describe the
    few frames that survived, paired by whatever was left - and, unless
    ``allow_missing_modalities``, a bag without one of the model's modalities.
    """
    from admn_ros.quality_estimators.policies import policy_spec_error
    for spec in policies:
        problem = policy_spec_error(spec)
        if problem:
            raise ValueError(problem)
    if not budgets:
        raise ValueError('no budget to evaluate')
    if int(batch_size) < 1:
        raise ValueError(f'batch size must be >= 1, got {batch_size}')
    cells_budgets = [Budget(float(b), unit) for b in budgets]   # refuses bad fractions early
    path = resolve_checkpoint(bag, checkpoint, dataset)
    loaded = load_model(path, device=device)
    t0 = time.perf_counter()
    samples = read_for_model(bag, loaded, topics)
    read_s = time.perf_counter() - t0
    check_decodable(bag, samples, loaded.modalities, allow_missing_modalities)
    n_classes = int(loaded.model.cfg.num_classes)
    if 'label' in samples.batch and len(samples.stamps_ns):
        top = int(np.max(samples.batch['label']))
        if top >= n_classes:
            raise ValueError(f'{bag} has labels up to {top} but {path} predicts {n_classes} '
                             'classes: pass the checkpoint trained on the bag\'s dataset')
    if len(samples.stamps_ns):
        # First calls build filterbanks, the controller's scorer and kernels: not a cell's time.
        first = BagSamples(take(samples.batch, slice(0, 1)), samples.stamps_ns[:1], [])
        for spec in dict.fromkeys(policies):
            score_cell(loaded, first, spec, cells_budgets[0], seed=seed)
    cells = [score_cell(loaded, samples, spec, b, batch_size=batch_size, seed=seed)
             for spec in policies for b in cells_budgets]
    return {
        'bag': str(bag), 'checkpoint': path, 'dataset': dataset or bag_dataset(bag),
        'path': 'offline', 'class_names': class_names(loaded, samples),
        'labelled': 'label' in samples.batch,
        'corruption_recorded': any(k.startswith('ctype_') for k in samples.batch),
        'modalities': [m for m in loaded.modalities if m in samples.batch],
        'model_modalities': list(loaded.modalities),
        'frames': int(len(samples.stamps_ns)), 'unmatched': dict(samples.unmatched),
        'undecodable': dict(samples.undecodable), 'recorded': dict(samples.recorded),
        'topics': dict(topics or {}), 'device': str(loaded.device), 'read_s': read_s,
        'cells': cells}


__all__ = ['evaluate_bag', 'check_decodable', 'score_cell', 'read_for_model', 'resolve_checkpoint', 'bag_dataset',
           'fit_audio', 'class_names']
