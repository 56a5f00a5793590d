"""The QoS profiles every node uses, and event callbacks that say when QoS cannot match.

rclpy is imported by each function, never at module load (see :mod:`admn_ros.wire`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

from admn_ros.datasets.ros_messages.topics import AUDIO_INFO_TYPE

# input_reliability parameter values, as in yolo_ros: 0 system default, 1 reliable, 2 best effort.
RELIABILITY_NAMES = {0: 'system_default', 1: 'reliable', 2: 'best_effort'}
# Durability parameter values (input_durability, output_durability, a replay's durability).
# Transient local at both ends of a link hands a subscriber that matched the publisher late the
# last `depth` messages. A replay that scores every frame needs it: discovery can finish in one
# direction a second or more after the other on a busy machine, and a volatile subscriber loses
# whatever was sent in between, reliable or not.
DURABILITY_NAMES = ('volatile', 'transient_local')


def durability_policy(name: str):
    """The rclpy DurabilityPolicy of a :data:`DURABILITY_NAMES` entry."""
    from rclpy.qos import DurabilityPolicy
    if name not in DURABILITY_NAMES:
        raise ValueError(f'durability must be one of {DURABILITY_NAMES}, got {name!r}')
    return (DurabilityPolicy.TRANSIENT_LOCAL if name == 'transient_local'
            else DurabilityPolicy.VOLATILE)


def sensor_qos(reliability: int = 2, depth: int = 5, durability: str = 'volatile'):
    """Input QoS: sensor-data profile (KEEP_LAST, VOLATILE) with the reliability parameter applied.

    Best effort (2, the default) matches both reliable and best-effort publishers; a reliable
    subscriber silently never matches a best-effort publisher (docs/nodes.md). A transient local
    subscriber likewise needs a transient local publisher (a replay that offers it).
    """
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    if reliability not in RELIABILITY_NAMES:
        raise ValueError(f'reliability must be one of {RELIABILITY_NAMES}, got {reliability!r}')
    policy = {0: ReliabilityPolicy.SYSTEM_DEFAULT, 1: ReliabilityPolicy.RELIABLE,
              2: ReliabilityPolicy.BEST_EFFORT}[reliability]
    return QoSProfile(history=qos_profile_sensor_data.history, depth=int(depth), reliability=policy,
                      durability=durability_policy(durability))


def output_qos(depth: int = 100, durability: str = 'volatile'):
    """Output QoS: reliable KEEP_LAST ``depth`` (matches reliable and best-effort subscribers;
    transient local matches volatile and transient local ones, the latter getting the backlog).

    A reliable writer that keeps only the last few samples drops the oldest unacknowledged one
    when a subscriber falls behind, silently; 100 covers seconds of frames for a subscriber
    stalled on a busy machine. (With depth 10, a replay next to other test runs once scored 79 of
    80 frames; this is the likeliest place it lost one.)"""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      durability=durability_policy(durability))


def latched_qos():
    """For near-constant topics (the budget, an audio stream's AudioInfo): reliable,
    TRANSIENT_LOCAL, depth 1 (late joiners get the last; what ros-drivers' audio_capture offers)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def budget_qos():
    """The budget topic: latched (publisher and subscriber alike), so a late joiner gets the
    current value."""
    return latched_qos()


# bag_player's ``reliability`` and ``durability`` parameters: as recorded, or forced.
REPLAY_RELIABILITY = ('recorded', 'reliable', 'best_effort')
REPLAY_DURABILITY = ('recorded',) + DURABILITY_NAMES
# Types that describe a stream rather than carry it: their subscribers require the latched
# profile, so a replay offers it whatever the bag recorded (rosbags-written bags record no QoS).
LATCHED_TYPES = (AUDIO_INFO_TYPE,)


def replay_qos(msgtype: str, offered: Sequence[Any], depth: int, reliability: str = 'recorded',
               durability: str = 'recorded') -> Tuple[Any, str]:
    """The QoS a bag replay republishes one topic with, and a note when the recording disagrees.

    :data:`LATCHED_TYPES` always get :func:`latched_qos` (``reliability`` does not apply: a
    best-effort or volatile AudioInfo would never reach a latched subscriber). Otherwise the
    recorded ``offered`` profiles (rosbags QoS entries) when they all agree, history reset to
    KEEP_LAST ``depth``, else reliable volatile, which every subscriber accepts; ``reliability``
    and ``durability`` other than ``recorded`` then force that policy.
    """
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    if reliability not in REPLAY_RELIABILITY:
        raise ValueError(f'reliability must be one of {REPLAY_RELIABILITY}, got {reliability!r}')
    if durability not in REPLAY_DURABILITY:
        raise ValueError(f'durability must be one of {REPLAY_DURABILITY}, got {durability!r}')
    if msgtype in LATCHED_TYPES:
        return latched_qos(), ''
    qos = QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    note = ''
    # rosbags' own enums (plain Enum, not int): reliability 1 reliable / 2 best effort,
    # durability 1 transient local.
    kinds = {(int(getattr(q.reliability, 'value', q.reliability)),
              int(getattr(q.durability, 'value', q.durability))) for q in offered}
    if len(kinds) > 1:
        note = 'recorded publishers disagree on QoS; using reliable volatile'
    elif kinds:
        recorded_reliability, recorded_durability = kinds.pop()
        if recorded_reliability == 2:
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        if recorded_durability == 1:
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    if reliability != 'recorded':
        qos.reliability = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                           else ReliabilityPolicy.BEST_EFFORT)
    if durability != 'recorded':
        qos.durability = durability_policy(durability)
    return qos, note


def qos_overrides():
    """Lets users set ``qos_overrides./topic.subscription.{history,depth,reliability}``."""
    from rclpy.qos_overriding_options import QoSOverridingOptions
    return QoSOverridingOptions.with_default_policies()


def _policy_name(kind) -> str:
    from rclpy.event_handler import qos_policy_name_from_kind
    try:
        return qos_policy_name_from_kind(kind)
    except ValueError:
        return str(kind)


INPUT_ADVICE = 'check the input_reliability and input_durability parameters'
AUDIO_INFO_ADVICE = ('the publisher must offer AudioInfo latched (reliable, transient local), '
                     'or this node never learns the audio format')
BUDGET_ADVICE = ('the budget publisher must offer it latched (reliable, transient local), as '
                 'budget_manager does')


def subscription_events(node, topic: str, advice: str = INPUT_ADVICE,
                        on_lost: Optional[Callable[[int], None]] = None):
    """Event callbacks that WARN (naming the policy) when a publisher's QoS cannot match ours;
    ``advice`` says what to change (sensor inputs: the reliability parameter; the latched AudioInfo
    and budget subscriptions, which that parameter does not touch: :data:`AUDIO_INFO_ADVICE`,
    :data:`BUDGET_ADVICE`). ``on_lost(n)`` hears of messages DDS lost before they reached us:
    a best-effort reader never gets a message whose fragments did not all arrive (a large image
    over UDP, one over the shared-memory segment size), and sees it only as a gap in the
    writer's sequence numbers."""
    from rclpy.event_handler import SubscriptionEventCallbacks

    def on_message_lost(info) -> None:
        # Fast DDS also raises the event with sentinel counts (a change of 2**31 - 1 beside a
        # negative total) around an abandoned fragmented sample; only real changes count.
        change = int(info.total_count_change)
        if 0 < change < 2**31 - 1:
            on_lost(change)

    def on_incompatible(info) -> None:
        node.get_logger().warning(
            f"subscription on '{topic}' cannot match a publisher: incompatible QoS policy "
            f'{_policy_name(info.last_policy_kind)} ({info.total_count} incompatible so far); '
            f'{advice}')
    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible,
                                      message_lost=on_message_lost if on_lost else None)


def publisher_events(node, topic: str):
    """Event callbacks that WARN when a subscriber requests QoS our publisher does not offer."""
    from rclpy.event_handler import PublisherEventCallbacks

    def on_incompatible(info) -> None:
        node.get_logger().warning(
            f"publisher on '{topic}' cannot serve a subscriber: incompatible QoS policy "
            f'{_policy_name(info.last_policy_kind)} ({info.total_count} incompatible so far)')
    return PublisherEventCallbacks(incompatible_qos=on_incompatible)
