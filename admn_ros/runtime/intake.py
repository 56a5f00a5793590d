"""From a received sensor message to a queued frame: decode, window audio, synchronise.

:class:`Intake` is what ``admn_fusion`` does on every sensor callback, without rclpy: it decodes
the message (:mod:`admn_ros.wire.sensor_input`; ``AudioDataStamped`` through the stream's
:class:`~admn_ros.runtime.audio_stream.AudioStreamDecoder`, which the node hands each AudioInfo),
pushes audio through the rolling window, feeds the synchroniser, whose complete sets go to the
worker's queue. Bad input is refused with a reason, counted per modality and handed to
``on_reject`` (the node logs it); it never raises.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional, Sequence

from admn_ros.datasets.sample import MODALITIES
from admn_ros.node_utils import RateMonitor
from admn_ros.runtime.audio_stream import AudioStreamDecoder
from admn_ros.runtime.frame_queue import FrameQueue
from admn_ros.runtime.modality_sync import ModalitySync
from admn_ros.runtime.rolling_audio import RollingAudio
from admn_ros.datasets.ros_messages.header import header_stamp_ns
from admn_ros.wire.sensor_input import DECODERS, InputLimits, RejectedInput, audio_common_payload


class InputCounters:
    """Received and rejected inputs per modality, kept for the node's lifetime (diagnostics)."""

    def __init__(self):
        self._lock = threading.Lock()   # read by diagnostics on another thread
        self.rejected = {m: 0 for m in MODALITIES}
        self.lost = {m: 0 for m in MODALITIES}   # lost by DDS before delivery (see wire.qos)
        self.rates = {m: RateMonitor(stale_after_s=5.0) for m in MODALITIES}
        self.last_reject = ''

    def received(self, modality: str) -> None:
        self.rates[modality].tick()

    def reject(self, modality: str, reason: str) -> None:
        with self._lock:
            self.rejected[modality] += 1
            self.last_reject = f'{modality}: {reason}'

    def lost_in_transport(self, modality: str, count: int) -> None:
        with self._lock:
            self.lost[modality] += count

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        """Per modality: received, rejected, lost, rate_hz (consistent with each other)."""
        with self._lock:
            return {m: {'received': self.rates[m].count, 'rejected': self.rejected[m],
                        'lost': self.lost[m], 'rate_hz': self.rates[m].rate_hz()}
                    for m in MODALITIES}

    def total_rejected(self) -> int:
        with self._lock:
            return sum(self.rejected.values())

    def received_any(self) -> bool:
        return any(r.count for r in self.rates.values())


class Intake:
    """Decoding, audio window, sync and queue of one model's modalities, with reject counters."""

    def __init__(self, modalities: Sequence[str], clip_samples: int, *, queue_depth: int = 1,
                 sync_queue_size: int = 10, slop_ns: int = 50_000_000, timeout_s: float = 0.5,
                 audio_gap_tolerance_ns: int = 2_000_000, limits: InputLimits = InputLimits(),
                 counters: Optional[InputCounters] = None,
                 on_reject: Callable[[str, str], Any] = lambda modality, reason: None):
        self.limits = limits
        self.counters = InputCounters() if counters is None else counters
        self.on_reject = on_reject
        self.queue = FrameQueue(queue_depth)
        self.sync = ModalitySync(modalities, self.queue.put, queue_size=sync_queue_size,
                                 slop_ns=slop_ns, timeout_s=timeout_s)
        self.audio = RollingAudio(clip_samples, audio_gap_tolerance_ns)
        self.audio_stream = AudioStreamDecoder(gap_tolerance_ns=audio_gap_tolerance_ns)

    @property
    def modalities(self):
        return self.sync.modalities

    def accept(self, modality: str, msg: Any) -> None:
        """One received message of ``modality``; complete sets go to :attr:`queue`."""
        self.counters.received(modality)
        try:
            stamp = header_stamp_ns(msg)
            if stamp < 0:  # int32 seconds: possible on the wire, meaningless as a capture time
                raise RejectedInput(f'negative header stamp {stamp} ns')
            if modality == 'audio' and hasattr(msg, 'audio'):   # AudioDataStamped
                chunk = self.audio_stream.push(stamp, audio_common_payload(msg, self.limits),
                                               self.limits)
                if chunk is None:
                    return   # held back: a partial frame, or inside the resampler
                stamp, array = chunk
            else:
                array = DECODERS[modality](msg, self.limits)
            if modality == 'audio':
                array = self.audio.push(stamp, array)
            self.sync.add(modality, stamp, str(msg.header.frame_id), array)
        except RejectedInput as exc:
            self.reject(modality, str(exc))
        except Exception as exc:  # never let one message take the node down
            self.reject(modality, f'{type(exc).__name__}: {exc}')

    def set_audio_info(self, info: Any) -> None:
        """The AudioInfo of the AudioDataStamped stream (each one its latched topic delivers)."""
        self.audio_stream.set_info(info)

    def reject(self, modality: str, reason: str) -> None:
        """Count a refused input of ``modality`` and report it."""
        self.counters.reject(modality, reason)
        self.on_reject(modality, reason)

    def reset(self) -> None:
        """Forget what is buffered and the AudioInfo (on activation); counters keep counting."""
        self.sync.reset()
        self.audio.clear()
        self.audio_stream.reset()
        self.queue.clear()
        self.queue.reopen()

    def configure(self, *, sync_queue_size: Optional[int] = None, slop_ns: Optional[int] = None,
                  timeout_s: Optional[float] = None, queue_depth: Optional[int] = None,
                  audio_gap_tolerance_ns: Optional[int] = None,
                  limits: Optional[InputLimits] = None) -> None:
        """Apply run-time parameter changes."""
        if limits is not None:
            self.limits = limits
        if (sync_queue_size, slop_ns, timeout_s) != (None, None, None):
            self.sync.configure(queue_size=sync_queue_size, slop_ns=slop_ns, timeout_s=timeout_s)
        if queue_depth is not None:
            self.queue.resize(queue_depth)
        if audio_gap_tolerance_ns is not None:
            self.audio.gap_tolerance_ns = int(audio_gap_tolerance_ns)
            self.audio_stream.gap_tolerance_ns = int(audio_gap_tolerance_ns)
