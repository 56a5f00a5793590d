"""A synchronised set of inputs (:class:`Frame`) and the queue that hands it to the worker."""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np


@dataclass
class Frame:
    """One synchronised set of inputs, ready for the model."""

    stamp_ns: int                          # the set's stamp (first live modality in order)
    frame_id: str
    data: Dict[str, np.ndarray]            # rgb [H,W,3] uint8, depth [H,W] f32, audio [T] f32
    ready_mono: float = 0.0                # steady clock when the set was complete


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
