"""sensor_source: publishes RGB, depth and audio (plus ground-truth labels) from a data source.

Sources (parameter ``source``, read-only):

* a registry dataset: ``synthetic``, ``avdigits``, ``tensors`` or ``folder:PATH`` (with ``split``,
  ``dataset_size``, ``seed``, ``data_root``). One sample per tick at ``rate_hz``; sample i's RGB,
  depth, audio and label all carry the same stamp t_i (the node-clock time of the tick). A sample's
  audio clip is one event, so it goes out whole in a single message stamped t_i.
* ``video:PATH`` or ``webcam[:INDEX]`` (OpenCV VideoCapture): RGB frames at ``rate_hz``.
* ``wav:PATH``: audio resampled to 16 kHz, in chunks of ``audio_chunk_s`` published every
  ``audio_chunk_s`` seconds (real time). Each chunk is stamped with its first sample's capture
  time, as a live microphone's would be: the first chunk is taken as captured during the chunk
  period before it is published, and chunk k at that time plus k chunk lengths, so consecutive
  stamps are exactly one chunk apart whatever the timer jitter.

Stamps are acquisition times from the node clock, so ``use_sim_time`` is honoured.

When ``audio_common_msgs`` is built, audio also goes out as ``AudioDataStamped`` (S16LE mono at
16 kHz) on ``audio/audio_stamped``, and that format as one latched ``AudioInfo`` on
``audio/audio_info``, published at start.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import List, NoReturn, Optional, Tuple

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from admn_ros import wire
from admn_ros.node_utils import OK, Diagnostics, RateMonitor, declare, node_main, param
from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE, batch_size

NODE_NAME = 'sensor_source'
DATASET_NAMES = ('synthetic', 'avdigits', 'tensors')
SOURCE_FORMS = ("'synthetic', 'avdigits', 'tensors', 'folder:PATH', 'video:PATH', "
                "'webcam[:INDEX]', 'wav:PATH'")


@dataclass
class Frame:
    """What one tick publishes; absent modalities are None. Audio is int16 PCM, as a microphone
    delivers it: quantised when the source is opened, not between a tick's stamp and its publish."""

    rgb: Optional[np.ndarray] = None
    depth: Optional[np.ndarray] = None
    audio: Optional[np.ndarray] = None
    label: Optional[int] = None
    class_name: str = ''


def parse_source(spec: str) -> Tuple[str, str]:
    """``source`` parameter -> (kind, argument) with kind in dataset / video / webcam / wav."""
    spec = spec.strip()
    if spec in DATASET_NAMES or spec.startswith('folder:'):
        return 'dataset', spec
    kind, _, arg = spec.partition(':')
    if kind == 'webcam':
        if arg and not arg.isdigit():
            raise ValueError(f'webcam index must be an integer, got {arg!r}')
        return 'webcam', arg or '0'
    if kind in ('video', 'wav'):
        if not arg:
            raise ValueError(f'source {spec!r} needs a path after {kind}:')
        if not os.path.isfile(arg):
            raise ValueError(f'source {spec!r}: no such file {arg!r}')
        return kind, arg
    raise ValueError(f'unknown source {spec!r}; expected one of {SOURCE_FORMS}')


class DatasetFeed:
    """Samples of a registry dataset, in order."""

    def __init__(self, spec: str, split: str, seed: int, size: int, data_root: str):
        from admn_ros.datasets.registry import load_dataset
        ds = load_dataset(spec, split, seed=seed, size=size or None, data_root=data_root or None)
        self.arrays, self.class_names = dict(ds.arrays), list(ds.class_names)
        if 'audio' in self.arrays:
            self.arrays['audio'] = wire.pcm16(self.arrays['audio'])
        self.modalities = tuple(m for m in MODALITIES if m in self.arrays)
        self.length = batch_size(self.arrays)
        self.index = 0

    def next(self) -> Optional[Frame]:
        if self.index >= self.length:
            return None
        i, a = self.index, self.arrays
        self.index += 1
        label = int(a['label'][i]) if 'label' in a else None
        known = label is not None and label < len(self.class_names)
        return Frame(rgb=a['rgb'][i] if 'rgb' in a else None,
                     depth=a['depth'][i] if 'depth' in a else None,
                     audio=a['audio'][i] if 'audio' in a else None,
                     label=label, class_name=self.class_names[label] if known else '')

    def rewind(self) -> None:
        self.index = 0


class VideoFeed:
    """Frames from a video file or a webcam (BGR from OpenCV -> RGB)."""

    modalities = ('rgb',)

    def __init__(self, target):
        import cv2
        self._cv2 = cv2
        self._target = target
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            raise ValueError(f'OpenCV cannot open video source {target!r}')

    def next(self) -> Optional[Frame]:
        ok, bgr = self._cap.read()
        if not ok:
            return None
        return Frame(rgb=self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB))

    def rewind(self) -> None:
        self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self._cap.release()


class WavFeed:
    """Fixed-length chunks of an audio file (WAV, FLAC, OGG; mixed to mono, resampled to 16 kHz);
    the last, short chunk is zero-padded."""

    modalities = ('audio',)

    def __init__(self, path: str, chunk_s: float):
        # The one audio-file reader (mono, 16 kHz; a truncated WAV refused).
        from admn_ros.datasets.folder import read_audio
        if not os.path.isfile(path):
            raise FileNotFoundError(f'audio file {path!r} does not exist')
        wave = read_audio(path)
        self.wave = wire.pcm16(np.clip(wave, -1.0, 1.0))
        self.chunk = max(1, int(round(chunk_s * SAMPLE_RATE)))
        if len(self.wave) == 0:
            raise ValueError(f'WAV file {path!r} holds no samples')
        self.index = 0

    def next(self) -> Optional[Frame]:
        if self.index >= len(self.wave):
            return None
        piece = self.wave[self.index:self.index + self.chunk]
        self.index += self.chunk
        return Frame(audio=np.pad(piece, (0, self.chunk - len(piece))))

    def rewind(self) -> None:
        self.index = 0


def resize(frame: Frame, resolution: List[int]) -> Frame:
    """Resize images to ``[width, height]`` (0 keeps the native size); depth by nearest neighbour so
    invalid (NaN) pixels are never blended into valid ones."""
    width, height = resolution
    if not width or not height:
        return frame
    import cv2
    if frame.rgb is not None and frame.rgb.shape[:2] != (height, width):
        frame.rgb = cv2.resize(frame.rgb, (width, height), interpolation=cv2.INTER_AREA)
    if frame.depth is not None and frame.depth.shape[:2] != (height, width):
        frame.depth = cv2.resize(frame.depth, (width, height), interpolation=cv2.INTER_NEAREST)
    return frame


class SensorSource(Node):
    """Publishes one frame (or audio chunk) per tick; see the module docstring for sources."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        source = declare(self, 'source', 'synthetic', f'data source: {SOURCE_FORMS}',
                         read_only=True)
        split = declare(self, 'split', 'test', 'dataset split (train / val / test)', read_only=True)
        size = declare(self, 'dataset_size', 0, 'samples to load (0 = the dataset default)',
                       read_only=True, value_range=(0, 10_000_000))
        data_root = declare(self, 'data_root', '', "dataset root folder ('' = the default)",
                            read_only=True)
        seed = declare(self, 'seed', 0, 'dataset seed', read_only=True, value_range=(0, 2**31 - 1))
        declare(self, 'rate_hz', 10.0, 'frames (samples) per second', value_range=(0.01, 1000.0))
        resolution = declare(self, 'resolution', [0, 0],
                             'image size [width, height]; [0, 0] = native', read_only=True)
        chunk_s = declare(self, 'audio_chunk_s', 1.0, 'chunk length and period for wav sources (s)',
                          read_only=True, value_range=(0.01, 10.0))
        declare(self, 'loop', True, 'restart the source at its end')
        declare(self, 'publish_labels', True, 'publish ground-truth labels stamped like the sample')
        wanted = declare(self, 'modalities', list(MODALITIES),
                         'modalities to publish (subset of rgb, depth, audio)', read_only=True)
        declare(self, 'exit_on_end', False, 'stop the node when a non-looping source is exhausted')
        delay = declare(self, 'start_delay_s', 0.0,
                        'seconds to wait before the first frame (lets consumers start)',
                        read_only=True, value_range=(0.0, 3600.0))
        self._frames = {m: declare(self, f'{m}_frame_id', wire.FRAME_IDS[m],
                                   f'header.frame_id of {m} messages', read_only=True)
                        for m in MODALITIES}

        if len(resolution) != 2 or min(resolution) < 0:
            raise ValueError(f'resolution must be [width, height] >= 0, got {resolution}')
        unknown = set(wanted) - set(MODALITIES)
        if unknown:
            raise ValueError(f'unknown modalities {sorted(unknown)}; known: {MODALITIES}')
        self.resolution = list(resolution)

        kind, arg = parse_source(source)
        if kind == 'dataset':
            self.feed = DatasetFeed(arg, split, seed, size, data_root)
        elif kind == 'video':
            self.feed = VideoFeed(arg)
        elif kind == 'webcam':
            self.feed = VideoFeed(int(arg))
        else:
            self.feed = WavFeed(arg, chunk_s)
        self.kind = kind
        self.modalities = tuple(m for m in MODALITIES if m in wanted and m in self.feed.modalities)
        if not self.modalities:
            raise ValueError(f'source {source!r} provides {self.feed.modalities}, '
                             f'none of modalities {wanted}')
        self.chunk_ns = int(round(chunk_s * 1e9)) if kind == 'wav' else 0

        qos = wire.output_qos()
        self.pubs = {}
        for m in self.modalities:
            topic = wire.SENSOR_TOPICS[m]
            self.pubs[m] = self.create_publisher(Image, topic, qos,
                                                 event_callbacks=wire.publisher_events(self, topic))
        self.stamped_pub = self.info_pub = None
        if 'audio' in self.modalities and wire.audio_common_available():
            from audio_common_msgs.msg import AudioDataStamped, AudioInfo
            self.stamped_pub = self.create_publisher(AudioDataStamped, wire.AUDIO_STAMPED, qos)
            # The stamped stream carries no format: announce it once, latched, so a subscriber
            # that joins later still learns it (admn_fusion refuses the audio until it has).
            self.info_pub = self.create_publisher(
                AudioInfo, wire.AUDIO_STAMPED_INFO, wire.latched_qos(),
                event_callbacks=wire.publisher_events(self, wire.AUDIO_STAMPED_INFO))
            self.info_pub.publish(wire.audio_info_msg())
        from diagnostic_msgs.msg import DiagnosticArray
        self.label_pub = self.create_publisher(DiagnosticArray, wire.LABEL, qos)

        self.published = 0
        self.finished = False
        self.rate = RateMonitor()
        self._expect_rate()
        self.diagnostics = Diagnostics(self)
        self.diagnostics.add('source', self._source_status)
        self._start_at = time.monotonic() + delay
        self._audio_t0: Optional[int] = None  # wav: capture time of the first sample
        self.timer = self.create_timer(self._period_s(), self._tick)
        self.add_post_set_parameters_callback(self._after_set)
        self.get_logger().info(f'publishing {self.modalities} from {source!r} '
                               f'every {self._period_s():.3f} s')

    # ------------------------------------------------------------------ parameters
    def _period_s(self) -> float:
        return self.chunk_ns / 1e9 if self.kind == 'wav' else 1.0 / float(param(self, 'rate_hz'))

    def _expect_rate(self) -> None:
        # Diagnostics WARN when the achieved rate strays more than 20 % from the configured one.
        self.rate.min_hz = self.rate.max_hz = 1.0 / self._period_s()
        self.rate.tolerance = 0.2

    def _after_set(self, params) -> None:
        if any(p.name == 'rate_hz' for p in params) and self.kind != 'wav':
            self.timer.timer_period_ns = int(self._period_s() * 1e9)
            self._expect_rate()

    # ------------------------------------------------------------------ publishing
    def _tick(self) -> None:
        if time.monotonic() < self._start_at:
            return
        frame = self.feed.next()
        if frame is None and param(self, 'loop'):
            self.feed.rewind()
            frame = self.feed.next()
        if frame is None:
            self.get_logger().info(f'source exhausted after {self.published} frames')
            self.timer.cancel()
            self.finished = bool(param(self, 'exit_on_end'))
            return
        stamp = self.get_clock().now().nanoseconds
        if self.kind == 'wav':  # sample-accurate: stamps advance by exactly one chunk
            if self._audio_t0 is None:
                self._audio_t0 = max(0, stamp - self.chunk_ns)
            stamp = self._audio_t0 + self.published * self.chunk_ns
        self.publish_frame(resize(frame, self.resolution), stamp)

    def publish_frame(self, frame: Frame, stamp_ns: int) -> None:
        """Publish every present modality of ``frame`` (and its label) with one stamp."""
        if 'rgb' in self.pubs and frame.rgb is not None:
            self.pubs['rgb'].publish(wire.rgb_msg(frame.rgb, stamp_ns, self._frames['rgb']))
        if 'depth' in self.pubs and frame.depth is not None:
            self.pubs['depth'].publish(wire.depth_msg(frame.depth, stamp_ns, self._frames['depth']))
        if 'audio' in self.pubs and frame.audio is not None:
            frame_id = self._frames['audio']
            self.pubs['audio'].publish(wire.audio_msg(frame.audio, stamp_ns, frame_id))
            if self.stamped_pub is not None:
                self.stamped_pub.publish(wire.audio_stamped_msg(frame.audio, stamp_ns, frame_id))
        if frame.label is not None and param(self, 'publish_labels'):
            self.label_pub.publish(wire.label_msg(stamp_ns, frame.label, frame.class_name))
        self.published += 1
        self.rate.tick()

    def _source_status(self):
        level, message, values = self.rate.status()
        values.update(published=self.published, modalities=','.join(self.modalities))
        if self.timer.is_canceled():
            return OK, 'source exhausted', values
        return level, message, values

    def destroy_node(self) -> None:
        if hasattr(getattr(self, 'feed', None), 'close'):
            self.feed.close()
        super().destroy_node()


def main(args=None) -> NoReturn:
    node_main(SensorSource, args)


if __name__ == '__main__':
    main()
