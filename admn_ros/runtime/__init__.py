"""The per-frame core of the ``admn_fusion`` node, with no rclpy: every part is testable alone.

Data flow (the node only adds subscriptions, parameters and message building around it)::

    message -> wire.decode_<modality>() ---------------------------> ModalitySync.add()
    (audio Image) -> decode_audio() -------> RollingAudio.push() --^   (ApproxSync over live
    (AudioDataStamped) -> AudioStreamDecoder.push() --^                 modalities)
                                                                   -> FrameQueue.put()
                                                                      (never blocks)
    Worker thread: FrameQueue.get() -> FusionEngine.infer(frame, budget) -> Inference -> publish

Modules:

* :mod:`.audio_stream` - :class:`AudioStreamDecoder` turns an ``AudioDataStamped`` stream into
  16 kHz mono chunks in the format its latched ``AudioInfo`` names (re-chunking split frames,
  averaging channels, streaming soxr resampling), each stamped at its first sample; buffers are
  refused until a usable AudioInfo has arrived.
* :mod:`.rolling_audio` - :class:`RollingAudio` keeps the last ``clip_seconds`` of a chunked audio
  stream. A chunk continues the buffer only when its stamp is where the previous chunk ended
  (within a tolerance); anything else (a new whole clip, a gap, a jump back) starts afresh, so
  per-event clips are never glued together.
* :mod:`.modality_sync` - :class:`ModalitySync` runs :class:`admn_ros.datasets.sync.ApproxSync`
  over the modalities that are *live*. A modality silent for ``timeout_s`` (steady clock:
  liveness is about arrivals, not stamps) is dropped and the queued messages of the others are
  re-matched without it, so its share of the budget goes to the others; its next message brings
  it back. After a fully idle spell (or at start) every configured modality is expected again,
  so the first sets are never partial just because one sensor's first message came a little
  later. The stamp of a set is that of its first modality in canonical order (the RGB frame when
  RGB is live), with that message's frame_id.
* :mod:`.frame_queue` - :class:`Frame` and :class:`FrameQueue`, the hand-off to the worker: with
  capacity 1 a keep-latest slot (a stale frame is replaced and counted as dropped), with a larger
  capacity a bounded FIFO (replays that must score every frame). Intake never waits for the model.
* :mod:`.worker` - :class:`Worker`, the thread that consumes the queue.
* :mod:`.engine` - :class:`FusionEngine` loads a checkpoint (stage 1 or controller), builds the
  shared preprocessing from the checkpoint's ``meta['preprocess']``, the allocation policy, the
  cost model, and runs one frame: policy -> keep-masks (absent modalities pass ``present=``, so
  the budget goes to the others) -> really skipped blocks -> class probabilities, GFLOPs, quality
  estimates and timings.
* :mod:`.percentiles` - a sliding window with percentile read-out, for diagnostics.

Decoding messages into arrays (and refusing bad ones) is part of the wire contract:
:mod:`admn_ros.wire`.
"""
