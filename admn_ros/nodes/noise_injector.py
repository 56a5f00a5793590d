"""noise_injector: republishes sensor topics with controlled corruptions, and reports them.

Subscribes the raw RGB, depth and audio topics and republishes each message, corrupted with
:func:`admn_ros.datasets.corruptions.apply_corruption`, under ``corrupted/<same name>`` with the input's
header (stamp and frame_id) unchanged. Corrupted RGB goes out as ``rgb8`` and depth as ``32FC1``
metres whatever the input encoding (audio keeps its encoding); clean messages pass through as they
came. Audio is corrupted chunk by chunk as it
arrives (rows of a multi-channel chunk are corrupted independently); ``babble`` mixes in the last
few clean chunks, or the current chunk reversed in time before any history exists.

Levels come from a schedule file when one is given
(:func:`admn_ros.datasets.schedules.load_schedule`), evaluated at the message's stamp minus the first
stamp seen, so a replayed bag gets the same levels as the live run; a modality the schedule has no
track for stays clean, so the schedule alone says what is corrupted. Without a schedule they come
from the run-time parameters ``<modality>.type`` / ``<modality>.severity`` (an unknown type is
rejected with the list of valid ones).

Levels are fixed per source stamp when the stamp is first seen, so one sample's RGB, depth and audio
(which share a stamp) are corrupted at the same levels, and exactly one DiagnosticArray goes out on
``ground_truth/corruption`` per stamp, with that stamp and one status per modality of the
``modalities`` parameter (``type``, ``severity``; ``clean``/0 when nothing changes) - the layout
``datasets.bags`` records. A schedule level ``silent`` stops forwarding that modality (a sensor that
stopped publishing); its record still goes out, and the messages held back are counted.
"""
from __future__ import annotations

import collections
import threading
from typing import Dict, NoReturn, Optional, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image

from admn_ros import wire
from admn_ros.node_utils import Diagnostics, RateMonitor, declare, node_main, param, set_result
from admn_ros.datasets.sample import MODALITIES
from admn_ros.datasets.schedules import SILENT

NODE_NAME = 'noise_injector'
BABBLE_HISTORY = 8  # clean chunks kept as babble talkers
STAMP_MEMORY = 256  # stamps whose levels are remembered (covers sensors up to seconds apart)


class NoiseInjector(Node):
    """Corrupts each incoming message at the currently configured (or scheduled) level."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        from admn_ros.datasets.corruptions import CORRUPTION_TYPES
        self.types = CORRUPTION_TYPES
        wanted = declare(self, 'modalities', list(MODALITIES), 'modalities to pass through',
                         read_only=True)
        unknown = set(wanted) - set(MODALITIES)
        if unknown:
            raise ValueError(f'unknown modalities {sorted(unknown)}; known: {MODALITIES}')
        self.modalities = tuple(m for m in MODALITIES if m in wanted)
        for m in self.modalities:
            declare(self, f'{m}.type', 'clean', f'{m} corruption type (without a schedule_file)',
                    choices=CORRUPTION_TYPES[m])
            declare(self, f'{m}.severity', 0.0, f'{m} corruption severity (without a '
                    'schedule_file)', value_range=(0.0, 1.0))
        declare(self, 'schedule_file', '', "corruption schedule (YAML; modalities without a track "
                "stay clean); '' = the fixed levels of the .type/.severity parameters")
        seed = declare(self, 'seed', 0, 'seed of the corruption noise', read_only=True,
                       value_range=(0, 2**31 - 1))
        reliability = declare(self, 'input_reliability', 2,
                              'input QoS: 0 system default, 1 reliable, 2 best effort',
                              read_only=True, value_range=(0, 2))
        depth = declare(self, 'input_depth', 5, 'input queue depth', read_only=True,
                        value_range=(1, 1000))
        # Start-up values bypass the set callback, so check them here.
        for m in self.modalities:
            reason = self._check_type(m, param(self, f'{m}.type'))
            if reason:
                raise ValueError(reason)

        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()  # guards rng, schedule, stamps and history across callbacks
        self.schedule = None
        self.first_stamp_ns: Optional[int] = None
        self.history: collections.deque = collections.deque(maxlen=BABBLE_HISTORY)
        self.stamp_levels: collections.OrderedDict = collections.OrderedDict()
        if param(self, 'schedule_file'):
            self.schedule = self._load_schedule(param(self, 'schedule_file'))
        self.add_on_set_parameters_callback(self._validate)
        self.add_post_set_parameters_callback(self._apply)

        qos_in, qos_out = wire.sensor_qos(reliability, depth), wire.output_qos()
        self.pubs, self.subs, self.rates = {}, {}, {}
        for m in self.modalities:
            src, out = wire.SENSOR_TOPICS[m], wire.CORRUPTED_TOPICS[m]
            self.pubs[m] = self.create_publisher(Image, out, qos_out,
                                                 event_callbacks=wire.publisher_events(self, out))
            self.subs[m] = self.create_subscription(
                Image, src, lambda msg, m=m: self._on_message(m, msg), qos_in,
                event_callbacks=wire.subscription_events(self, src),
                qos_overriding_options=wire.qos_overrides())
            self.rates[m] = RateMonitor()
        self.level_pub = self.create_publisher(DiagnosticArray, wire.CORRUPTION, qos_out)
        self.last_levels: Dict[str, Tuple[str, float]] = {}
        self.dropped = 0
        self.silenced = 0
        self.diagnostics = Diagnostics(self)
        for m in self.modalities:
            self.diagnostics.add(m, lambda m=m: self._status(m))

    # ------------------------------------------------------------------ parameters
    def _check_type(self, modality: str, ctype: str) -> str:
        if ctype not in self.types[modality]:
            return (f'unknown {modality} corruption {ctype!r}; '
                    f'valid: {", ".join(self.types[modality])}')
        return ''

    @staticmethod
    def _load_schedule(path: str):
        from admn_ros.datasets.schedules import load_schedule
        return load_schedule(path)

    def _validate(self, params):
        for p in params:
            modality, _, field = p.name.partition('.')
            if field == 'type' and modality in self.modalities:
                reason = self._check_type(modality, p.value)
                if reason:
                    return set_result(False, reason)
            if p.name == 'schedule_file' and p.value:
                try:
                    self._load_schedule(p.value)
                except Exception as exc:  # any failure to load is a reason to refuse the file
                    return set_result(False, f'cannot load schedule {p.value!r}: {exc}')
        return set_result(True)

    def _apply(self, params) -> None:
        for p in params:
            if p.name == 'schedule_file':
                with self.lock:
                    self.schedule = self._load_schedule(p.value) if p.value else None
                    self.first_stamp_ns = None  # schedule time restarts at the next new stamp
                    self.stamp_levels.clear()

    # ------------------------------------------------------------------ corruption
    def _current_level(self, modality: str, stamp_ns: int) -> Tuple[str, float]:
        if self.schedule is not None:   # the schedule alone decides, as the graph config says
            if modality not in self.schedule.tracks:
                return 'clean', 0.0
            t = (stamp_ns - self.first_stamp_ns) / 1e9
            ctype, severity = self.schedule.level_at(t)[modality]
        else:
            ctype = param(self, f'{modality}.type')
            severity = float(param(self, f'{modality}.severity'))
        if ctype == 'clean' or severity <= 0.0:
            return 'clean', 0.0
        return ctype, float(severity)

    def levels_at(self, stamp_ns: int) -> Tuple[Dict[str, Tuple[str, float]], bool]:
        """Levels of every modality for one source stamp, fixed when the stamp is first seen.

        Returns (levels, new): messages sharing a stamp (one sample's RGB, depth and audio) all get
        the same levels, so the single corruption record published for that stamp is exact.
        """
        if stamp_ns in self.stamp_levels:
            return self.stamp_levels[stamp_ns], False
        if self.first_stamp_ns is None:
            self.first_stamp_ns = stamp_ns
        levels = {m: self._current_level(m, stamp_ns) for m in self.modalities}
        self.stamp_levels[stamp_ns] = levels
        while len(self.stamp_levels) > STAMP_MEMORY:
            self.stamp_levels.popitem(last=False)
        return levels, True

    def _corrupt_audio(self, msg: Image, rows: np.ndarray, ctype: str, severity: float) -> Image:
        from admn_ros.datasets.corruptions import apply_corruption
        bank = np.stack(list(self.history)) if self.history else None
        if ctype == 'babble' and bank is None:
            bank = rows[:, ::-1].copy()  # no other talker heard yet: time-reversed speech
        batch = apply_corruption({'audio': rows}, 'audio', ctype, severity, self.rng,
                                 babble_bank=bank)
        out = wire.audio_msg(batch['audio'], 0, encoding=msg.encoding)
        out.header = msg.header
        return out

    def _corrupt_image(self, modality: str, msg: Image, ctype: str, severity: float) -> Image:
        from admn_ros.datasets.corruptions import apply_corruption
        # decode_rgb: any accepted colour encoding (mono8 included) as the HxWx3 RGB corruptions need
        arr = (wire.decode_rgb(msg) if modality == 'rgb' else wire.read_image(msg))[None]
        batch = apply_corruption({modality: arr}, modality, ctype, severity, self.rng)
        build = wire.rgb_msg if modality == 'rgb' else wire.depth_msg
        out = build(batch[modality][0], 0)
        out.header = msg.header
        return out

    def _remember_talkers(self, rows: np.ndarray) -> None:
        if self.history and self.history[-1].shape != rows[0].shape:
            self.history.clear()  # chunk length changed: old talkers can no longer be stacked
        self.history.extend(rows)

    def _on_message(self, modality: str, msg: Image) -> None:
        stamp_ns = wire.stamp_to_ns(msg.header.stamp)
        if stamp_ns < 0:  # int32 seconds can be negative on the wire; no schedule time is
            self._drop(modality, stamp_ns, 'a negative header stamp')
            return
        with self.lock:
            levels, new = self.levels_at(stamp_ns)
            if new:  # exactly one record per stamp, sent before the data it describes
                self.level_pub.publish(wire.corruption_msg(stamp_ns, levels))
            ctype, severity = levels[modality]
            if ctype == SILENT:   # the scheduled sensor publishes nothing; counted, not dropped
                self.silenced += 1
                self.last_levels[modality] = (ctype, severity)
                return
            try:
                out = msg
                if modality == 'audio':
                    rows = wire.read_audio(msg)
                    if ctype != 'clean':
                        out = self._corrupt_audio(msg, rows, ctype, severity)
                    self._remember_talkers(rows)
                elif ctype != 'clean':
                    out = self._corrupt_image(modality, msg, ctype, severity)
            except Exception as exc:  # one undecodable message must not stop the stream
                self._drop(modality, stamp_ns, f'{type(exc).__name__}: {exc}')
                return
        self.pubs[modality].publish(out)
        self.last_levels[modality] = (ctype, severity)
        self.rates[modality].tick()

    def _drop(self, modality: str, stamp_ns: int, reason: str) -> None:
        self.dropped += 1
        self.get_logger().error(f'dropping {modality} message stamped {stamp_ns}: {reason}',
                                throttle_duration_sec=1.0)

    def _status(self, modality: str):
        level, message, values = self.rates[modality].status()
        ctype, severity = self.last_levels.get(modality, ('clean', 0.0))
        values.update(type=ctype, severity=f'{severity:.3f}', dropped=self.dropped,
                      silenced=self.silenced,
                      scheduled=self.schedule is not None)
        return level, message, values


def main(args=None) -> NoReturn:
    node_main(NoiseInjector, args)


if __name__ == '__main__':
    main()
