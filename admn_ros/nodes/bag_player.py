"""bag_player: replays a rosbag2 (sqlite3 or mcap, read with ``rosbags``) like ``ros2 bag play``.

Semantics mirrored from ``ros2 bag play``: messages go out in bag-timestamp order,
paced by the gaps between bag timestamps divided by ``rate``; ``start_offset`` seconds into the
bag; ``delay_s`` before each pass; ``loop`` restarts at the end; ``topics`` is an include list;
``remappings`` renames topics (``old:=new``); header stamps are never rewritten. With ``clock_hz``
> 0 a ``rosgraph_msgs/Clock`` goes out on ``/clock`` (and a recorded ``/clock`` is skipped) so
nodes running with ``use_sim_time:=true`` follow bag time. ``relative_topics`` drops the leading
slash of recorded names so the node's namespace applies to them.

Messages are republished as the recorded CDR bytes (``Publisher.publish`` accepts them), on a
publisher of the rclpy class resolved from the recorded type name; topics whose type is not built
here (e.g. ``audio_common_msgs`` on a pip-only install) are skipped with one warning each and their
messages counted in ``skipped``.

An MCAP bag's checksums are verified before playback (:mod:`admn_ros.datasets.mcap_crc`: a
mismatch refuses the bag), and a message that does not deserialize as its recorded type is not
published but counted per topic (``undecodable <topic>`` in ``/diagnostics``, which the evaluator
puts in its report).

QoS per topic (:func:`admn_ros.wire.replay_qos`): the recorded offered profiles when they all
agree (history reset to KEEP_LAST ``qos_depth``), else reliable KEEP_LAST ``qos_depth`` volatile,
which every subscriber accepts; ``reliability`` can force reliable or best effort, and
``durability`` volatile or transient local (subscribers that ask for it then get up to
``qos_depth`` messages sent before they matched: what a replay that scores every frame uses). An
``AudioInfo`` always goes out latched (reliable, transient local, depth 1), recorded QoS or not,
so admn_fusion's latched subscription matches it and a late joiner still gets the format.

``as_fast_as_possible`` is the deterministic mode for tests: no sleeping, ``/clock`` set to each
message's bag time right before it, and each publish waits until reliable subscribers acknowledged
it. ``wait_for_subscribers`` holds playback until every played topic has that many subscribers
(at most ``wait_timeout_s``, when set), then ``discovery_settle_s`` more. When the bag is done
(and not looping) the node logs a summary, sets ``done`` and, with ``exit_on_end``, its ``main``
returns.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Dict, List, NoReturn, Optional, Tuple

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.serialization import deserialize_message

from admn_ros import wire
from admn_ros.node_utils import ERROR, OK, UNDECODABLE_KEY, Diagnostics, declare, node_main, param

NODE_NAME = 'bag_player'
CLOCK_TOPIC = '/clock'
ACK_TIMEOUT_S = 1.0  # as_fast_as_possible: longest wait for reliable subscribers to acknowledge


def parse_remappings(items: List[str]) -> Dict[str, str]:
    """``['old:=new', ...]`` -> ``{'/old': '/new'}`` (names compared with a leading slash)."""
    out = {}
    for item in items:
        old, sep, new = item.partition(':=')
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f"remapping {item!r} must look like 'old:=new'")
        out[_absolute(old.strip())] = _absolute(new.strip())
    return out


def _absolute(topic: str) -> str:
    return topic if topic.startswith('/') else '/' + topic


@dataclass
class Track:
    """One bag connection being replayed."""

    topic: str          # recorded name
    out_topic: str      # published name
    msgtype: str
    publisher: object = None


class BagPlayer(Node):
    """Replays one bag on a background thread; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.bag_path = declare(self, 'bag_path', '',
                                'rosbag2 directory (with metadata.yaml) to play', read_only=True)
        declare(self, 'rate', 1.0, 'playback speed factor', value_range=(0.01, 1000.0))
        declare(self, 'loop', False, 'restart at the end of the bag')
        self.start_offset = declare(self, 'start_offset', 0.0,
                                    'seconds into the bag to start from', read_only=True,
                                    value_range=(0.0, 1e9))
        declare(self, 'delay_s', 0.0, 'seconds to wait before each pass',
                value_range=(0.0, 3600.0))
        include = declare(self, 'topics', [], "topics to play (empty = all but admn_fusion's "
                          'recorded outputs)', read_only=True, array_type='string')
        remaps = parse_remappings(declare(self, 'remappings', [], "topic renames 'old:=new'",
                                          read_only=True, array_type='string'))
        self.clock_hz = declare(self, 'clock_hz', 0.0, 'publish /clock at this rate (0 = off)',
                                read_only=True, value_range=(0.0, 10000.0))
        declare(self, 'as_fast_as_possible', False,
                'no pacing; wait for acknowledgements instead (deterministic, for tests)')
        declare(self, 'exit_on_end', False, 'stop the node when playback ends')
        self.wait_for = declare(self, 'wait_for_subscribers', 0,
                                'hold playback until every topic has this many subscribers',
                                read_only=True, value_range=(0, 1000))
        self.wait_timeout = declare(self, 'wait_timeout_s', 0.0,
                                    'start anyway after waiting this long (0 = wait forever)',
                                    read_only=True, value_range=(0.0, 1e6))
        self.settle = declare(self, 'discovery_settle_s', 1.0,
                              'after the subscribers appear, wait this long before playing: a '
                              'subscriber that has not yet matched us back drops what we send',
                              read_only=True, value_range=(0.0, 60.0))
        relative = declare(self, 'relative_topics', False,
                           'drop the leading slash of recorded topics (namespace applies)',
                           read_only=True)
        depth = declare(self, 'qos_depth', 10, 'KEEP_LAST depth of the republishing publishers',
                        read_only=True, value_range=(1, 10000))
        reliability = declare(self, 'reliability', 'recorded',
                              'republishing reliability: as recorded, or forced (a bag from a '
                              'best-effort camera then still reaches reliable subscribers)',
                              read_only=True, choices=wire.REPLAY_RELIABILITY)
        if reliability not in wire.REPLAY_RELIABILITY:
            raise ValueError(f'reliability must be one of {wire.REPLAY_RELIABILITY}, '
                             f'got {reliability!r}')
        durability = declare(self, 'durability', 'recorded',
                             'republishing durability: as recorded, or forced (transient_local '
                             'keeps the last qos_depth messages for a subscriber that matches '
                             'late)', read_only=True, choices=wire.REPLAY_DURABILITY)
        if durability not in wire.REPLAY_DURABILITY:
            raise ValueError(f'durability must be one of {wire.REPLAY_DURABILITY}, '
                             f'got {durability!r}')
        if not self.bag_path:
            raise ValueError('bag_path is empty: set it to a rosbag2 directory')

        from rosbags.rosbag2 import Reader
        self._reader_cls = Reader
        try:
            with Reader(self.bag_path) as reader:
                connections = list(reader.connections)
                self.bag_start_ns = reader.start_time
        except FileNotFoundError:
            raise
        except Exception as exc:  # rosbags' ReaderError and friends: not a readable rosbag2
            raise ValueError(f'cannot open bag {self.bag_path!r}: {exc}') from exc
        from admn_ros.datasets.mcap_crc import verify_bag
        verify_bag(self.bag_path)   # McapCrcError (a ValueError) before anything is played
        wanted = {_absolute(t) for t in include}
        unknown = wanted - {c.topic for c in connections}
        if unknown:
            self.get_logger().warning(f'topics not in the bag: {sorted(unknown)}')

        # One publisher per topic; connections of one topic share it.
        self.tracks: Dict[str, Track] = {}
        self._classes: Dict[str, type] = {}
        # Messages that do not deserialize as their type (a corrupted bag), per topic: counted and
        # not published, since every subscriber would fail on them the same way.
        self.undecodable: Dict[str, int] = {}
        self.skipped: Dict[str, int] = {}
        by_topic: Dict[str, list] = {}
        # A bag recorded with the model's outputs (admn bag record --outputs) would otherwise
        # replay them into the live graph beside the fusion node's own; list them to play them.
        recorded_outputs = {_absolute(t) for t in (*wire.OUTPUT_TYPES, wire.CLASSIFICATION)}
        held_back = sorted({c.topic for c in connections} & recorded_outputs) if not wanted else []
        if held_back:
            self.get_logger().info(f'not playing the recorded fusion outputs {held_back} '
                                   '(name them in topics to play them)')
        for conn in connections:
            if (wanted and conn.topic not in wanted) or conn.topic in held_back:
                continue
            if self.clock_hz > 0 and conn.topic == CLOCK_TOPIC:
                continue  # our own /clock replaces the recorded one, as in ros2 bag play
            by_topic.setdefault(conn.topic, []).append(conn)
        for topic, conns in by_topic.items():
            msgtype = conns[0].msgtype
            out = remaps.get(topic, topic)
            out = out.lstrip('/') if relative else out
            try:
                cls = wire.message_class(msgtype)
            except (ImportError, ValueError) as exc:
                self.get_logger().warning(f'skipping {topic} ({msgtype}): type not available '
                                          f'here ({exc})')
                self.skipped[topic] = 0
                continue
            offered = [q for c in conns
                       for q in (getattr(c.ext, 'offered_qos_profiles', None) or [])]
            qos, note = wire.replay_qos(msgtype, offered, depth, reliability, durability)
            if note:
                self.get_logger().warning(f'{topic}: {note}')
            self.tracks[topic] = Track(topic, out, msgtype, self.create_publisher(cls, out, qos))
            self._classes[topic] = cls
        if not self.tracks:
            raise ValueError(f'nothing to play in {self.bag_path!r} '
                             f'(topics filter {sorted(wanted)})')

        self.clock_pub = None
        if self.clock_hz > 0:
            from rosgraph_msgs.msg import Clock
            self._clock_cls = Clock
            self.clock_pub = self.create_publisher(Clock, CLOCK_TOPIC, 10)

        self.published: Dict[str, int] = {t: 0 for t in self.tracks}
        self.passes = 0
        self.finished = False
        self.exit_code = 0
        self.done = threading.Event()
        self.error: Optional[str] = None
        self._stop = threading.Event()
        self._anchor_lock = threading.Lock()
        # (monotonic s, bag ns) pair that pacing and /clock extrapolate from, at self._rate.
        self._anchor: Optional[Tuple[float, int]] = None
        self._rate = float(param(self, 'rate'))
        self._next_clock = 0.0  # monotonic time of the next /clock message
        self.add_post_set_parameters_callback(self._after_set)
        self.diagnostics = Diagnostics(self)
        self.diagnostics.add('playback', self._status)
        self.get_logger().info(f'playing {self.bag_path} ({len(self.tracks)} topics)')
        self._thread = threading.Thread(target=self._run, name='bag_player', daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ time
    def bag_time_ns(self, now: Optional[float] = None) -> Optional[int]:
        """The bag time that corresponds to wall time ``now`` (None before playback starts)."""
        now = time.monotonic() if now is None else now
        with self._anchor_lock:
            if self._anchor is None:
                return None
            wall, bag = self._anchor
            return bag + int((now - wall) * self._rate * 1e9)

    def _after_set(self, params) -> None:
        for p in params:
            if p.name == 'rate':
                # Re-anchor so the new rate applies from the current bag time on, without a jump.
                now = time.monotonic()
                current = self.bag_time_ns(now)
                with self._anchor_lock:
                    if current is not None:
                        self._anchor = (now, current)
                    self._rate = float(p.value)

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is not None:
            self.clock_pub.publish(self._clock_cls(clock=wire.ns_to_stamp(max(0, bag_ns))))

    def _sleep_until(self, bag_ns: int) -> None:
        """Sleep until bag time ``bag_ns``, publishing /clock every 1/``clock_hz`` s meanwhile."""
        period = 1.0 / self.clock_hz if self.clock_hz > 0 else None
        while not self._stop.is_set():
            now = time.monotonic()
            now_bag = self.bag_time_ns(now)
            if period is not None and now >= self._next_clock:
                self._publish_clock(min(now_bag, bag_ns))
                self._next_clock = now + period
            remaining = (bag_ns - now_bag) / 1e9 / self._rate
            if remaining <= 0:
                return
            if period is not None:
                remaining = min(remaining, max(0.0, self._next_clock - now))
            self._stop.wait(remaining)

    # ------------------------------------------------------------------ playback
    def _wait_for_subscribers(self) -> bool:
        """Hold playback until every topic has ``wait_for_subscribers`` matches (or the timeout);
        False when the node is stopping."""
        if self.wait_for <= 0:
            return True
        start = next_log = time.monotonic()
        while not self._stop.is_set():
            missing = [t.out_topic for t in self.tracks.values()
                       if t.publisher.get_subscription_count() < self.wait_for]
            if not missing:
                # The writer sees the reader before the reader has matched the writer; samples sent
                # in between are lost even when reliable (a volatile reader starts at the writer's
                # next sample). Give discovery time to finish both ways: 0.25 s lost the first two
                # frames of a replay on a loaded machine. Only durability transient_local at both
                # ends rules the loss out; this wait narrows it for volatile subscribers.
                self._stop.wait(self.settle)
                return True
            now = time.monotonic()
            if self.wait_timeout > 0 and now - start >= self.wait_timeout:
                self.get_logger().warning(f'starting after {self.wait_timeout:.1f} s without '
                                          f'enough subscribers on {missing}')
                return True
            if now >= next_log:
                self.get_logger().info(f'waiting for {self.wait_for} subscriber(s) on {missing}')
                next_log = now + 5.0
            self._stop.wait(0.02)
        return False

    def _run(self) -> None:
        try:
            if self._wait_for_subscribers():
                while not self._stop.is_set():
                    before = sum(self.published.values())
                    self._play_once()
                    self.passes += 1
                    if not param(self, 'loop'):
                        break
                    if sum(self.published.values()) == before and not self._stop.is_set():
                        # Nothing after start_offset on the selected topics: looping would
                        # only spin.
                        self.get_logger().warning('a pass published nothing (start_offset past '
                                                  'the end, or no messages on the selected '
                                                  'topics): not looping')
                        break
        except Exception as exc:  # report instead of dying silently on a background thread
            if not self._stop.is_set():
                self.error = f'{type(exc).__name__}: {exc}'
                self.exit_code = 1
                self.get_logger().error(f'playback failed: {self.error}')
        finally:
            if not self._stop.is_set():
                counts = ', '.join(f'{t}: {n}' for t, n in self.published.items())
                skipped = ', '.join(f'{t}: {n}' for t, n in self.skipped.items())
                bad = ', '.join(f'{t}: {n}' for t, n in self.undecodable.items())
                self.get_logger().info(f'playback finished after {self.passes} pass(es); '
                                       f'published {counts}'
                                       + (f'; skipped {skipped}' if skipped else ''))
                if bad:
                    self.get_logger().error(f'undecodable messages (not published): {bad}')
            self.finished = bool(param(self, 'exit_on_end'))
            self.done.set()

    def _play_once(self) -> None:
        fast = bool(param(self, 'as_fast_as_possible'))
        delay = float(param(self, 'delay_s'))
        if delay > 0 and self._stop.wait(delay):
            return
        start = self.bag_start_ns + int(self.start_offset * 1e9)
        with self._reader_cls(self.bag_path) as reader:
            skipped_conns = [c for c in reader.connections if c.topic in self.skipped]
            conns = [c for c in reader.connections if c.topic in self.tracks] + skipped_conns
            with self._anchor_lock:
                self._anchor = None
            for conn, stamp_ns, raw in reader.messages(connections=conns, start=start):
                if self._stop.is_set():
                    return
                if conn.topic in self.skipped:
                    self.skipped[conn.topic] += 1
                    continue
                with self._anchor_lock:
                    if self._anchor is None:
                        self._anchor = (time.monotonic(), stamp_ns)
                track = self.tracks[conn.topic]
                if fast:
                    self._publish_clock(stamp_ns)
                else:
                    self._sleep_until(stamp_ns)
                    if self._stop.is_set():
                        return
                try:
                    deserialize_message(bytes(raw), self._classes[conn.topic])
                except Exception:   # rmw's error for bytes that are not this message type
                    self.undecodable[conn.topic] = self.undecodable.get(conn.topic, 0) + 1
                    continue
                track.publisher.publish(bytes(raw))
                if fast:
                    track.publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
                self.published[conn.topic] += 1

    def _status(self):
        values = {f'published {t}': n for t, n in self.published.items()}
        values.update({f'skipped {t}': n for t, n in self.skipped.items()})
        values.update({f'{UNDECODABLE_KEY} {t}': n for t, n in self.undecodable.items()})
        values['passes'] = self.passes
        if self.error:
            return ERROR, self.error, values
        return OK, 'finished' if self.done.is_set() else 'playing', values

    def destroy_node(self) -> None:
        if hasattr(self, '_stop'):
            self._stop.set()
            self._thread.join(timeout=5.0)
        super().destroy_node()


def main(args=None) -> NoReturn:
    node_main(BagPlayer, args)


if __name__ == '__main__':
    main()
