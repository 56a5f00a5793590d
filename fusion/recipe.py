"""The small-data recipe: batch size, epochs, warm-up, stem and early stopping sized to the data.

Every choice applies only where the config leaves the field empty (``null`` or absent); a value
you set is kept. The rule (``n`` = training samples per process):

=================  ==========================================================================
field              when left empty
=================  ==========================================================================
``batch_size``     ``min(64, n // 20)`` (at least 1): at least :data:`MIN_STEPS_PER_EPOCH`
                   optimiser steps per epoch whenever ``n >= 20``; 64 from 1280 samples up
``epochs``         enough epochs for :data:`MIN_TOTAL_STEPS` steps, within
                   [:data:`MIN_EPOCHS`, :data:`MAX_EPOCHS`]: small sets get more passes
``warmup_steps``   5 % of all steps, at most 100
``lr``             1e-3 from scratch, 3e-4 when starting from trained weights (``init``): large
                   steps would wash out what the encoders learned before the new head fits
                   (measured on 150 AV-digits samples: test accuracy 0.82 at 1e-3, 0.88 at 3e-4;
                   docs/results.md)
``stem``           ``conv`` below :data:`CONV_STEM_BELOW` samples when training from scratch
                   (a convolutional stem learns far faster than a patch projection on little
                   data); the encoders' own stem otherwise and always with ``init``, whose
                   encoders fix it
early stopping     when the recipe chose ``epochs``: stop after ``max(10, epochs // 5)`` epochs
                   without a better validation score; ``early_stop_patience`` sets it
                   explicitly (``0`` = never stop early). Never while the validation accuracy
                   has not left chance (:func:`chance_bar`): on little data learning may only
                   start after 15-20 epochs, and a run stopped before that is lost
``freeze_blocks``  below :data:`SEARCH_BELOW` training samples with ``init``: chosen on
 and ``lr``        validation among :data:`FREEZE_FRACTIONS` of the blocks (0, 4, 6 of 12) x
                   :data:`LR_CANDIDATES` by short runs (:func:`search_plan`); from scratch the
                   ``lr`` alone (1e-3 or 3e-4); ``0`` and the ``lr`` above otherwise
=================  ==========================================================================

The validation score is the mean of the full-depth and quarter-depth accuracy (an ADMN model has
to work at every budget). The best epoch's weights become ``model.pt`` (:class:`BestEpoch`); epochs
before the corruption augmentation starts do not count, since a model that has not yet seen
corruptions is not the one to keep.

The small-data search (:func:`search_plan`, run by :mod:`admn_ros.fusion.stage1`): below
:data:`SEARCH_BELOW` samples one validation split decides between a handful of settings that
matter most there - how much of the copied encoders to keep fixed and how fast to move the rest
(5-6 points of test accuracy on 150 AV-digits samples). The threshold is a cost choice: six
half-length runs take minutes at a few hundred samples and hours at a few thousand on a CPU. Each candidate trains
for half the run's epochs (at least :data:`MIN_SEARCH_EPOCHS`, at most the run's, without early stopping)
and is scored by its best validation score; ties keep the earlier (default-first) candidate.
Half, not a quarter: on 150 AV-digits samples (3 seeds) quarter-length runs all chose lr 1e-3,
which learns faster early but tested worse at full length on two seeds (mean test accuracy 0.817);
half-length runs chose better on one of them (0.833; without a search 0.828). docs/results.md.
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

MIN_STEPS_PER_EPOCH = 20
MAX_BATCH_SIZE = 64
MIN_TOTAL_STEPS = 1000
MIN_EPOCHS, MAX_EPOCHS = 20, 200
WARMUP_FRACTION, MAX_WARMUP_STEPS = 0.05, 100
CONV_STEM_BELOW = 2000
MIN_PATIENCE = 10
LR_SCRATCH, LR_INIT = 1e-3, 3e-4
# The small-data search (see the module docstring).
SEARCH_BELOW = 1000
# Of the encoders' blocks: 0, 4, 6 of 12. From MAE-pretrained encoders at 150 labels, 4 frozen
# beat 6 and 8 (and 9 was never chosen from the synthetic ones): fine-tuning every block washes out
# the pretraining, freezing most leaves too little to adapt.
FREEZE_FRACTIONS = (0.0, 1 / 3, 0.5)
LR_CANDIDATES = (LR_INIT, 1e-3)
MIN_SEARCH_EPOCHS = 4


@dataclass
class Recipe:
    """The resolved values and, for each, whether the recipe chose it or the config set it."""

    batch_size: int
    epochs: int
    warmup_steps: int
    lr: float
    steps_per_epoch: int
    stem: Optional[str]                 # None: keep the encoders' own stems
    patience: int                       # 0: no early stopping
    chosen: Dict[str, str] = field(default_factory=dict)   # field -> why (only those chosen)

    def describe(self, n: int) -> str:
        """One line a run prints: every value, the chosen ones marked with their reason."""
        parts = []
        for name in ('batch_size', 'epochs', 'warmup_steps', 'lr', 'stem', 'patience'):
            value = getattr(self, name)
            if name == 'stem' and value is None:
                value = 'as configured'
            why = self.chosen.get(name)
            parts.append(f'{name}={value}' + (f' ({why})' if why else ''))
        return (f'recipe for {n} training samples, {self.steps_per_epoch} steps/epoch: '
                + ', '.join(parts))


def batch_size_for(n: int, max_batch: int = MAX_BATCH_SIZE) -> int:
    """The largest batch up to ``max_batch`` that still gives :data:`MIN_STEPS_PER_EPOCH` steps."""
    return max(1, min(int(max_batch), int(n) // MIN_STEPS_PER_EPOCH))


def choose(n: int, *, batch_size: Optional[int] = None, epochs: Optional[int] = None,
           warmup_steps: Optional[int] = None, lr: Optional[float] = None,
           stem: Optional[str] = None, patience: Optional[int] = None,
           from_scratch: bool = True) -> Recipe:
    """Fill the empty fields for ``n`` training samples (module docstring for the rule)."""
    if n < 1:
        raise ValueError('the training split holds no samples')
    chosen: Dict[str, str] = {}
    if batch_size is None:
        batch_size = batch_size_for(n)
        chosen['batch_size'] = f'>= {MIN_STEPS_PER_EPOCH} steps/epoch' if n >= MIN_STEPS_PER_EPOCH \
            else f'fewer than {MIN_STEPS_PER_EPOCH} samples'
    steps = max(1, n // batch_size)
    if epochs is None:
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_TOTAL_STEPS / steps)))
        chosen['epochs'] = f'>= {MIN_TOTAL_STEPS} steps in all, {MIN_EPOCHS}..{MAX_EPOCHS}'
    if warmup_steps is None:
        warmup_steps = min(MAX_WARMUP_STEPS, max(1, round(WARMUP_FRACTION * steps * epochs)))
        chosen['warmup_steps'] = f'{WARMUP_FRACTION:.0%} of the steps, <= {MAX_WARMUP_STEPS}'
    if lr is None:
        lr = LR_SCRATCH if from_scratch else LR_INIT
        chosen['lr'] = 'from scratch' if from_scratch else 'fine-tuning trained weights'
    if stem is None and from_scratch and n < CONV_STEM_BELOW:
        stem = 'conv'
        chosen['stem'] = f'from scratch on < {CONV_STEM_BELOW} samples'
    if patience is None:
        if 'epochs' in chosen:
            patience = max(MIN_PATIENCE, epochs // 5)
            chosen['patience'] = 'early stopping, as the recipe chose the epochs'
        else:
            patience = 0
    return Recipe(batch_size=int(batch_size), epochs=int(epochs), warmup_steps=int(warmup_steps),
                  lr=float(lr), steps_per_epoch=steps, stem=stem, patience=int(patience), chosen=chosen)


def val_score(val_acc: float, val_acc_quarter: float) -> float:
    """What the best epoch is chosen by: full- and quarter-depth accuracy alike."""
    return 0.5 * (float(val_acc) + float(val_acc_quarter))


@dataclass
class BestEpoch:
    """Tracks the best validation epoch of a run, keeps its weights in ``path`` (``best.pt``) and
    says when to stop. ``state()`` / ``from_state`` carry it across ``--resume``."""

    path: Path
    patience: int = 0
    first_epoch: int = 0            # epochs before it do not count (augmentation not started)
    best_epoch: int = -1
    best_score: float = -math.inf
    chance_bar: float = -math.inf   # no early stop before some epoch's val accuracy passed it
    best_val_acc: float = -math.inf  # the best epoch's full-depth accuracy
    peak_val_acc: float = -math.inf  # the highest full-depth accuracy of any epoch

    def update(self, epoch: int, score: float, save, val_acc: Optional[float] = None) -> bool:
        """Record ``epoch``'s score (and full-depth accuracy); calls ``save(path)`` when it is the
        best so far. Returns True when it is."""
        if val_acc is not None:
            self.peak_val_acc = max(self.peak_val_acc, float(val_acc))
        if epoch < self.first_epoch or score <= self.best_score:
            return False
        self.best_epoch, self.best_score = int(epoch), float(score)
        if val_acc is not None:
            self.best_val_acc = float(val_acc)
        save(self.path)
        return True

    @property
    def left_chance(self) -> bool:
        return self.peak_val_acc > self.chance_bar

    def patience_out(self, epoch: int) -> bool:
        """``patience`` epochs without a better score (whatever the score is)."""
        return self.patience > 0 and self.best_epoch >= 0 and epoch - self.best_epoch >= self.patience

    def should_stop(self, epoch: int) -> bool:
        return self.patience_out(epoch) and self.left_chance

    def state(self) -> Dict[str, float]:
        return {'best_epoch': self.best_epoch, 'best_score': self.best_score,
                'best_val_acc': self.best_val_acc, 'peak_val_acc': self.peak_val_acc}

    def restore(self, state: Optional[Dict[str, float]]) -> None:
        if state:
            self.best_epoch = int(state.get('best_epoch', -1))
            self.best_score = float(state.get('best_score', -math.inf))
            self.best_val_acc = float(state.get('best_val_acc', -math.inf))
            self.peak_val_acc = float(state.get('peak_val_acc', -math.inf))


def resolve_stage1(cfg, n: int, world_size: int = 1) -> Tuple[object, Recipe]:
    """A copy of stage-1 config ``cfg`` with the recipe's values filled in (``stem`` written into
    every encoder of ``cfg.model``), and the :class:`Recipe`. ``n``: training samples in all."""
    recipe = choose(max(1, n // world_size), batch_size=cfg.batch_size, epochs=cfg.epochs,
                    warmup_steps=cfg.warmup_steps, lr=cfg.lr, stem=cfg.stem, patience=cfg.early_stop_patience,
                    from_scratch=not (cfg.init or cfg.init_encoders or getattr(cfg, 'fine_tune_from', None)))
    model = cfg.model
    if recipe.stem is not None:
        model = dataclasses.replace(model, encoders={
            m: dataclasses.replace(e, stem=recipe.stem) for m, e in model.encoders.items()})
    return dataclasses.replace(cfg, model=model, batch_size=recipe.batch_size, epochs=recipe.epochs,
                               warmup_steps=recipe.warmup_steps, lr=recipe.lr, stem=recipe.stem,
                               early_stop_patience=recipe.patience), recipe


# ---------------------------------------------------------------------- the small-data search

@dataclass(frozen=True)
class Candidate:
    freeze_blocks: int
    lr: float

    @property
    def name(self) -> str:
        return f'freeze{self.freeze_blocks}_lr{self.lr:g}'


def search_plan(n: int, *, from_scratch: bool, freeze_blocks: Optional[int], lr: Optional[float],
                epochs: int, depth: int) -> Tuple[Tuple[Candidate, ...], int]:
    """The candidates a run of ``n`` training samples tries, and how many epochs each; ``()`` when
    there is nothing to choose: ``n`` >= :data:`SEARCH_BELOW`, or both values set by the config.
    Freezing needs copied encoders, so from scratch only the learning rate is searched.
    The first candidate is what the recipe would pick without a search."""
    freezes = (int(freeze_blocks),) if freeze_blocks is not None else \
        ((0,) if from_scratch else tuple(dict.fromkeys(int(f * depth) for f in FREEZE_FRACTIONS)))
    lrs = (float(lr),) if lr is not None else \
        ((LR_SCRATCH, LR_INIT) if from_scratch else LR_CANDIDATES)
    cands = tuple(Candidate(f, r) for f in freezes for r in lrs)
    if n >= SEARCH_BELOW or len(cands) < 2:
        return (), 0
    return cands, min(int(epochs), max(MIN_SEARCH_EPOCHS, epochs // 2))   # never longer than the run


# -------------------------------------------------------------------------- the chance guard

def chance_bar(val_labels) -> Tuple[float, float]:
    """``(chance, bar)``: the accuracy of always answering the validation split's most common
    class, and the accuracy a run must pass to have left it - two binomial standard errors of
    that accuracy on this many samples above it (at least 0.02): a model that has learned
    nothing lands within that of chance on nineteen splits in twenty."""
    import numpy as np
    labels = np.asarray(val_labels)
    if not len(labels):
        return 0.0, 0.0
    p = float(np.bincount(labels).max() / len(labels))
    return p, min(1.0, p + max(0.02, 2.0 * math.sqrt(p * (1.0 - p) / len(labels))))


def verdict(val_acc: float, chance: float, bar: float, linear_val_acc: Optional[float]) -> Optional[str]:
    """The one line a run ends with when its result should not be used as it is; None otherwise."""
    if val_acc <= bar:
        return (f'WARNING: stage 1 ended at chance: best validation accuracy {val_acc:.3f}, chance '
                f'{chance:.3f} (bar {bar:.3f}); this model has learned nothing usable - check the '
                'labels (admn data check), train longer or start from --init default')
    if linear_val_acc is not None and val_acc < linear_val_acc:
        return (f'WARNING: stage 1 is below the linear baseline: validation accuracy {val_acc:.3f} '
                f'vs {linear_val_acc:.3f} for a logistic regression on pooled inputs: it has not earned '
                'its cost here (more labels or a starting point closer to this data may)')
    return None


def refuse_chance_level(meta: Dict, path, force: bool = False) -> Optional[str]:
    """Raise ValueError when stage-1 checkpoint ``path`` (metadata ``meta``) ended at chance;
    with ``force``, return the warning instead. None when it left chance or does not say."""
    validation = meta.get('validation') or {}
    if validation.get('left_chance', True):
        return None
    line = (f'{path}: stage 1 ended at chance (validation accuracy {validation.get("model_val_acc")}, '
            f'chance {validation.get("chance")}): a controller on it would only allocate layers to a '
            'model that has learned nothing')
    if not force:
        raise ValueError(line + '; retrain stage 1, or pass --force to train the controller anyway')
    return line + ' (--force: training anyway)'
