"""Latency statistics for diagnostics."""
from __future__ import annotations

import collections
import threading
from typing import Tuple

import numpy as np


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
