"""A loaded ADMN model that runs one synchronised frame under a budget (no rclpy)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from admn_ros.datasets.sample import RawBatch
from admn_ros.fusion.checkpoint import checkpoint_preprocessor
from admn_ros.fusion.device import resolve_device
from admn_ros.fusion.flops import CostModel
from admn_ros.quality_estimators.budget import Budget, spent_fraction
from admn_ros.quality_estimators.controller import controller_cost_flops
from admn_ros.quality_estimators.estimators import modality_quality
from admn_ros.quality_estimators.inference import (allocate_and_run, default_checkpoint, executed_flops,
                                                   load_controller, make_scorer)
from admn_ros.quality_estimators.policies import make_policy
from admn_ros.runtime.frame_queue import Frame
from admn_ros.wire.sensor_input import RejectedInput


@dataclass
class EngineConfig:
    """What :class:`FusionEngine` loads and how it allocates."""

    model_path: str = ''            # '' = the trained default of ``dataset``
    dataset: str = 'synthetic'      # picks the default checkpoint
    device: str = 'cpu'
    policy: str = 'admn'            # admn, full, naive, every_other, unimodal:<m>, random,
                                    # heuristic
    seed: int = 0                   # for the random policy
    modalities: Tuple[str, ...] = ()  # subset of the model's modalities to use; () = all
    quality: bool = True            # compute per-modality quality estimates for every frame
    layer_fault_rate: float = 0.0   # each chosen encoder block fails with this probability


@dataclass
class Inference:
    """Everything one frame produced."""

    stamp_ns: int
    frame_id: str
    class_id: int
    class_name: str
    score: float
    probs: np.ndarray                  # [num_classes]
    present: Tuple[str, ...]
    keep: Dict[str, np.ndarray]        # every model modality -> bool [depth] (absent: none)
    quality: Dict[str, float]
    gflops: float                      # NaN until FusionEngine.account
    budget_fraction: float
    budget_unit: str
    budget_spent: float                # fraction of the full encoder cost, in the budget's unit
                                       # (NaN until FusionEngine.account)
    preprocess_ms: float
    policy_ms: float
    model_ms: float

    @property
    def layers(self) -> Dict[str, int]:
        return {m: int(k.sum()) for m, k in self.keep.items()}


def resolve_model_path(model_path: str, dataset: str) -> str:
    """``model_path`` itself, or the default checkpoint of ``dataset`` when empty.

    Raises FileNotFoundError naming ``admn train defaults`` when there is none.
    """
    if model_path:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'model_path {str(path)!r} does not exist')
        return str(path)
    try:
        return str(default_checkpoint(dataset))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f'model_path is empty and {exc}; or set model_path') from None


class FusionEngine:
    """A loaded ADMN model with its preprocessing, policy and cost model (see :mod:`admn_ros.runtime`)."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.path = resolve_model_path(cfg.model_path, cfg.dataset)
        self.device = resolve_device(cfg.device)
        model, ctrl, meta = load_controller(self.path, map_location=self.device)
        if model.cfg.head != 'classification':
            raise ValueError(f'{self.path}: head {model.cfg.head!r}; admn_fusion publishes '
                             'classifications only')
        self.model = model.eval()
        self.meta = meta
        self.depth = int(model.depth)
        self.model_modalities = tuple(model.modalities)
        wanted = tuple(cfg.modalities) or self.model_modalities
        unknown = [m for m in wanted if m not in self.model_modalities]
        if unknown:
            raise ValueError(f'modalities {unknown} are not in the model {self.model_modalities}')
        self.modalities = tuple(m for m in self.model_modalities if m in wanted)
        names = list(meta.get('class_names') or [])
        n_classes = int(model.cfg.num_classes)
        self.class_names = names if len(names) == n_classes else [str(i) for i in range(n_classes)]
        self.preprocessor = checkpoint_preprocessor(meta)
        self.cost = CostModel.from_config(model.cfg)
        self.controller_flops = 0.0
        scorer = None
        if cfg.policy == 'admn':
            if ctrl is None:
                raise ValueError(f'{self.path} holds no controller, which policy admn needs; train '
                                 'one (admn train controller) or pick a baseline policy such as '
                                 'heuristic, naive, every_other or full')
            scorer = make_scorer(ctrl, meta, self.model_modalities, self.device)
            self.controller_flops = float(controller_cost_flops(ctrl.cfg))
        # The policy sees every modality of the model: the budget is a fraction of the full
        # model, and unused or quiet modalities simply are not ``present``.
        self._faults = torch.Generator().manual_seed(cfg.seed)   # layer_fault_rate's draws
        self.policy = make_policy(cfg.policy, modalities=self.model_modalities, depth=self.depth,
                                  cost_model=self.cost, seed=cfg.seed, controller=scorer)
        self._scorer = scorer
        self.warm_up()

    def warm_up(self) -> None:
        """One pass over a blank sample, so lazy imports, filterbanks and first-call allocations
        are paid at load time rather than by the first real frame. The policy itself is not
        called (a random policy's stream must start with the first real frame)."""
        size = 2 * self.preprocessor.cfg.image_size
        blank = {'rgb': np.zeros((1, size, size, 3), np.uint8),
                 'depth': np.ones((1, size, size), np.float32),
                 'audio': np.zeros((1, self.clip_samples), np.float32)}
        batch = {m: blank[m] for m in self.modalities}
        if self.cfg.quality:
            modality_quality(batch)
        if self._scorer is not None:
            self._scorer.scores(batch, Budget(1.0), tuple(batch))
        inputs = {m: x.to(self.device) for m, x in self.preprocessor(batch).items()}
        with torch.inference_mode():
            self.model(inputs, None)
        self._sync_device()

    # ------------------------------------------------------------------ helpers
    @property
    def clip_samples(self) -> int:
        return self.preprocessor.cfg.clip_samples

    def _sync_device(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def batch_of(self, frame: Frame) -> RawBatch:
        """A raw batch of one sample from the frame's configured modalities."""
        batch: RawBatch = {}
        for m in self.modalities:
            if m in frame.data:
                x = frame.data[m]
                if m == 'audio' and len(x) < self.clip_samples:
                    # A stream's first chunks: zero-padded to the clip as the model's
                    # preprocessing would, so the quality estimators judge the same clip.
                    x = np.pad(x, (0, self.clip_samples - len(x)))
                batch[m] = (x.astype(np.float32, copy=False) if m != 'rgb' else x)[None]
        if not batch:
            raise RejectedInput(f'frame holds none of the configured modalities {self.modalities}')
        return batch

    # ------------------------------------------------------------------ one frame
    def estimate_quality(self, frame: Frame) -> Dict[str, float]:
        """Per-modality quality estimates in [0, 1] (classical estimators) for one frame."""
        return {m: float(q[0]) for m, q in modality_quality(self.batch_of(frame)).items()}

    def infer(self, frame: Frame, budget, with_quality: Optional[bool] = None,
              account: bool = True) -> Inference:
        """Allocate under ``budget`` (a :class:`admn_ros.quality_estimators.budget.Budget`) and run.

        ``with_quality`` (default: the config's ``quality``) adds the quality estimates and
        ``account`` the executed GFLOPs and budget spent (:meth:`account`). A node turns both off
        and adds them after publishing the prediction, so they are not on its critical path."""
        t0 = time.perf_counter()
        batch = self.batch_of(frame)
        present = tuple(m for m in self.model_modalities if m in batch)
        quality: Dict[str, float] = {}
        if self.cfg.quality if with_quality is None else with_quality:
            quality = self.estimate_quality(frame)
        inputs = {m: x.to(self.device) for m, x in self.preprocessor(batch).items()}
        t1 = time.perf_counter()
        run = allocate_and_run(self.model, self.policy, batch, inputs, budget, present, self.device,
                               fault_rate=self.cfg.layer_fault_rate, generator=self._faults)
        keep_np = run.keep
        probs = torch.softmax(run.logits.float(), dim=-1)[0].cpu().numpy()
        kept = {m: np.asarray(keep_np[m][0], bool) for m in self.model_modalities}
        class_id = int(np.argmax(probs))
        inf = Inference(
            stamp_ns=frame.stamp_ns, frame_id=frame.frame_id, class_id=class_id,
            class_name=self.class_names[class_id], score=float(probs[class_id]), probs=probs,
            present=present, keep=kept, quality=quality, gflops=float('nan'),
            budget_fraction=float(budget.fraction), budget_unit=budget.unit,
            budget_spent=float('nan'),
            preprocess_ms=(t1 - t0) * 1e3, policy_ms=run.policy_s * 1e3, model_ms=run.model_s * 1e3)
        return self.account(inf) if account else inf

    def account(self, inf: Inference) -> Inference:
        """Fill in ``inf.gflops`` (encoders that ran, fusion, head and controller) and
        ``inf.budget_spent``; returns ``inf``."""
        inf.gflops = float(executed_flops(self.cost, inf.keep, inf.present, self.controller_flops)[0]) / 1e9
        inf.budget_spent = self.spent_fraction(inf.keep, inf.budget_unit)
        return inf

    def spent_fraction(self, keep: Mapping[str, np.ndarray], unit: str) -> float:
        """Cost of ``keep`` as a fraction of the full model, in ``unit`` (layers or flops)."""
        return spent_fraction(keep, unit, self.depth, self.model_modalities, self.cost)

    def release(self) -> None:
        """Drop the model (and cached CUDA memory); the engine is unusable afterwards."""
        on_cuda = self.device.type == 'cuda'
        self.model = None
        self.policy = None
        if on_cuda:
            torch.cuda.empty_cache()
