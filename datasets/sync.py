"""Approximate time synchronisation of several message streams, without ROS.

:class:`ApproxSync` re-implements the contract of the *Python* ``message_filters``
``ApproximateTimeSynchronizer``, not the C++ ApproximateTime policy. On each
``add(i, stamp_ns, msg)``, under one lock:

1. ``queues[i][stamp_ns] = msg`` (one dict per input, so an equal stamp overwrites); while the
   queue holds more than ``queue_size`` entries the smallest stamp is deleted.
2. For every *other* input, the stamps ``s`` with ``|s - stamp_ns| <= slop_ns`` (inclusive) are
   collected and sorted by distance to ``stamp_ns`` (ties keep queue insertion order). If any
   input has no candidate, nothing happens.
3. The Cartesian product of those candidate lists is walked in ``itertools.product`` order
   (nearest first for the earliest input, which varies slowest). The first tuple, with the new
   stamp at position ``i``, whose spread ``max - min < slop_ns`` (**strict**) and whose entries
   are all still queued is emitted: ``callback(*msgs)`` in input order, then exactly those
   entries are deleted. Only the first such tuple is emitted.

Consequences kept on purpose: matching is greedy and triggered only by the newest arrival;
older unmatched messages are not purged by a match and may match later, so outputs can come out
of stamp order; ``slop_ns`` is both the candidate window and the spread limit; the callback runs
inside the lock, so a slow callback stalls every input (hand work to a worker), and it must not
call :meth:`ApproxSync.add` itself (the lock is not re-entrant, as upstream).

Two deliberate differences: ``slop_ns <= 0`` is rejected, because the strict spread test means
upstream would silently never match anything; and entries that can no longer match are evicted
(with ``horizon_ns`` set; counted per input in ``stats.evicted``). Upstream keeps them until the queue
bound deletes the *smallest* stamp, so a few far-future stamps on one input fill its queue and
every later, valid message on it is deleted on arrival: no set is ever emitted again. Here a
message stamped more than ``horizon_ns`` ahead of the newest stamp of every other input is refused
on arrival, and queued entries further than ``horizon_ns`` behind (or ahead of) the newest stamps
of all the other inputs are deleted on every arrival, so the stream resumes by itself.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional


@dataclass
class SyncStats:
    """Counters for diagnostics (e.g. "nothing synchronised for N s")."""

    received: List[int] = field(default_factory=list)   # messages added, per input
    dropped: List[int] = field(default_factory=list)    # deleted by the queue bound, per input
    evicted: List[int] = field(default_factory=list)    # refused or deleted as unmatchable, per input
    matched: int = 0                                     # sets emitted
    since_last_match: int = 0                            # arrivals since the last emitted set


class ApproxSync:
    """Greedy approximate-time synchroniser with ``message_filters`` (Python) semantics."""

    def __init__(self, n_inputs: int, queue_size: int, slop_ns: int,
                 callback: Callable[..., Any], horizon_ns: Optional[int] = None):
        if int(n_inputs) < 1:
            raise ValueError(f'n_inputs must be >= 1, got {n_inputs}')
        if int(queue_size) < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        if int(slop_ns) <= 0:
            raise ValueError(f'slop_ns must be > 0 (the spread test is strict, so {slop_ns} '
                             'would never match)')
        if not callable(callback):
            raise ValueError('callback must be callable')
        if horizon_ns is not None and int(horizon_ns) < int(slop_ns):
            raise ValueError(f'horizon_ns must be >= slop_ns ({slop_ns}), got {horizon_ns}')
        self.n_inputs = int(n_inputs)
        self.queue_size = int(queue_size)
        self.slop_ns = int(slop_ns)
        self.callback = callback
        self.horizon_ns = None if horizon_ns is None else int(horizon_ns)
        self.queues: List[Dict[int, Any]] = [{} for _ in range(self.n_inputs)]
        self.newest: List[Optional[int]] = [None] * self.n_inputs   # latest accepted stamp per input
        self.stats = SyncStats(received=[0] * self.n_inputs, dropped=[0] * self.n_inputs,
                               evicted=[0] * self.n_inputs)
        self._lock = threading.Lock()

    def add(self, i: int, stamp_ns: int, msg: Any) -> bool:
        """Queue ``msg`` on input ``i`` and try to emit a set; returns True if one was emitted."""
        if not 0 <= int(i) < self.n_inputs:
            raise ValueError(f'input index {i} out of range for {self.n_inputs} inputs')
        i = int(i)
        stamp = int(stamp_ns)
        with self._lock:
            self.stats.received[i] += 1
            self.stats.since_last_match += 1
            ahead = self._others_newest(i)
            if self.horizon_ns is not None and ahead and stamp > max(ahead) + self.horizon_ns:
                self.stats.evicted[i] += 1      # from the future of every other input
                return False
            mine = self.queues[i]
            mine[stamp] = msg
            self.newest[i] = stamp if self.newest[i] is None else max(self.newest[i], stamp)
            if self.horizon_ns is not None:
                self._evict_unmatchable()
            while len(mine) > self.queue_size:
                del mine[min(mine)]
                self.stats.dropped[i] += 1

            candidates = []
            for j, queue in enumerate(self.queues):
                if j == i:
                    continue
                near = [(s, abs(s - stamp)) for s in queue if abs(s - stamp) <= self.slop_ns]
                if not near:
                    return False
                near.sort(key=lambda pair: pair[1])   # stable: ties keep insertion order
                candidates.append([s for s, _ in near])

            for others in itertools.product(*candidates):
                stamps = list(others)
                stamps.insert(i, stamp)
                if max(stamps) - min(stamps) >= self.slop_ns:
                    continue
                # The new message itself may have been evicted by the queue bound.
                if any(s not in q for q, s in zip(self.queues, stamps)):
                    continue
                msgs = [q[s] for q, s in zip(self.queues, stamps)]
                self.callback(*msgs)
                for q, s in zip(self.queues, stamps):
                    del q[s]
                self.stats.matched += 1
                self.stats.since_last_match = 0
                return True
            return False

    def _others_newest(self, i: int) -> List[int]:
        return [s for j, s in enumerate(self.newest) if j != i and s is not None]

    def _evict_unmatchable(self) -> None:
        """Delete entries more than the horizon behind or ahead of every other input's newest stamp
        (only once every other input has been heard: before that nothing can be judged)."""
        for j, queue in enumerate(self.queues):
            others = self._others_newest(j)
            if not queue or not others or len(others) < self.n_inputs - 1:
                continue
            low, high = min(others) - self.horizon_ns, max(others) + self.horizon_ns
            gone = [s for s in queue if s < low or s > high]
            for s in gone:
                del queue[s]
            if gone:
                self.stats.evicted[j] += len(gone)
                if self.newest[j] in gone:     # a stamp judged unmatchable no longer counts as newest
                    self.newest[j] = max(queue) if queue else None

    def pending(self) -> List[int]:
        """Number of queued (unmatched) messages per input."""
        with self._lock:
            return [len(q) for q in self.queues]

    def clear(self) -> None:
        """Drop every queued message (e.g. when a bag loops or the clock jumps back)."""
        with self._lock:
            for q in self.queues:
                q.clear()
