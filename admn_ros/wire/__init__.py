"""The ROS wire contract in one place: topic names, QoS, and the encoder and decoder of every
message admn_ros reads or writes. Nodes and the bag tools use it alike::

    from admn_ros import wire
    pub.publish(wire.rgb_msg(rgb, stamp_ns))                       # rclpy message
    store_msg = wire.rgb_msg(rgb, stamp_ns, flavour=bag_messages())  # rosbags message

=============================  =================================================================
module                         holds
=============================  =================================================================
:mod:`.topics`                 topic names (absolute for bags, node-relative for nodes), message
                               type names, encodings, frame ids, keys inside DiagnosticArrays
:mod:`.qos`                    the QoS profiles (a bag replay's per topic too) and
                               incompatible-QoS warnings
:mod:`.flavours`               where message classes come from: rclpy (:data:`ROS`) or rosbags
:mod:`.header`                 stamps and ``std_msgs/Header``
:mod:`.image_codec`            numpy <-> ``sensor_msgs/Image`` fields (every encoding)
:mod:`.audio_codec`            audio in an Image, ``audio_common_msgs`` PCM payloads
:mod:`.sensors`                RGB, depth and audio messages (build and read)
:mod:`.sensor_input`           what admn_fusion accepts: validated decoding, :class:`RejectedInput`
:mod:`.diagnostic_array`       DiagnosticArray as named key/value records
:mod:`.ground_truth`           label and corruption messages (the one writer for nodes and bags)
:mod:`.fusion_outputs`         prediction, allocation, quality, inference (``admn_msgs``) and
                               budget messages
:mod:`.typestore`              the rosbags typestore (+ :mod:`.msg`: the audio_common and
                               admn_msgs definitions as .msg text)
=============================  =================================================================

Why here and not in ``datasets/``: the contract is the ROS package's interface, and nodes are
its main users; the bag tools (:mod:`admn_ros.datasets.bags`) import it too, which is safe
because **nothing in this package imports rclpy or a message package at module load** - rclpy
classes are looked up when a message is built (:data:`ROS`), so the core and the bag tools work
where ROS is not installed (``tests/test_wire.py`` checks this). :mod:`.typestore` is not
re-exported here (it imports rosbags, which only the bag tools need).
"""
from admn_ros.wire.audio_codec import (PCM_FORMATS, PcmReassembler, audio_common_to_array,
                                       audio_from_image, audio_info_key, audio_to_image_fields,
                                       pcm16, pcm_bytes_to_array, pcm_frame_bytes)
from admn_ros.wire.diagnostic_array import (diag_status, diagnostic_array, find_status,
                                            status_level, status_values)
from admn_ros.wire.flavours import ROS, Flavour, bag_flavour, message_class
from admn_ros.wire.fusion_outputs import (allocation_msg, budget_msg, classification_msg,
                                          classification_type, inference_msg, output_class,
                                          prediction_msg, quality_msg, read_allocation,
                                          read_budget, read_inference, read_prediction,
                                          read_quality)
from admn_ros.wire.ground_truth import corruption_msg, label_msg, read_corruption, read_label
from admn_ros.wire.header import header, header_stamp_ns, ns_to_stamp, split_stamp, stamp_to_ns
from admn_ros.wire.image_codec import depth_to_mm, image_fields, image_to_array
from admn_ros.wire.qos import (AUDIO_INFO_ADVICE, BUDGET_ADVICE, DURABILITY_NAMES, INPUT_ADVICE,
                               LATCHED_TYPES, RELIABILITY_NAMES, REPLAY_DURABILITY,
                               REPLAY_RELIABILITY, budget_qos, durability_policy, latched_qos,
                               output_qos, publisher_events, qos_overrides, replay_qos, sensor_qos,
                               subscription_events)
from admn_ros.wire.sensor_input import (DECODERS, InputLimits, RejectedInput,
                                        audio_common_payload, decode_audio, decode_depth,
                                        decode_rgb)
from admn_ros.wire.sensors import (AUDIO_INFO, audio_common_available, audio_info_msg, audio_msg,
                                   audio_stamped_msg, depth_msg, image_msg, read_audio, read_image,
                                   rgb_msg)
from admn_ros.wire.topics import (ALLOCATION, AUDIO, AUDIO_STAMPED, AUDIO_STAMPED_INFO, BUDGET,
                                  CLASSIFICATION, CORRUPTED_PREFIX, CORRUPTED_TOPICS, CORRUPTION,
                                  DEPTH, FRAME_IDS, INFERENCE, LABEL, OUTPUT_TYPES, PREDICTION,
                                  QUALITY, RGB, SENSOR_TOPICS, relative)

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
    'SENSOR_TOPICS', 'relative']
