"""Topic names, message types, encodings, frame ids and the key names inside diagnostic messages.

Absolute names (``*_TOPIC``) are what bags record; nodes use the node-relative forms (``RGB``,
``LABEL``, ``PREDICTION`` ...), so a namespace (``__ns``) applies to them.

Conventions (docs/nodes.md):

- RGB: ``sensor_msgs/msg/Image`` ``rgb8`` (``bgr8``/``rgba8``/``bgra8``/``mono8`` accepted on read).
- Depth: ``sensor_msgs/msg/Image`` ``32FC1`` in metres, NaN = invalid (REP 118); ``16UC1``
  millimetres with 0 = invalid accepted on read.
- Audio: ``sensor_msgs/msg/Image`` ``16SC1`` (or ``32FC1``), one row per channel, width =
  samples, ``header.stamp`` = capture time of the first sample. The ros-drivers
  ``audio_common_msgs/msg/AudioDataStamped`` is read too, in the format its stream's latched
  ``AudioInfo`` names (required: without it the stream's buffers are refused).
- Ground truth: ``diagnostic_msgs/msg/DiagnosticArray``; the label topic has one status named
  ``label`` with values ``class_id`` and ``class_name``; the corruption topic has one status per
  modality (status name = modality) with values ``type`` and ``severity``.
- Budget: ``std_msgs/msg/Float32``, a fraction of the full model.
- Fusion outputs: one ``admn_msgs`` type per topic (:data:`OUTPUT_TYPES`), whatever is installed;
  see :mod:`admn_ros.wire.fusion_outputs`.
"""
from __future__ import annotations

IMAGE_TYPE = 'sensor_msgs/msg/Image'
DIAGNOSTIC_ARRAY_TYPE = 'diagnostic_msgs/msg/DiagnosticArray'
DIAGNOSTIC_STATUS_TYPE = 'diagnostic_msgs/msg/DiagnosticStatus'
KEY_VALUE_TYPE = 'diagnostic_msgs/msg/KeyValue'
FLOAT32_TYPE = 'std_msgs/msg/Float32'
CLASSIFICATION_TYPE = 'vision_msgs/msg/Classification'
OBJECT_HYPOTHESIS_TYPE = 'vision_msgs/msg/ObjectHypothesis'
AUDIO_STAMPED_TYPE = 'audio_common_msgs/msg/AudioDataStamped'
AUDIO_DATA_TYPE = 'audio_common_msgs/msg/AudioData'
AUDIO_INFO_TYPE = 'audio_common_msgs/msg/AudioInfo'
# admn_fusion's outputs: the admn_msgs package (admn_msgs/msg/*.msg)
PREDICTION_TYPE = 'admn_msgs/msg/Prediction'
ALLOCATION_TYPE = 'admn_msgs/msg/Allocation'
QUALITY_TYPE = 'admn_msgs/msg/Quality'
INFERENCE_TYPE = 'admn_msgs/msg/Inference'
ADMN_MSGS_TYPES = (PREDICTION_TYPE, ALLOCATION_TYPE, QUALITY_TYPE, INFERENCE_TYPE)

# --- absolute names (bags)
RGB_TOPIC = '/camera/color/image_raw'
DEPTH_TOPIC = '/camera/depth/image'
AUDIO_TOPIC = '/audio/pcm'
AUDIO_STAMPED_TOPIC = '/audio/audio_stamped'
AUDIO_INFO_TOPIC = '/audio/audio_info'
LABEL_TOPIC = '/ground_truth/label'
CORRUPTION_TOPIC = '/ground_truth/corruption'

# modality -> topic carrying it as a sensor_msgs/Image
MODALITY_TOPICS = {'rgb': RGB_TOPIC, 'depth': DEPTH_TOPIC, 'audio': AUDIO_TOPIC}


def relative(topic: str) -> str:
    """Node-relative form of a topic name, so a namespace (``__ns``) applies to it."""
    return topic.lstrip('/')


# --- node-relative names (nodes)
RGB = relative(RGB_TOPIC)                      # camera/color/image_raw
DEPTH = relative(DEPTH_TOPIC)                  # camera/depth/image
AUDIO = relative(AUDIO_TOPIC)                  # audio/pcm
AUDIO_STAMPED = relative(AUDIO_STAMPED_TOPIC)  # audio/audio_stamped
AUDIO_STAMPED_INFO = relative(AUDIO_INFO_TOPIC)  # audio/audio_info: the stamped stream's format
LABEL = relative(LABEL_TOPIC)                  # ground_truth/label
CORRUPTION = relative(CORRUPTION_TOPIC)        # ground_truth/corruption
SENSOR_TOPICS = {'rgb': RGB, 'depth': DEPTH, 'audio': AUDIO}
# The noise injector republishes each sensor topic under this prefix.
CORRUPTED_PREFIX = 'corrupted'
CORRUPTED_TOPICS = {m: f'{CORRUPTED_PREFIX}/{t}' for m, t in SENSOR_TOPICS.items()}
BUDGET = 'budget'
PREDICTION = 'admn/prediction'
ALLOCATION = 'admn/allocation'
QUALITY = 'admn/quality'
INFERENCE = 'admn/inference'
# The prediction again as vision_msgs/Classification, only where vision_msgs is installed.
CLASSIFICATION = 'admn/classification'
# The one message type of each admn_fusion output topic (vision_msgs' optional extra aside).
OUTPUT_TYPES = {PREDICTION: PREDICTION_TYPE, ALLOCATION: ALLOCATION_TYPE, QUALITY: QUALITY_TYPE,
                INFERENCE: INFERENCE_TYPE}

# --- encodings written, and accepted by admn_fusion
RGB_ENCODING = 'rgb8'
DEPTH_ENCODING = '32FC1'
AUDIO_ENCODING = '16SC1'
RGB_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')
DEPTH_ENCODINGS = ('32FC1', '16UC1')
AUDIO_ENCODINGS = ('16SC1', '32FC1')

# REP 103: image frames name the optical frame.
FRAME_IDS = {
    'rgb': 'camera_color_optical_frame',
    'depth': 'camera_depth_optical_frame',
    'audio': 'microphone',
}

# --- inside DiagnosticArray messages
LABEL_STATUS_NAME = 'label'
LABEL_KEY_ID = 'class_id'
LABEL_KEY_NAME = 'class_name'
CORRUPTION_KEY_TYPE = 'type'
CORRUPTION_KEY_SEVERITY = 'severity'
