"""Approximate time sync over the modalities that are live (see :mod:`admn_ros.runtime`)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from admn_ros.datasets.sample import MODALITIES
from admn_ros.datasets.sync import ApproxSync
from admn_ros.runtime.frame_queue import Frame

@dataclass
class Input:
    """A decoded message waiting in the synchroniser."""

    stamp_ns: int
    frame_id: str
    array: np.ndarray


SYNC_HORIZON_NS = 1_000_000_000


class ModalitySync:
    """Approximate time sync over the live modalities, dropping quiet ones (see :mod:`admn_ros.runtime`)."""

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
