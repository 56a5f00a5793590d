"""The thread that takes frames from a :class:`~admn_ros.runtime.frame_queue.FrameQueue`."""
from __future__ import annotations

import threading
from typing import Callable

from admn_ros.runtime.frame_queue import Frame, FrameQueue


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

    @property
    def stopping(self) -> bool:
        """True once :meth:`halt` or :meth:`stop` was called: the frame in hand is the last."""
        return self._stop.is_set()

    def halt(self) -> None:
        """Ask the thread to end after the current frame, without waiting for it."""
        self._stop.set()
        self.queue.close()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the current frame; True when the thread has ended."""
        self.halt()
        self._thread.join(timeout)
        return not self._thread.is_alive()
