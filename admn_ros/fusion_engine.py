"""The per-frame core of the ``admn_fusion`` node, with no rclpy: everything here is testable alone.

Data flow (the node only adds subscriptions, parameters and message building around it)::

    message -> decode_<modality>() ---------------------------> ModalitySync.add()
    (audio) -> decode_audio() -> RollingAudio.push() ------^     (ApproxSync over live modalities)
                                                                 -> FrameQueue.put() (never blocks)
    worker thread: FrameQueue.get() -> FusionEngine.infer(frame, budget) -> Inference -> publish

* **Decoding** turns Image-like messages (rclpy or rosbags objects) into the raw-sample contract of
  :mod:`admn_ros.datasets.sample` and refuses bad input with :class:`RejectedInput` (a ValueError naming the
  problem): unsupported encodings, inconsistent buffers, absurd sizes, negative depth, non-finite
  or out-of-range audio. Depth NaN/inf are valid "no reading" values (REP 117/118) and pass.
* **RollingAudio** keeps the last ``clip_seconds`` of a chunked audio stream. A chunk continues the
  buffer only when its stamp is where the previous chunk ended (within a tolerance); anything else
  (a new whole clip, a gap, a jump back) starts afresh, so per-event clips are never glued together.
* **ModalitySync** runs :class:`admn_ros.datasets.sync.ApproxSync` over the modalities that are *live*. A
  modality silent for ``timeout_s`` (steady clock: liveness is about arrivals, not stamps) is
  dropped and the queued messages of the others are re-matched without it, so its share of the
  budget goes to the others; its next message brings it back. After a fully idle spell (or at
  start) every configured modality is expected again, so the first sets are never partial just
  because one sensor's first message came a little later. The stamp of a set is that of its first
  modality in canonical order (the RGB frame when RGB is live), with that message's frame_id.
* **FrameQueue** is the hand-off to the worker: with capacity 1 it is a keep-latest slot (a stale
  frame is replaced and counted as dropped), with a larger capacity a bounded FIFO (replays that
  must score every frame). Intake never waits for the model.
* **FusionEngine** loads a checkpoint (stage 1 or controller), builds the shared preprocessing from
  the checkpoint's ``meta['preprocess']``, the allocation policy, the cost model, and runs one
  frame: policy -> keep-masks (absent modalities pass ``present=``, so the budget goes to the
  others) -> really skipped blocks -> class probabilities, GFLOPs, quality estimates and timings.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE, RawBatch
from admn_ros.datasets.sync import ApproxSync

RGB_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')
DEPTH_ENCODINGS = ('32FC1', '16UC1')
AUDIO_ENCODINGS = ('16SC1', '32FC1')


class RejectedInput(ValueError):
    """An input message that cannot be used (the message says why)."""


# --------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class InputLimits:
    """Sizes outside these bounds are rejected rather than fed to the model."""

    min_side: int = 8            # pixels; quality estimators and resizing need a few
    max_side: int = 8192
    max_audio_s: float = 30.0


def _check_image_size(modality: str, arr: np.ndarray, limits: InputLimits) -> None:
    h, w = arr.shape[:2]
    if min(h, w) < limits.min_side or max(h, w) > limits.max_side:
        raise RejectedInput(f'{modality} image {w}x{h} is outside the accepted '
                            f'{limits.min_side}..{limits.max_side} pixels per side')


def _decode(modality: str, msg: Any, encodings: Sequence[str]) -> np.ndarray:
    from admn_ros.datasets.rosmsg_codec import image_to_array
    encoding = str(getattr(msg, 'encoding', ''))
    if encoding not in encodings:
        raise RejectedInput(f'{modality} encoding {encoding!r} not accepted; use one of '
                            f'{", ".join(encodings)}')
    try:
        return image_to_array(msg)
    except ValueError as exc:  # inconsistent step / data length
        raise RejectedInput(str(exc)) from None


def decode_rgb(msg: Any, limits: InputLimits = InputLimits()) -> np.ndarray:
    """Image (rgb8/bgr8/rgba8/bgra8/mono8) -> uint8 [H, W, 3] RGB."""
    arr = _decode('rgb', msg, RGB_ENCODINGS)
    if arr.ndim == 2:  # mono8: grey replicated, as the AV-digits loader does
        arr = np.repeat(arr[..., None], 3, axis=2)
    _check_image_size('rgb', arr, limits)
    return arr


def decode_depth(msg: Any, limits: InputLimits = InputLimits()) -> np.ndarray:
    """Image (32FC1 metres or 16UC1 millimetres) -> float32 [H, W] metres, NaN = invalid."""
    arr = _decode('depth', msg, DEPTH_ENCODINGS).astype(np.float32, copy=False)
    _check_image_size('depth', arr, limits)
    # -inf ("too close", REP 117) is valid; NaN compares False. Mask only when something is < 0.
    negative = arr < 0
    if negative.any() and np.any(negative & np.isfinite(arr)):
        raise RejectedInput('depth holds negative distances (garbage, not a REP 118 image)')
    return arr


def decode_audio(msg: Any, limits: InputLimits = InputLimits()) -> np.ndarray:
    """Audio as an Image (16SC1/32FC1, one row per channel) or ``AudioDataStamped`` (S16LE mono)
    -> float32 mono [T] in [-1, 1] at 16 kHz; channels are averaged."""
    from admn_ros.messages import read_audio
    stamped = hasattr(msg, 'audio')   # AudioDataStamped: S16LE by ros-drivers' default
    encoding = '' if stamped else str(getattr(msg, 'encoding', ''))
    if not stamped and encoding not in AUDIO_ENCODINGS:
        raise RejectedInput(f'audio encoding {encoding!r} not accepted; use one of '
                            f'{", ".join(AUDIO_ENCODINGS)}')
    try:
        rows = read_audio(msg)
    except ValueError as exc:
        raise RejectedInput(str(exc)) from None
    if rows.size == 0:
        raise RejectedInput('audio message holds no samples')
    if rows.shape[1] > limits.max_audio_s * SAMPLE_RATE:
        raise RejectedInput(f'audio chunk of {rows.shape[1] / SAMPLE_RATE:.1f} s exceeds '
                            f'{limits.max_audio_s} s')
    if not (stamped or encoding == '16SC1'):  # integer PCM is finite and in range
        if not np.all(np.isfinite(rows)):
            raise RejectedInput('audio holds NaN or infinite samples')
        if float(np.max(np.abs(rows))) > 1.0 + 1e-6:
            raise RejectedInput('audio samples exceed full scale [-1, 1]')
    if len(rows) == 1:  # mono: the row itself (a mean over one channel only costs a copy)
        return np.asarray(rows[0], np.float32)
    return rows.mean(axis=0).astype(np.float32)


DECODERS: Dict[str, Callable[..., np.ndarray]] = {
    'rgb': decode_rgb, 'depth': decode_depth, 'audio': decode_audio}


# --------------------------------------------------------------------------- audio buffer
class RollingAudio:
    """The last ``clip_samples`` of a chunked audio stream (see the module docstring)."""

    def __init__(self, clip_samples: int, gap_tolerance_ns: int = 2_000_000,
                 sample_rate: int = SAMPLE_RATE):
        if int(clip_samples) < 1:
            raise ValueError(f'clip_samples must be >= 1, got {clip_samples}')
        if gap_tolerance_ns < 0:
            raise ValueError(f'gap_tolerance_ns must be >= 0, got {gap_tolerance_ns}')
        self.clip_samples = int(clip_samples)
        self.gap_tolerance_ns = int(gap_tolerance_ns)
        self.sample_rate = int(sample_rate)
        self._buffer = np.zeros(0, np.float32)
        self._end_ns: Optional[int] = None   # stamp just after the last buffered sample

    def push(self, stamp_ns: int, wave: np.ndarray) -> np.ndarray:
        """Add one chunk (stamped at its first sample); returns the window ending with it."""
        wave = np.asarray(wave, np.float32).reshape(-1)
        contiguous = (self._end_ns is not None
                      and abs(int(stamp_ns) - self._end_ns) <= self.gap_tolerance_ns)
        if contiguous:
            self._buffer = np.concatenate([self._buffer, wave])[-self.clip_samples:]
        else:
            self._buffer = wave[-self.clip_samples:].copy()
        self._end_ns = int(stamp_ns) + int(round(len(wave) * 1e9 / self.sample_rate))
        return self._buffer   # never modified in place (each push makes a new array): no copy

    def clear(self) -> None:
        self._buffer = np.zeros(0, np.float32)
        self._end_ns = None


# --------------------------------------------------------------------------- frames
@dataclass
class Frame:
    """One synchronised set of inputs, ready for the model."""

    stamp_ns: int                          # the set's stamp (first live modality in order)
    frame_id: str
    data: Dict[str, np.ndarray]            # rgb [H,W,3] uint8, depth [H,W] f32, audio [T] f32
    ready_mono: float = 0.0                # steady clock when the set was complete


@dataclass
class Input:
    """A decoded message waiting in the synchroniser."""

    stamp_ns: int
    frame_id: str
    array: np.ndarray


class FrameQueue:
    """Hand-off between intake and the worker; ``capacity`` 1 keeps only the latest frame."""

    def __init__(self, capacity: int = 1):
        if int(capacity) < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.capacity = int(capacity)
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame) -> bool:
        """Queue ``frame``; when full the oldest waiting frame is dropped. False once closed."""
        with self._cond:
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(frame)
            self._cond.notify()
            return True

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The oldest waiting frame, or None after ``timeout`` s or once closed."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def resize(self, capacity: int) -> None:
        """Change the capacity; frames beyond it are dropped oldest first."""
        if int(capacity) < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        with self._cond:
            self.capacity = int(capacity)
            while len(self._items) > self.capacity:
                self._items.popleft()
                self.dropped += 1

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


SYNC_HORIZON_NS = 1_000_000_000


class ModalitySync:
    """Approximate time sync over the live modalities, dropping quiet ones (module docstring)."""

    def __init__(self, modalities: Sequence[str], on_frame: Callable[[Frame], Any], *,
                 queue_size: int = 10, slop_ns: int = 50_000_000, timeout_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic):
        unknown = [m for m in modalities if m not in MODALITIES]
        if not modalities or unknown or len(set(modalities)) != len(modalities):
            raise ValueError(f'modalities must be distinct names from {MODALITIES}, '
                             f'got {list(modalities)}')
        if not timeout_s > 0:
            raise ValueError(f'timeout_s must be > 0, got {timeout_s}')
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.on_frame = on_frame
        self.queue_size, self.slop_ns, self.timeout_s = int(queue_size), int(slop_ns), timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_seen: Dict[str, Optional[float]] = {m: None for m in self.modalities}
        self._expect_since = clock()            # every modality is expected from here on
        self.live: Tuple[str, ...] = self.modalities
        self._evicted_before = 0
        self._sync = self._new_sync(self.live)
        self.frames = 0

    # ------------------------------------------------------------------ internals
    def _new_sync(self, live: Tuple[str, ...]) -> ApproxSync:
        # Entries a second (or a slop, if longer) away from every other stream's newest stamp can
        # never match: evicting them keeps a few bad stamps from stalling the sync for good.
        horizon = max(SYNC_HORIZON_NS, self.slop_ns)
        return ApproxSync(len(live), self.queue_size, self.slop_ns, self._emit_for(live), horizon_ns=horizon)

    def evicted(self) -> int:
        """Inputs refused or deleted as unmatchable so far (see :class:`admn_ros.datasets.sync.ApproxSync`)."""
        with self._lock:
            return self._evicted_before + (sum(self._sync.stats.evicted) if self._sync is not None else 0)

    def _emit_for(self, live: Tuple[str, ...]):
        def emit(*inputs: Input) -> None:
            anchor = inputs[0]
            frame = Frame(stamp_ns=anchor.stamp_ns, frame_id=anchor.frame_id,
                          data={m: x.array for m, x in zip(live, inputs)},
                          ready_mono=self._clock())
            self.frames += 1
            self.on_frame(frame)
        return emit

    def _is_live(self, m: str, now: float) -> bool:
        seen = self._last_seen[m]
        since = self._expect_since if seen is None else max(seen, self._expect_since)
        return now - since <= self.timeout_s

    def _rebuild(self, live: Tuple[str, ...]) -> None:
        """Switch to a new live set, re-matching what the kept inputs still have queued."""
        old_live, old = self.live, self._sync
        if old is not None:
            self._evicted_before += sum(old.stats.evicted)
        kept = []
        for i, m in enumerate(old_live):
            if m in live and old is not None:
                kept.extend((stamp, m, item) for stamp, item in old.queues[i].items())
        self.live = live
        self._sync = self._new_sync(live) if live else None
        if self._sync is not None:
            for stamp, m, item in sorted(kept, key=lambda k: (k[0], MODALITIES.index(k[1]))):
                self._sync.add(live.index(m), stamp, item)

    def _update_live(self, now: float) -> None:
        live = tuple(m for m in self.modalities if self._is_live(m, now))
        if live != self.live:
            self._rebuild(live)

    # ------------------------------------------------------------------ API
    def add(self, modality: str, stamp_ns: int, frame_id: str, array: np.ndarray) -> None:
        """Feed one decoded input; may emit frames through ``on_frame`` (in this thread)."""
        if modality not in self.modalities:
            raise ValueError(f'modality {modality!r} is not synchronised here {self.modalities}')
        with self._lock:
            now = self._clock()
            if not any(self._is_live(m, now) for m in self.modalities):
                self._expect_since = now  # idle until now: expect everyone again
            self._last_seen[modality] = now
            self._update_live(now)
            self._sync.add(self.live.index(modality), int(stamp_ns),
                           Input(int(stamp_ns), frame_id, array))

    def check(self) -> Tuple[str, ...]:
        """Drop modalities that went quiet; returns the live set (call periodically)."""
        with self._lock:
            self._update_live(self._clock())
            return self.live

    def quiet(self) -> Tuple[str, ...]:
        with self._lock:
            return tuple(m for m in self.modalities if m not in self.live)

    def pending(self) -> Dict[str, int]:
        with self._lock:
            if self._sync is None:
                return {}
            return dict(zip(self.live, self._sync.pending()))

    def last_seen_age(self) -> Dict[str, Optional[float]]:
        """Seconds since each modality's last message (None: never)."""
        with self._lock:
            now = self._clock()
            return {m: None if t is None else now - t for m, t in self._last_seen.items()}

    def configure(self, *, queue_size: Optional[int] = None, slop_ns: Optional[int] = None,
                  timeout_s: Optional[float] = None) -> None:
        """Change sync settings at run time; queued inputs are re-matched under the new ones."""
        if queue_size is not None and int(queue_size) < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        if slop_ns is not None and int(slop_ns) <= 0:
            raise ValueError(f'slop_ns must be > 0, got {slop_ns}')
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f'timeout_s must be > 0, got {timeout_s}')
        with self._lock:
            if queue_size is not None:
                self.queue_size = int(queue_size)
            if slop_ns is not None:
                self.slop_ns = int(slop_ns)
            if timeout_s is not None:
                self.timeout_s = float(timeout_s)
            self._rebuild(self.live)

    def reset(self) -> None:
        """Forget queued inputs and liveness (on activation)."""
        with self._lock:
            self._last_seen = {m: None for m in self.modalities}
            self._expect_since = self._clock()
            self.live = self.modalities
            if self._sync is not None:
                self._evicted_before += sum(self._sync.stats.evicted)
            self._sync = self._new_sync(self.live)


# --------------------------------------------------------------------------- the model
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
    from pathlib import Path
    if model_path:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'model_path {str(path)!r} does not exist')
        return str(path)
    from admn_ros.quality_estimators.evaluate import default_checkpoint
    try:
        return str(default_checkpoint(dataset))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f'model_path is empty and {exc}; or set model_path') from None


class FusionEngine:
    """A loaded ADMN model with its preprocessing, policy and cost model (module docstring)."""

    def __init__(self, cfg: EngineConfig):
        import torch

        from admn_ros.fusion.checkpoint import checkpoint_preprocessor
        from admn_ros.fusion.device import resolve_device
        from admn_ros.fusion.flops import CostModel
        from admn_ros.quality_estimators.policies import make_policy
        from admn_ros.quality_estimators.train_controller import load_controller, make_scorer

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
            from admn_ros.quality_estimators.controller import controller_cost_flops
            scorer = make_scorer(ctrl, meta, self.model_modalities, self.device)
            self.controller_flops = float(controller_cost_flops(ctrl.cfg))
        # The policy sees every modality of the model: the budget is a fraction of the full
        # model, and unused or quiet modalities simply are not ``present``.
        self.policy = make_policy(cfg.policy, modalities=self.model_modalities, depth=self.depth,
                                  cost_model=self.cost, seed=cfg.seed, controller=scorer)
        self._scorer = scorer
        self._torch = torch
        self.warm_up()

    def warm_up(self) -> None:
        """One pass over a blank sample, so lazy imports, filterbanks and first-call allocations
        are paid at load time rather than by the first real frame. The policy itself is not
        called (a random policy's stream must start with the first real frame)."""
        from admn_ros.quality_estimators.budget import Budget
        size = 2 * self.preprocessor.cfg.image_size
        blank = {'rgb': np.zeros((1, size, size, 3), np.uint8),
                 'depth': np.ones((1, size, size), np.float32),
                 'audio': np.zeros((1, self.clip_samples), np.float32)}
        batch = {m: blank[m] for m in self.modalities}
        if self.cfg.quality:
            from admn_ros.quality_estimators.estimators import modality_quality
            modality_quality(batch)
        if self._scorer is not None:
            self._scorer.scores(batch, Budget(1.0), tuple(batch))
        inputs = {m: x.to(self.device) for m, x in self.preprocessor(batch).items()}
        with self._torch.inference_mode():
            self.model(inputs, None)
        self._sync_device()

    # ------------------------------------------------------------------ helpers
    @property
    def clip_samples(self) -> int:
        return self.preprocessor.cfg.clip_samples

    def _sync_device(self) -> None:
        if self.device.type == 'cuda':
            self._torch.cuda.synchronize(self.device)

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
        from admn_ros.quality_estimators.estimators import modality_quality
        return {m: float(q[0]) for m, q in modality_quality(self.batch_of(frame)).items()}

    def infer(self, frame: Frame, budget, with_quality: Optional[bool] = None,
              account: bool = True) -> Inference:
        """Allocate under ``budget`` (a :class:`admn_ros.quality_estimators.budget.Budget`) and run.

        ``with_quality`` (default: the config's ``quality``) adds the quality estimates and
        ``account`` the executed GFLOPs and budget spent (:meth:`account`). A node turns both off
        and adds them after publishing the prediction, so they are not on its critical path."""
        torch = self._torch
        t0 = time.perf_counter()
        batch = self.batch_of(frame)
        present = tuple(m for m in self.model_modalities if m in batch)
        quality: Dict[str, float] = {}
        if self.cfg.quality if with_quality is None else with_quality:
            quality = self.estimate_quality(frame)
        inputs = {m: x.to(self.device) for m, x in self.preprocessor(batch).items()}
        t1 = time.perf_counter()
        keep_np = self.policy.allocate(batch, budget, present, inputs)
        t2 = time.perf_counter()
        keep = {m: torch.as_tensor(np.asarray(keep_np[m], bool), device=self.device)
                for m in present}
        with torch.inference_mode():
            logits = self.model(inputs, keep)
            probs = torch.softmax(logits.float(), dim=-1)[0].cpu().numpy()
        self._sync_device()
        t3 = time.perf_counter()
        kept = {m: np.asarray(keep_np[m][0], bool) for m in self.model_modalities}
        class_id = int(np.argmax(probs))
        inf = Inference(
            stamp_ns=frame.stamp_ns, frame_id=frame.frame_id, class_id=class_id,
            class_name=self.class_names[class_id], score=float(probs[class_id]), probs=probs,
            present=present, keep=kept, quality=quality, gflops=float('nan'),
            budget_fraction=float(budget.fraction), budget_unit=budget.unit,
            budget_spent=float('nan'),
            preprocess_ms=(t1 - t0) * 1e3, policy_ms=(t2 - t1) * 1e3, model_ms=(t3 - t2) * 1e3)
        return self.account(inf) if account else inf

    def account(self, inf: Inference) -> Inference:
        """Fill in ``inf.gflops`` (encoders that ran, fusion, head and controller) and
        ``inf.budget_spent``; returns ``inf``."""
        flops = float(self.cost.total_flops({m: inf.keep[m] for m in inf.present})[0])
        inf.gflops = (flops + self.controller_flops) / 1e9
        inf.budget_spent = self.spent_fraction(inf.keep, inf.budget_unit)
        return inf

    def spent_fraction(self, keep: Mapping[str, np.ndarray], unit: str) -> float:
        """Cost of ``keep`` as a fraction of the full model, in ``unit`` (layers or flops)."""
        if unit == 'layers':
            layers = sum(int(np.sum(k)) for k in keep.values())
            return layers / (self.depth * len(self.model_modalities))
        used = float(self.cost.encoder_flops({m: np.asarray(k) for m, k in keep.items()})[0])
        return used / self.cost.full_encoder_flops(self.model_modalities)

    def release(self) -> None:
        """Drop the model (and cached CUDA memory); the engine is unusable afterwards."""
        on_cuda = self.device.type == 'cuda'
        self.model = None
        self.policy = None
        if on_cuda:
            self._torch.cuda.empty_cache()


# --------------------------------------------------------------------------- worker
class Worker:
    """Consumes a :class:`FrameQueue` on its own thread; exceptions go to ``on_error``."""

    def __init__(self, queue: FrameQueue, process: Callable[[Frame], None],
                 on_error: Callable[[Frame, Exception], None], name: str = 'admn_fusion_worker'):
        self.queue, self.process, self.on_error = queue, process, on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> 'Worker':
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.queue.get(timeout=0.1)
            if frame is None or self._stop.is_set():
                continue
            try:
                self.process(frame)
            except Exception as exc:  # never let one bad frame end processing
                self.on_error(frame, exc)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the current frame; True when the thread has ended."""
        self._stop.set()
        self.queue.close()
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Percentiles:
    """A sliding window of samples with percentile read-out (for diagnostics)."""

    def __init__(self, window: int = 200):
        self._values: collections.deque = collections.deque(maxlen=int(window))
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(float(value))

    def get(self, *qs: float) -> Tuple[float, ...]:
        with self._lock:
            if not self._values:
                return tuple(float('nan') for _ in qs)
            return tuple(float(v) for v in np.percentile(np.asarray(self._values), qs))

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)
