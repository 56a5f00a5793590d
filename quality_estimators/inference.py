"""A trained checkpoint for inference, and one frame or batch run under a budget.

What evaluation, the CLI and the fusion engine share, and nothing more: this module imports no
trainer and no evaluation code, so a robot that only runs inference loads neither.

    path = default_checkpoint('synthetic')                # or any checkpoint file
    loaded = load_model(path, device='cpu')               # model, controller, preprocessing, costs
    policy, extra_flops = loaded.policy('admn')
    run = allocate_and_run(loaded.model, policy, raw, inputs, budget, present)
    flops = executed_flops(loaded.cost, run.keep, present, extra_flops)

Checkpoints load with ``weights_only`` (:mod:`admn_ros.fusion.checkpoint`). The trained default of
a built-in dataset (:mod:`admn_ros.fusion.default_models`, re-exported here) is the file shipped in
the package, or one trained into the cache when ``ADMN_DEFAULT_MODEL=cache`` asks for it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from admn_ros.datasets.preprocess import Preprocessor
from admn_ros.datasets.sample import RawBatch
from admn_ros.fusion.checkpoint import checkpoint_preprocessor, load_checkpoint, load_weights
# The default-checkpoint lookup lives below fusion; callers have always found it here.
from admn_ros.fusion.default_models import (PREFERENCE_ENV, cached_checkpoint, default_checkpoint,
                                            shipped_checkpoint)
from admn_ros.fusion.device import resolve_device
from admn_ros.fusion.flops import CostModel
from admn_ros.fusion.layershuffle import inject_faults
from admn_ros.fusion.model import ADMNModel
from admn_ros.fusion.prune import scorer_blocks
from admn_ros.quality_estimators.budget import Budget
from admn_ros.quality_estimators.controller import (AllocationController, ControllerConfig, ControllerScorer,
                                                    controller_cost_flops)
from admn_ros.quality_estimators.policies import Policy, make_policy

# ------------------------------------------------------------------------ loading

def load_controller(path, map_location='cpu'):
    """(model, controller or None, meta) from a controller or stage-1 checkpoint, both in eval mode."""
    model, meta = load_checkpoint(path, map_location=map_location)
    ctrl = None
    if 'controller_state' in meta:
        ctrl = AllocationController(ControllerConfig.from_dict(meta['controller_config']))
        load_weights(ctrl, meta['controller_state'], f'{path}: controller weights do not match its config')
        ctrl.to(map_location).eval()
    return model.eval(), ctrl, meta


def make_scorer(ctrl, meta, modalities, device=None) -> ControllerScorer:
    """The controller as the ``admn`` policy's scorer, with the checkpoint's own preprocessing."""
    return ControllerScorer(ctrl, checkpoint_preprocessor(meta), modalities, device,
                            blocks=scorer_blocks(meta))


@dataclass
class LoadedModel:
    """A checkpoint ready to run: model, controller (None in a stage-1 file), metadata, the
    preprocessing it was trained with and its cost model."""

    path: str
    model: ADMNModel
    controller: Optional[AllocationController]
    meta: Dict[str, Any]
    preprocessor: Preprocessor
    cost: CostModel
    device: torch.device
    _scorer: Optional[ControllerScorer] = field(default=None, repr=False)

    @property
    def modalities(self) -> Tuple[str, ...]:
        return tuple(self.model.modalities)

    @property
    def depth(self) -> int:
        return int(self.model.depth)

    def scorer(self) -> ControllerScorer:
        """The controller's scorer, built on first use and shared by every policy made here."""
        if self.controller is None:
            raise ValueError(f'{self.path} holds no controller, which policy admn needs; train '
                             'one (admn train controller) or pick a baseline policy such as '
                             'heuristic, naive, every_other or full')
        if self._scorer is None:
            self._scorer = make_scorer(self.controller, self.meta, self.modalities, self.device)
        return self._scorer

    def policy(self, spec: str, *, seed: int = 0) -> Tuple[Policy, float]:
        """(a fresh policy over every model modality, the FLOPs it adds per sample): the
        controller's own cost for ``admn``, nothing for the rule-based policies."""
        scorer = self.scorer() if spec == 'admn' else None
        extra = float(controller_cost_flops(self.controller.cfg)) if scorer is not None else 0.0
        policy = make_policy(spec, modalities=self.modalities, depth=self.depth, cost_model=self.cost,
                             seed=seed, controller=scorer)
        return policy, extra


def load_model(path, device='cpu') -> LoadedModel:
    """Everything :class:`LoadedModel` holds, from a checkpoint file, on ``device`` (a
    ``torch.device``, or a spec such as 'auto' or 'cuda:0')."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model, ctrl, meta = load_controller(path, map_location=dev)
    return LoadedModel(str(path), model, ctrl, meta, checkpoint_preprocessor(meta),
                       CostModel.from_config(model.cfg), dev)


# ------------------------------------------------------------------------ allocate -> run -> FLOPs

@dataclass
class AllocatedRun:
    """One allocate-and-run: the policy's masks (every configured modality, bool [B, depth]),
    the model's logits [B, classes] and the seconds each part took."""

    keep: Dict[str, np.ndarray]
    logits: torch.Tensor
    policy_s: float
    model_s: float


def allocate_and_run(model: ADMNModel, policy: Policy, raw: RawBatch, inputs: Dict[str, torch.Tensor],
                     budget: Budget, present: Sequence[str], device=None, *, fault_rate: float = 0.0,
                     generator: Optional[torch.Generator] = None) -> AllocatedRun:
    """Allocate layers under ``budget`` for the ``present`` modalities, then run ``model`` on
    ``inputs`` (the preprocessed ``raw``) with exactly those layers, really skipping the others.
    With ``fault_rate`` each chosen layer fails (is skipped) with that probability, as in a faulty
    or distributed execution (:func:`admn_ros.fusion.layershuffle.inject_faults`); ``keep`` then
    holds the layers that ran."""
    device = device or next(model.parameters()).device
    t0 = time.perf_counter()
    keep_np = policy.allocate(raw, budget, present, inputs)
    if fault_rate > 0:
        masks = {m: torch.as_tensor(np.asarray(k, dtype=bool)) for m, k in keep_np.items()}
        keep_np = {m: k.numpy() for m, k in inject_faults(masks, fault_rate, generator).items()}
    t1 = time.perf_counter()
    keep = {m: torch.as_tensor(np.asarray(keep_np[m], dtype=bool), device=device) for m in present}
    with torch.inference_mode():
        logits = model(inputs, keep)
    if logits.device.type == 'cuda':   # so model_s is the model's time, not its launch
        torch.cuda.synchronize(logits.device)
    return AllocatedRun(keep_np, logits, t1 - t0, time.perf_counter() - t1)


def executed_flops(cost: CostModel, keep: Dict[str, np.ndarray], present: Sequence[str],
                   extra_flops: float = 0.0) -> np.ndarray:
    """FLOPs per sample of what ran: the kept encoder blocks of the present modalities, their
    embeddings and adapters, fusion and head, plus ``extra_flops`` (the controller's)."""
    return cost.total_flops({m: keep[m] for m in present}) + extra_flops


__all__ = ['PREFERENCE_ENV', 'shipped_checkpoint', 'cached_checkpoint', 'default_checkpoint',
           'load_controller', 'make_scorer', 'LoadedModel', 'load_model', 'AllocatedRun', 'allocate_and_run',
           'executed_flops']
