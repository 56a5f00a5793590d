"""``audio_common_msgs/AudioDataStamped`` -> 16 kHz mono chunks, in the format its AudioInfo names.

An AudioDataStamped holds bytes and a stamp, no format; the stream's latched ``AudioInfo`` gives
the sample format, rate and channels. :class:`AudioStreamDecoder` keeps the current AudioInfo of
one stream and decodes each buffer as the offline bag reader does (:mod:`admn_ros.datasets.bags`):
PCM in that format, buffers that end mid-frame re-chunked (:class:`admn_ros.wire.PcmReassembler`),
channels averaged, then resampled to :data:`SAMPLE_RATE` with soxr (HQ, float32), here with its
streaming resampler: a continuous stream comes out as the whole-signal ``soxr.resample`` of it,
with nothing at buffer edges. At 16 kHz nothing is resampled.

**Runs.** A buffer continues the run when it is stamped where the previous one ended, within the
gap tolerance (never less than one input sample period, the offline reader's rule). Any other
stamp (a gap, a lost buffer, a jump back), a changed AudioInfo, a refused buffer or :meth:`reset`
starts a new run: leftover bytes and the resampler's state are dropped, where the offline reader
starts a new clip. The samples still inside the resampler when a run ends (its delay, about
10-40 ms at 44.1 kHz) are not emitted. A run's first buffer is taken to start on a frame boundary.

**Stamps.** A chunk is stamped with the capture time of its first sample. soxr's streaming output
is aligned with its input - output sample ``j`` of a run is the input instant ``j / 16000`` s
after the run's first frame - and only *when* it comes out is delayed (the filter's look-ahead;
soxr also releases output in blocks, so some buffers yield nothing). So the stamp follows from the
sample's position in the input, anchored on the latest buffer that starts at or before it:
``buffer stamp + (position - buffer's first frame) / rate``. Frames completed across a buffer edge
are thereby stamped from the buffer where they began; a buffer that starts mid-frame is placed at
that fraction of a frame, as its stamp says (the offline reader's convention too). Anchoring on
every buffer rather than on the run's first one keeps stamps on the header clock when the sound
card's clock drifts from it; consecutive chunks then join to within the stamps' own jitter, which
the run rule bounds by the same tolerance :class:`admn_ros.runtime.rolling_audio.RollingAudio`
applies.

Calls come from the node's single-threaded executor (AudioInfo and audio callbacks alike).
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Optional, Tuple

import numpy as np
import soxr

from admn_ros.datasets.sample import SAMPLE_RATE
from admn_ros.datasets.ros_messages.audio_codec import (PcmReassembler, audio_info_key,
                                                        pcm_frame_bytes)
from admn_ros.wire.sensor_input import InputLimits, RejectedInput, check_audio_values, to_mono
from admn_ros.datasets.ros_messages.topics import AUDIO_STAMPED_INFO

RESAMPLE_QUALITY = 'HQ'   # soxr.resample's default, which the offline reader uses


class AudioStreamDecoder:
    """One AudioDataStamped stream -> (stamp ns, float32 mono at ``out_rate``) chunks (see the
    module docstring)."""

    def __init__(self, info_topic: str = AUDIO_STAMPED_INFO, gap_tolerance_ns: int = 2_000_000,
                 out_rate: int = SAMPLE_RATE):
        self.info_topic = info_topic        # named in the reasons buffers are refused for
        self.gap_tolerance_ns = int(gap_tolerance_ns)
        self.out_rate = int(out_rate)
        self.info: Any = None
        self._info_problem = ''             # why the current AudioInfo cannot be decoded
        self._frame_bytes = 0
        self._next_ns: Optional[int] = None  # where the next buffer of the run starts; None: no run
        self._reassembler: Optional[PcmReassembler] = None
        self._resampler: Optional[soxr.ResampleStream] = None
        self._anchors: Deque[Tuple[float, int]] = deque()  # (run frame position, stamp) per buffer
        self._frames_in = 0.0                # frames received in the run (fractional mid-frame)
        self._samples_out = 0                # samples emitted in the run

    def set_info(self, info: Any) -> None:
        """The stream's AudioInfo, at every arrival (a latched one is also re-sent): the same
        format changes nothing, another one ends the run; an unusable one makes every buffer be
        refused with the reason."""
        try:
            if self.info is not None and audio_info_key(info) == audio_info_key(self.info):
                return
            self._frame_bytes = pcm_frame_bytes(info)
            self._info_problem = ''
        except (ValueError, TypeError) as exc:
            self._info_problem = str(exc)
        self.info = info
        self._next_ns = None

    def reset(self) -> None:
        """Forget the AudioInfo and the run (a new subscription brings the latched one again)."""
        self.info = None
        self._info_problem = ''
        self._next_ns = None

    def push(self, stamp_ns: int, data: bytes, limits: InputLimits = InputLimits()
             ) -> Optional[Tuple[int, np.ndarray]]:
        """One buffer stamped at its first byte's frame -> the chunk it completes, or None when
        everything is still held back (a partial frame, the resampler's delay).

        :class:`RejectedInput` without a usable AudioInfo, for a buffer over
        ``limits.max_audio_s``, or for float samples that are not finite or exceed full scale.
        """
        if self.info is None:
            raise RejectedInput(f'no AudioInfo on {self.info_topic} yet: sample format, rate and '
                                'channels unknown')
        if self._info_problem:
            raise RejectedInput(f'unusable AudioInfo on {self.info_topic}: {self._info_problem}')
        rate = int(self.info.sample_rate)
        frames = len(data) / self._frame_bytes
        if frames > limits.max_audio_s * rate:
            raise RejectedInput(f'audio chunk of {frames / rate:.1f} s exceeds '
                                f'{limits.max_audio_s} s')
        stamp_ns = int(stamp_ns)
        if (self._next_ns is None
                or abs(stamp_ns - self._next_ns) > max(self.gap_tolerance_ns, 1e9 / rate)):
            self._start_run(rate)
        self._anchors.append((self._frames_in, stamp_ns))
        self._frames_in += frames
        self._next_ns = stamp_ns + int(round(frames * 1e9 / rate))
        rows = self._reassembler.push(data)
        try:
            check_audio_values(rows)   # float formats only can fail; NaN would poison the filter
        except RejectedInput:
            self._next_ns = None
            raise
        wave = to_mono(rows)
        if self._resampler is not None:
            wave = self._resampler.resample_chunk(wave)
        if wave.size == 0:
            return None
        stamp = self._stamp_at(self._samples_out * rate / self.out_rate, rate)
        self._samples_out += wave.size
        return stamp, wave

    def _start_run(self, rate: int) -> None:
        self._reassembler = PcmReassembler(self.info)
        self._resampler = (None if rate == self.out_rate else soxr.ResampleStream(
            rate, self.out_rate, 1, dtype='float32', quality=RESAMPLE_QUALITY))
        self._anchors.clear()
        self._frames_in = 0.0
        self._samples_out = 0

    def _stamp_at(self, position: float, rate: int) -> int:
        """Capture time of the input instant ``position`` frames into the run."""
        while len(self._anchors) > 1 and self._anchors[1][0] <= position:
            self._anchors.popleft()   # outputs only move forward: earlier buffers are done
        first, stamp_ns = self._anchors[0]
        return stamp_ns + int(round((position - first) * 1e9 / rate))
