"""The QoS profiles every node uses, and event callbacks that say when QoS cannot match.

rclpy is imported by each function, never at module load (see :mod:`admn_ros.wire`).
"""
from __future__ import annotations

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


def output_qos(depth: int = 10):
    """Output QoS: reliable KEEP_LAST ``depth`` (matches reliable and best-effort subscribers)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE)


def latched_qos():
    """For near-constant topics: reliable, TRANSIENT_LOCAL, depth 1 (late joiners get the last)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def budget_qos():
    """The budget topic: latched (publisher and subscriber alike), so a late joiner gets the
    current value."""
    return latched_qos()


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


def subscription_events(node, topic: str):
    """Event callbacks that WARN (naming the policy) when a publisher's QoS cannot match ours."""
    from rclpy.event_handler import SubscriptionEventCallbacks

    def on_incompatible(info) -> None:
        node.get_logger().warning(
            f"subscription on '{topic}' cannot match a publisher: incompatible QoS policy "
            f'{_policy_name(info.last_policy_kind)} ({info.total_count} incompatible so far); '
            'check the input_reliability parameter')
    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)


def publisher_events(node, topic: str):
    """Event callbacks that WARN when a subscriber requests QoS our publisher does not offer."""
    from rclpy.event_handler import PublisherEventCallbacks

    def on_incompatible(info) -> None:
        node.get_logger().warning(
            f"publisher on '{topic}' cannot serve a subscriber: incompatible QoS policy "
            f'{_policy_name(info.last_policy_kind)} ({info.total_count} incompatible so far)')
    return PublisherEventCallbacks(incompatible_qos=on_incompatible)
