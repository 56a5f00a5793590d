"""The linear baseline every stage-1 run is held against: a logistic regression on pooled inputs.

Features (:func:`pooled_features`): every modality's model input (the one preprocessing path)
average-pooled to :data:`POOL` x :data:`POOL` per channel, flattened and concatenated, then
standardised on the training split. ``C`` is picked on the validation split among :data:`CS`.
On little data this is hard to beat (pooled pixels of handwritten digits alone reach 0.8), so a
deep model that scores below it has learned less than a linear read-out of its own inputs.

The fit is kept as plain tensors and numbers (:meth:`LinearBaseline.state`) inside the stage-1
checkpoint's metadata, which loads with ``weights_only=True``; nothing is pickled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from admn_ros.datasets.sample import RawBatch, present_modalities, take

POOL = 16
CS: Tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
#: Training samples the fit uses at most (a seeded subset of the training split above that):
#: the baseline is a reference, and a large split would only make every run slower.
MAX_FIT_SAMPLES = 4000
_CHUNK = 256   # samples preprocessed at a time (a whole large split at once would not fit)


def pooled_features(arrays: RawBatch, pre, modalities: Optional[Sequence[str]] = None) -> np.ndarray:
    """``[B, F]``: each modality's model input pooled to POOL x POOL, flattened, concatenated in
    sorted modality order. ``modalities`` fixes which (default: those present)."""
    import torch
    import torch.nn.functional as F
    mods = sorted(modalities if modalities is not None else present_modalities(arrays))
    n = len(arrays['label']) if 'label' in arrays else len(arrays[mods[0]])
    out = []
    for start in range(0, n, _CHUNK):
        raw = take({m: arrays[m] for m in mods}, slice(start, start + _CHUNK))
        with torch.inference_mode():
            x = pre(raw)
            out.append(np.concatenate([F.adaptive_avg_pool2d(x[m], POOL).flatten(1).numpy() for m in mods], 1))
    return np.concatenate(out, 0) if out else np.zeros((0, 0), np.float32)


@dataclass
class LinearBaseline:
    """A fitted logistic regression on :func:`pooled_features`, as arrays."""

    modalities: Tuple[str, ...]
    mean: np.ndarray          # [F] standardisation
    scale: np.ndarray         # [F]
    coef: np.ndarray          # [K, F]
    intercept: np.ndarray     # [K]
    C: float
    val_acc: float
    train_samples: int

    def logits(self, arrays: RawBatch, pre) -> np.ndarray:
        missing = [m for m in self.modalities if m not in arrays]
        if missing:
            raise ValueError(f'the linear baseline needs {", ".join(missing)}, absent from the data')
        x = (pooled_features(arrays, pre, self.modalities) - self.mean) / self.scale
        return x @ self.coef.T + self.intercept

    def predict(self, arrays: RawBatch, pre) -> np.ndarray:
        return self.logits(arrays, pre).argmax(-1)

    def accuracy(self, arrays: RawBatch, pre) -> float:
        if not len(arrays['label']):
            return float('nan')
        return float((self.predict(arrays, pre) == np.asarray(arrays['label'])).mean())

    @property
    def flops(self) -> float:
        """Multiply-adds of the read-out, counted as two FLOPs each (pooling not counted)."""
        return 2.0 * self.coef.size

    def state(self) -> Dict:
        """Tensors and plain values only: goes into a checkpoint loaded with weights_only."""
        import torch
        return {'modalities': list(self.modalities), 'pool': POOL, 'C': float(self.C),
                'val_acc': float(self.val_acc), 'train_samples': int(self.train_samples),
                **{k: torch.as_tensor(np.asarray(getattr(self, k), np.float32))
                   for k in ('mean', 'scale', 'coef', 'intercept')}}

    @classmethod
    def from_state(cls, state: Dict) -> 'LinearBaseline':
        if int(state.get('pool', POOL)) != POOL:
            raise ValueError(f'linear baseline pooled to {state["pool"]}, this version pools to {POOL}')
        arrays = {k: np.asarray(state[k], np.float32) for k in ('mean', 'scale', 'coef', 'intercept')}
        return cls(modalities=tuple(state['modalities']), C=float(state['C']), val_acc=float(state['val_acc']),
                   train_samples=int(state['train_samples']), **arrays)


def fit_linear_baseline(train: RawBatch, val: RawBatch, pre, *, seed: int = 0,
                        modalities: Optional[Sequence[str]] = None, cs: Sequence[float] = CS,
                        max_samples: int = MAX_FIT_SAMPLES) -> LinearBaseline:
    """Fit on ``train`` (at most ``max_samples``, a seeded subset), ``C`` chosen on ``val``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    n = len(train['label'])
    if n > max_samples:
        train = take(train, np.sort(np.random.default_rng([seed, 0x11AEA]).permutation(n)[:max_samples]))
    mods = tuple(sorted(modalities if modalities is not None else present_modalities(train)))
    x_train, x_val = pooled_features(train, pre, mods), pooled_features(val, pre, mods)
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    y_train, y_val = np.asarray(train['label']), np.asarray(val['label'])
    classes = int(max(y_train.max(initial=0), y_val.max(initial=0))) + 1
    best = None
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        score = float(clf.score(x_val, y_val)) if len(y_val) else 0.0
        if best is None or score > best[0]:
            best = (score, c, clf)
    score, c, clf = best
    coef, intercept = _all_classes(clf, classes)
    return LinearBaseline(modalities=mods, mean=scaler.mean_.astype(np.float32),
                          scale=scaler.scale_.astype(np.float32), coef=coef, intercept=intercept,
                          C=float(c), val_acc=score, train_samples=len(y_train))


def _all_classes(clf, classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Coefficients for every class index (a class the training split lacks never wins; a two-
    class fit's single row becomes two)."""
    coef, intercept = np.asarray(clf.coef_, np.float32), np.asarray(clf.intercept_, np.float32)
    seen = np.asarray(clf.classes_, np.int64)
    if len(seen) == 2 and coef.shape[0] == 1:
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    full_coef = np.zeros((max(classes, int(seen.max()) + 1), coef.shape[1]), np.float32)
    full_int = np.full(full_coef.shape[0], -1e9, np.float32)
    full_coef[seen], full_int[seen] = coef, intercept
    return full_coef, full_int
