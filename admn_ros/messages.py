"""rclpy message builders and readers, and the QoS choices every node uses.

Images go through :mod:`admn_ros.datasets.rosmsg_codec` (the pure-numpy codec also used for bags), so a frame
published live and a frame read from a bag decode the same way.

Audio convention (docs/nodes.md): mono or multi-channel PCM in a ``sensor_msgs/Image`` with encoding
``16SC1`` (S16, full scale 32768, one row per channel, width = samples), ``header.stamp`` = capture
time of the first sample, sample rate fixed at :data:`admn_ros.datasets.sample.SAMPLE_RATE`. When the
ros-drivers flavour of ``audio_common_msgs`` imports, :func:`audio_stamped_msg` additionally builds
``AudioDataStamped`` (S16LE interleaved bytes).

Ground truth rides in ``diagnostic_msgs/DiagnosticArray`` (standard type, no custom messages):
the label as one status named ``label`` with values ``class_id``/``class_name``; corruption levels
as one status per modality (name = modality) with values ``type``/``severity``.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, Tuple

import numpy as np

from admn_ros.datasets import topics as T
from admn_ros.datasets.sample import SAMPLE_RATE

# input_reliability parameter values, as in yolo_ros: 0 system default, 1 reliable, 2 best effort.
RELIABILITY_NAMES = {0: 'system_default', 1: 'reliable', 2: 'best_effort'}
LABEL_STATUS = T.LABEL_STATUS_NAME


def relative(topic: str) -> str:
    """Node-relative form of a topic name, so a namespace (``__ns``) applies to it."""
    return topic.lstrip('/')


# Node-relative topic names used by every node (datasets.topics holds the absolute ones that bags
# record). The noise injector republishes each sensor topic under CORRUPTED_PREFIX.
RGB = relative(T.RGB_TOPIC)                      # camera/color/image_raw
DEPTH = relative(T.DEPTH_TOPIC)                  # camera/depth/image
AUDIO = relative(T.AUDIO_TOPIC)                  # audio/pcm
AUDIO_STAMPED = relative(T.AUDIO_STAMPED_TOPIC)  # audio/audio_stamped
LABEL = relative(T.LABEL_TOPIC)                  # ground_truth/label
CORRUPTION = relative(T.CORRUPTION_TOPIC)        # ground_truth/corruption
SENSOR_TOPICS = {'rgb': RGB, 'depth': DEPTH, 'audio': AUDIO}
CORRUPTED_PREFIX = 'corrupted'
CORRUPTED_TOPICS = {m: f'{CORRUPTED_PREFIX}/{t}' for m, t in SENSOR_TOPICS.items()}
FRAME_IDS = dict(T.FRAME_IDS)


# --------------------------------------------------------------------------- time
def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` (rclpy or rosbags object) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    """Integer nanoseconds -> ``builtin_interfaces.msg.Time`` (ValueError when negative)."""
    from builtin_interfaces.msg import Time

    from admn_ros.datasets.rosmsg_codec import split_stamp
    sec, nanosec = split_stamp(ns)
    return Time(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str = ''):
    from std_msgs.msg import Header
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# --------------------------------------------------------------------------- images
def image_msg(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = ''):
    """numpy array -> ``sensor_msgs/Image`` (data assigned as ``bytes``: 1000x faster)."""
    from sensor_msgs.msg import Image

    from admn_ros.datasets.rosmsg_codec import image_fields
    msg = Image(header=header(stamp_ns, frame_id))
    for key, value in image_fields(np.ascontiguousarray(arr), encoding).items():
        setattr(msg, key, value)
    return msg


def read_image(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> numpy (RGB uint8 HxWx3, or float32 metres for depth)."""
    from admn_ros.datasets.rosmsg_codec import image_to_array
    return image_to_array(msg)


def rgb_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = T.FRAME_IDS['rgb']):
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'rgb must be uint8 HxWx3, got {rgb.dtype} {rgb.shape}')
    return image_msg(rgb, 'rgb8', stamp_ns, frame_id)


def depth_msg(depth: np.ndarray, stamp_ns: int, frame_id: str = T.FRAME_IDS['depth']):
    """Depth in metres as REP 118 ``32FC1`` (NaN = invalid)."""
    if depth.ndim != 2:
        raise ValueError(f'depth must be HxW, got shape {depth.shape}')
    return image_msg(depth.astype(np.float32, copy=False), '32FC1', stamp_ns, frame_id)


# --------------------------------------------------------------------------- audio
# The ros-drivers audio_common default (S16LE mono at our sample rate), assumed for AudioDataStamped
# because the stamped message itself carries no format.
AUDIO_INFO = SimpleNamespace(channels=1, sample_rate=SAMPLE_RATE, sample_format='S16LE',
                             coding_format='wave', bitrate=0)


def audio_msg(audio: np.ndarray, stamp_ns: int, frame_id: str = T.FRAME_IDS['audio'],
              encoding: str = '16SC1'):
    """Waveform [T] (mono) or [C, T] in [-1, 1] -> Image with one row per channel.

    The stamp must be the capture time of the chunk's first sample.
    """
    from sensor_msgs.msg import Image

    from admn_ros.datasets.rosmsg_codec import audio_to_image_fields
    msg = Image(header=header(stamp_ns, frame_id))
    for key, value in audio_to_image_fields(audio, encoding).items():
        setattr(msg, key, value)
    return msg


def read_audio(msg) -> np.ndarray:
    """Audio message -> float32 [C, T] (Image convention, or ``AudioDataStamped`` taken as S16LE
    mono: the stamped message carries no format)."""
    from admn_ros.datasets.rosmsg_codec import audio_common_to_array, audio_from_image
    if hasattr(msg, 'audio'):
        return audio_common_to_array(msg, AUDIO_INFO)
    return audio_from_image(msg)


def audio_common_available() -> bool:
    """Whether ros-drivers' ``audio_common_msgs`` (with ``AudioDataStamped``) is built here."""
    try:
        from audio_common_msgs.msg import AudioDataStamped  # noqa: F401
    except ImportError:
        return False
    return True


def audio_stamped_msg(audio: np.ndarray, stamp_ns: int, frame_id: str = T.FRAME_IDS['audio']):
    """``audio_common_msgs/AudioDataStamped``, S16LE interleaved (only when the package imports)."""
    from audio_common_msgs.msg import AudioDataStamped

    from admn_ros.datasets.rosmsg_codec import audio_to_image_fields
    fields = audio_to_image_fields(audio, '16SC1')
    rows = np.frombuffer(fields['data'], '<i2').reshape(fields['height'], fields['width'])
    msg = AudioDataStamped(header=header(stamp_ns, frame_id))
    msg.audio.data = np.ascontiguousarray(rows.T).tobytes()  # interleave channels
    return msg


# --------------------------------------------------------------------------- ground truth
def diag_status(name: str, message: str, values: Dict[str, Any], level: int = 0):
    """A ``DiagnosticStatus`` carrying ``values`` as key/value strings."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    return DiagnosticStatus(level=bytes([level]), name=name, message=message,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def status_values(status) -> Dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def find_status(msg, name: str):
    """The status called ``name`` in a DiagnosticArray; ValueError when there is none."""
    for status in msg.status:
        if status.name == name:
            return status
    raise ValueError(f'DiagnosticArray has no {name!r} status')


def label_msg(stamp_ns: int, class_id: int, class_name: str = ''):
    """Ground-truth class: a DiagnosticArray with one ``label`` status, stamped like its sample."""
    from diagnostic_msgs.msg import DiagnosticArray
    values = {T.LABEL_KEY_ID: int(class_id), T.LABEL_KEY_NAME: class_name}
    return DiagnosticArray(header=header(stamp_ns),
                           status=[diag_status(LABEL_STATUS, class_name, values)])


def read_label(msg) -> Tuple[int, str]:
    """DiagnosticArray -> (class_id, class_name); ValueError when it carries no label status."""
    values = status_values(find_status(msg, LABEL_STATUS))
    if T.LABEL_KEY_ID not in values:
        raise ValueError(f'label status has no {T.LABEL_KEY_ID} value')
    return int(values[T.LABEL_KEY_ID]), values.get(T.LABEL_KEY_NAME, '')


def corruption_msg(stamp_ns: int, levels: Dict[str, Tuple[str, float]]):
    """Applied corruption per modality: ``{modality: (type, severity)}`` -> DiagnosticArray."""
    from diagnostic_msgs.msg import DiagnosticArray
    status = []
    for modality, (ctype, severity) in levels.items():
        severity = float(severity)
        clean = ctype == 'clean' or severity == 0.0
        values = {T.CORRUPTION_KEY_TYPE: ctype, T.CORRUPTION_KEY_SEVERITY: repr(severity)}
        status.append(diag_status(modality, 'clean' if clean else f'{ctype} {severity:.3f}', values,
                              level=0 if clean else 1))
    return DiagnosticArray(header=header(stamp_ns), status=status)


def read_corruption(msg) -> Dict[str, Tuple[str, float]]:
    """DiagnosticArray -> ``{modality: (type, severity)}`` for the statuses it carries."""
    out = {}
    for status in msg.status:
        values = status_values(status)
        if T.CORRUPTION_KEY_TYPE in values and T.CORRUPTION_KEY_SEVERITY in values:
            out[status.name] = (values[T.CORRUPTION_KEY_TYPE],
                                float(values[T.CORRUPTION_KEY_SEVERITY]))
    return out


# --------------------------------------------------------------------------- QoS
def sensor_qos(reliability: int = 2, depth: int = 5):
    """Input QoS: sensor-data profile (KEEP_LAST, VOLATILE) with the reliability parameter applied.

    Best effort (2, the default) matches both reliable and best-effort publishers; a reliable
    subscriber silently never matches a best-effort publisher (docs/nodes.md).
    """
    from rclpy.qos import QoSProfile, qos_profile_sensor_data, ReliabilityPolicy
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


def message_class(msgtype: str):
    """``'sensor_msgs/msg/Image'`` -> the rclpy class (importlib; rosidl_runtime_py has no wheel).

    Raises ImportError when the package is not built here, ValueError for a malformed name.
    """
    import importlib
    parts = msgtype.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"message type must look like 'pkg/msg/Name', got {msgtype!r}")
    module = importlib.import_module(f'{parts[0]}.{parts[1]}')
    try:
        return getattr(module, parts[2])
    except AttributeError:
        raise ImportError(f'{parts[0]}.{parts[1]} has no type {parts[2]!r}') from None

