"""The QoS profiles every node uses, and event callbacks that say when QoS cannot match.

rclpy is imported by each function, never at module load (see :mod:`admn_ros.wire`).
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple

from admn_ros.wire.topics import AUDIO_INFO_TYPE

# input_reliability parameter values, as in yolo_ros: 0 system default, 1 reliable, 2 best effort.
RELIABILITY_NAMES = {0: 'system_default', 1: 'reliable', 2: 'best_effort'}


def sensor_qos(reliability: int = 2, depth: int = 5):
    """Input QoS: sensor-data profile (KEEP_LAST, VOLATILE) with the reliability parameter applied.

    Best effort (2, the default) matches both reliable and best-effort publishers; a reliable
    subscriber silently never matches a best-effort publisher (docs/nodes.md).
    """
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    if reliability not in RELIABILITY_NAMES:
        raise ValueError(f'reliability must be one of {RELIABILITY_NAMES}, got {reliability!r}')
    policy = {0: ReliabilityPolicy.SYSTEM_DEFAULT, 1: ReliabilityPolicy.RELIABLE,
              2: ReliabilityPolicy.BEST_EFFORT}[reliability]
    return QoSProfile(history=qos_profile_sensor_data.history, depth=int(depth), reliability=policy,
                      durability=qos_profile_sensor_data.durability)


def output_qos(depth: int = 100):
    """Output QoS: reliable KEEP_LAST ``depth`` (matches reliable and best-effort subscribers).

    A reliable writer that keeps only the last few samples drops the oldest unacknowledged one
    when a subscriber falls behind, silently; 100 covers seconds of frames for a subscriber
    stalled on a busy machine. (With depth 10, a replay next to other test runs once scored 79 of
    80 frames; this is the likeliest place it lost one.)"""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE)


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


# bag_player's ``reliability`` parameter: as recorded, or forced.
REPLAY_RELIABILITY = ('recorded', 'reliable', 'best_effort')
# Types that describe a stream rather than carry it: their subscribers require the latched
# profile, so a replay offers it whatever the bag recorded (rosbags-written bags record no QoS).
LATCHED_TYPES = (AUDIO_INFO_TYPE,)


def replay_qos(msgtype: str, offered: Sequence[Any], depth: int,
               reliability: str = 'recorded') -> Tuple[Any, str]:
    """The QoS a bag replay republishes one topic with, and a note when the recording disagrees.

    :data:`LATCHED_TYPES` always get :func:`latched_qos` (``reliability`` does not apply: a
    best-effort or volatile AudioInfo would never reach a latched subscriber). Otherwise the
    recorded ``offered`` profiles (rosbags QoS entries) when they all agree, history reset to
    KEEP_LAST ``depth``, else reliable volatile, which every subscriber accepts; ``reliability``
    other than ``recorded`` then forces that policy.
    """
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    if reliability not in REPLAY_RELIABILITY:
        raise ValueError(f'reliability must be one of {REPLAY_RELIABILITY}, got {reliability!r}')
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
        recorded_reliability, durability = kinds.pop()
        if recorded_reliability == 2:
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        if durability == 1:
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    if reliability != 'recorded':
        qos.reliability = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                           else ReliabilityPolicy.BEST_EFFORT)
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


INPUT_ADVICE = 'check the input_reliability parameter'
AUDIO_INFO_ADVICE = ('the publisher must offer AudioInfo latched (reliable, transient local), '
                     'or this node never learns the audio format')
BUDGET_ADVICE = ('the budget publisher must offer it latched (reliable, transient local), as '
                 'budget_manager does')


def subscription_events(node, topic: str, advice: str = INPUT_ADVICE):
    """Event callbacks that WARN (naming the policy) when a publisher's QoS cannot match ours;
    ``advice`` says what to change (sensor inputs: the reliability parameter; the latched AudioInfo
    and budget subscriptions, which that parameter does not touch: :data:`AUDIO_INFO_ADVICE`,
    :data:`BUDGET_ADVICE`)."""
    from rclpy.event_handler import SubscriptionEventCallbacks

    def on_incompatible(info) -> None:
        node.get_logger().warning(
            f"subscription on '{topic}' cannot match a publisher: incompatible QoS policy "
            f'{_policy_name(info.last_policy_kind)} ({info.total_count} incompatible so far); '
            f'{advice}')
    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)


def publisher_events(node, topic: str):
    """Event callbacks that WARN when a subscriber requests QoS our publisher does not offer."""
    from rclpy.event_handler import PublisherEventCallbacks

    def on_incompatible(info) -> None:
        node.get_logger().warning(
            f"publisher on '{topic}' cannot serve a subscriber: incompatible QoS policy "
            f'{_policy_name(info.last_policy_kind)} ({info.total_count} incompatible so far)')
    return PublisherEventCallbacks(incompatible_qos=on_incompatible)
