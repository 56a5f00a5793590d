"""The ROS wire contract in one place: topic names, QoS, and the encoder and decoder of every
message admn_ros reads or writes. Nodes and the bag tools use it alike::

    from admn_ros import wire
    pub.publish(wire.rgb_msg(rgb, stamp_ns))                       # rclpy message
    store_msg = wire.rgb_msg(rgb, stamp_ns, flavour=bag_messages())  # rosbags message

=============================  =================================================================
module                         holds
=============================  =================================================================
:mod:`.qos`                    the QoS profiles (a bag replay's per topic too) and
                               incompatible-QoS warnings
:mod:`.sensor_input`           what admn_fusion accepts: validated decoding, :class:`RejectedInput`
:mod:`.fusion_outputs`         prediction, allocation, quality, inference (``admn_msgs``) and
                               budget messages
:mod:`admn_ros.datasets.       topic names (``from admn_ros.wire import topics as T``), flavours,
ros_messages`                  stamps and headers, image and audio codecs, sensor and ground-truth
                               messages, DiagnosticArray records, and the rosbags typestore
=============================  =================================================================

Why the codecs live in the core: the bag I/O (:mod:`admn_ros.datasets.bags`) reads and writes the
same messages, and the core must not import this package's adapter modules; this package
re-exports them, so ``wire`` stays the one place nodes build and read messages. **Nothing here
imports rclpy or a message package at module load** - rclpy classes are looked up when a message
is built (:data:`ROS`), so the core and the bag tools work where ROS is not installed
(``tests/test_wire.py`` checks this). The typestore
(:mod:`admn_ros.datasets.ros_messages.typestore`) is not re-exported here (it imports rosbags,
which only the bag tools need).
"""
from admn_ros.datasets.ros_messages import (ALLOCATION, AUDIO, AUDIO_INFO, AUDIO_STAMPED,
                                            AUDIO_STAMPED_INFO, BUDGET, CLASSIFICATION,
                                            CORRUPTED_PREFIX, CORRUPTED_TOPICS, CORRUPTION, DEPTH,
                                            FRAME_IDS, INFERENCE, LABEL, OUTPUT_TYPES, PCM_FORMATS,
                                            PREDICTION, QUALITY, RGB, ROS, SENSOR_TOPICS,
                                            audio_common_available, audio_common_to_array,
                                            audio_from_image, audio_info_key, audio_info_msg,
                                            audio_msg, audio_stamped_msg, audio_to_image_fields,
                                            bag_flavour, corruption_msg, depth_msg, depth_to_mm,
                                            diag_status, diagnostic_array, find_status, Flavour,
                                            header, header_stamp_ns, image_fields, image_msg,
                                            image_to_array, label_msg, message_class, ns_to_stamp,
                                            pcm16, pcm_bytes_to_array, pcm_frame_bytes,
                                            PcmReassembler, read_audio, read_corruption,
                                            read_image, read_label, relative, rgb_msg, split_stamp,
                                            stamp_to_ns, status_level, status_values)
from admn_ros.datasets.ros_messages import topics
from admn_ros.wire.fusion_outputs import (allocation_msg, budget_msg, classification_msg,
                                          classification_type, inference_msg, output_class,
                                          prediction_msg, quality_msg, read_allocation,
                                          read_budget, read_inference, read_prediction,
                                          read_quality)
from admn_ros.wire.qos import (AUDIO_INFO_ADVICE, BUDGET_ADVICE, DURABILITY_NAMES, INPUT_ADVICE,
                               LATCHED_TYPES, RELIABILITY_NAMES, REPLAY_DURABILITY,
                               REPLAY_RELIABILITY, budget_qos, durability_policy, latched_qos,
                               output_qos, publisher_events, qos_overrides, replay_qos, sensor_qos,
                               subscription_events)
from admn_ros.wire.sensor_input import (DECODERS, InputLimits, RejectedInput, audio_common_payload,
                                        decode_audio, decode_depth, decode_rgb)

__all__ = [
    'PCM_FORMATS', 'PcmReassembler', 'audio_common_to_array', 'audio_from_image', 'audio_info_key',
    'audio_to_image_fields', 'pcm16', 'pcm_bytes_to_array', 'pcm_frame_bytes', 'diag_status',
    'diagnostic_array', 'find_status', 'status_level', 'status_values', 'ROS', 'Flavour',
    'bag_flavour', 'message_class', 'allocation_msg', 'budget_msg', 'classification_msg',
    'classification_type', 'inference_msg', 'output_class', 'prediction_msg', 'quality_msg',
    'read_allocation',
    'read_budget', 'read_inference', 'read_prediction', 'read_quality', 'corruption_msg',
    'label_msg', 'read_corruption', 'read_label', 'header', 'header_stamp_ns', 'ns_to_stamp',
    'split_stamp', 'stamp_to_ns', 'depth_to_mm', 'image_fields', 'image_to_array',
    'AUDIO_INFO_ADVICE', 'BUDGET_ADVICE', 'DURABILITY_NAMES', 'INPUT_ADVICE', 'LATCHED_TYPES',
    'RELIABILITY_NAMES', 'REPLAY_DURABILITY', 'REPLAY_RELIABILITY', 'budget_qos',
    'durability_policy', 'latched_qos', 'output_qos', 'publisher_events',
    'qos_overrides', 'replay_qos', 'sensor_qos', 'subscription_events', 'DECODERS', 'InputLimits',
    'RejectedInput', 'audio_common_payload', 'decode_audio', 'decode_depth', 'decode_rgb',
    'AUDIO_INFO', 'audio_common_available', 'audio_info_msg', 'audio_msg', 'audio_stamped_msg',
    'depth_msg', 'image_msg', 'read_audio', 'read_image', 'rgb_msg', 'ALLOCATION', 'AUDIO',
    'AUDIO_STAMPED', 'AUDIO_STAMPED_INFO', 'BUDGET', 'CLASSIFICATION', 'CORRUPTED_PREFIX',
    'CORRUPTED_TOPICS', 'CORRUPTION', 'DEPTH', 'FRAME_IDS', 'INFERENCE', 'LABEL', 'OUTPUT_TYPES',
    'PREDICTION', 'QUALITY', 'RGB',
    'SENSOR_TOPICS', 'relative', 'topics']
