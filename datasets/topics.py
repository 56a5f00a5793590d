"""Topic names, message types and frame ids shared by the bag I/O and the ROS nodes.

Conventions (docs/nodes.md):

- RGB: ``sensor_msgs/msg/Image`` ``rgb8`` (``bgr8``/``rgba8``/``bgra8`` accepted on read).
- Depth: ``sensor_msgs/msg/Image`` ``32FC1`` in metres, NaN = invalid (REP 118); ``16UC1``
  millimetres with 0 = invalid accepted on read.
- Audio: ``sensor_msgs/msg/Image`` ``16SC1`` (or ``32FC1``), one row per channel, width =
  samples, ``header.stamp`` = capture time of the first sample. The ros-drivers
  ``audio_common_msgs/msg/AudioDataStamped`` (+ latched ``AudioInfo``) is read too.
- Ground truth: ``diagnostic_msgs/msg/DiagnosticArray``; the label topic has one status named
  ``label`` with values ``class_id`` and ``class_name``; the corruption topic has one status per
  modality (status name = modality) with values ``type`` and ``severity``.
"""
from __future__ import annotations

IMAGE_TYPE = 'sensor_msgs/msg/Image'
DIAGNOSTIC_ARRAY_TYPE = 'diagnostic_msgs/msg/DiagnosticArray'
AUDIO_STAMPED_TYPE = 'audio_common_msgs/msg/AudioDataStamped'
AUDIO_DATA_TYPE = 'audio_common_msgs/msg/AudioData'
AUDIO_INFO_TYPE = 'audio_common_msgs/msg/AudioInfo'

RGB_TOPIC = '/camera/color/image_raw'
DEPTH_TOPIC = '/camera/depth/image'
AUDIO_TOPIC = '/audio/pcm'
AUDIO_STAMPED_TOPIC = '/audio/audio_stamped'
AUDIO_INFO_TOPIC = '/audio/audio_info'
LABEL_TOPIC = '/ground_truth/label'
CORRUPTION_TOPIC = '/ground_truth/corruption'

# modality -> topic carrying it as a sensor_msgs/Image
MODALITY_TOPICS = {'rgb': RGB_TOPIC, 'depth': DEPTH_TOPIC, 'audio': AUDIO_TOPIC}

RGB_ENCODING = 'rgb8'
DEPTH_ENCODING = '32FC1'
AUDIO_ENCODING = '16SC1'

# REP 103: image frames name the optical frame.
FRAME_IDS = {
    'rgb': 'camera_color_optical_frame',
    'depth': 'camera_depth_optical_frame',
    'audio': 'microphone',
}

LABEL_STATUS_NAME = 'label'
LABEL_KEY_ID = 'class_id'
LABEL_KEY_NAME = 'class_name'
CORRUPTION_KEY_TYPE = 'type'
CORRUPTION_KEY_SEVERITY = 'severity'
