"""The last ``clip_samples`` of a chunked audio stream (see :mod:`admn_ros.runtime`)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from admn_ros.datasets.sample import SAMPLE_RATE


class RollingAudio:
    """The last ``clip_samples`` of a chunked audio stream (see :mod:`admn_ros.runtime`)."""

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
