"""ROS messages without ROS: topic names, message types and the rclpy-free encoders and decoders
of every message a bag holds or a node exchanges with the sensors and ground truth.

=============================  =================================================================
module                         holds
=============================  =================================================================
:mod:`.topics`                 topic names (absolute for bags, node-relative for nodes), message
                               type names, encodings, frame ids, keys inside DiagnosticArrays
:mod:`.flavours`               where message classes come from: rclpy (:data:`ROS`) or rosbags
:mod:`.header`                 stamps and ``std_msgs/Header``
:mod:`.image_codec`            numpy <-> ``sensor_msgs/Image`` fields (every encoding)
:mod:`.audio_codec`            audio in an Image, ``audio_common_msgs`` PCM payloads
:mod:`.sensors`                RGB, depth and audio messages (build and read)
:mod:`.diagnostic_array`       DiagnosticArray as named key/value records
:mod:`.ground_truth`           label and corruption messages (the one writer for nodes and bags)
:mod:`.typestore`              the rosbags typestore (+ :mod:`.msg`: the audio_common and
                               admn_msgs definitions as .msg text)
=============================  =================================================================

They sit in the core's bottom layer because the bag I/O (:mod:`admn_ros.datasets.bags`) needs
them; the ROS adapter's message contract, :mod:`admn_ros.wire`, re-exports all of this beside what
only nodes use (QoS, validated sensor input, admn_fusion's outputs). Nothing here imports rclpy or
a message package at module load (rclpy classes are looked up when a message is built), and
:mod:`.typestore` is not imported here (it needs rosbags, which only the bag tools use).
"""
from admn_ros.datasets.ros_messages.audio_codec import (PCM_FORMATS, PcmReassembler,
                                                        audio_common_to_array, audio_from_image,
                                                        audio_info_key, audio_to_image_fields,
                                                        pcm16, pcm_bytes_to_array, pcm_frame_bytes)
from admn_ros.datasets.ros_messages.diagnostic_array import (diag_status, diagnostic_array,
                                                             find_status, status_level,
                                                             status_values)
from admn_ros.datasets.ros_messages.flavours import ROS, Flavour, bag_flavour, message_class
from admn_ros.datasets.ros_messages.ground_truth import (corruption_msg, label_msg,
                                                         read_corruption, read_label)
from admn_ros.datasets.ros_messages.header import (header, header_stamp_ns, ns_to_stamp,
                                                   split_stamp, stamp_to_ns)
from admn_ros.datasets.ros_messages.image_codec import depth_to_mm, image_fields, image_to_array
from admn_ros.datasets.ros_messages.sensors import (AUDIO_INFO, audio_common_available,
                                                    audio_info_msg, audio_msg, audio_stamped_msg,
                                                    depth_msg, image_msg, read_audio, read_image,
                                                    rgb_msg)
from admn_ros.datasets.ros_messages.topics import (ALLOCATION, AUDIO, AUDIO_STAMPED,
                                                   AUDIO_STAMPED_INFO, BUDGET, CLASSIFICATION,
                                                   CORRUPTED_PREFIX, CORRUPTED_TOPICS, CORRUPTION,
                                                   DEPTH, FRAME_IDS, INFERENCE, LABEL,
                                                   OUTPUT_TYPES, PREDICTION, QUALITY, RGB,
                                                   SENSOR_TOPICS, relative)

__all__ = ['ALLOCATION', 'AUDIO', 'AUDIO_INFO', 'AUDIO_STAMPED', 'AUDIO_STAMPED_INFO', 'BUDGET',
           'CLASSIFICATION', 'CORRUPTED_PREFIX', 'CORRUPTED_TOPICS', 'CORRUPTION', 'DEPTH',
           'FRAME_IDS', 'INFERENCE', 'LABEL', 'OUTPUT_TYPES', 'PCM_FORMATS', 'PREDICTION',
           'QUALITY', 'RGB', 'ROS', 'SENSOR_TOPICS', 'audio_common_available',
           'audio_common_to_array', 'audio_from_image', 'audio_info_key', 'audio_info_msg',
           'audio_msg', 'audio_stamped_msg', 'audio_to_image_fields', 'bag_flavour',
           'corruption_msg', 'depth_msg', 'depth_to_mm', 'diag_status', 'diagnostic_array',
           'find_status', 'Flavour', 'header', 'header_stamp_ns', 'image_fields', 'image_msg',
           'image_to_array', 'label_msg', 'message_class', 'ns_to_stamp', 'pcm16',
           'pcm_bytes_to_array', 'pcm_frame_bytes', 'PcmReassembler', 'read_audio',
           'read_corruption', 'read_image', 'read_label', 'relative', 'rgb_msg', 'split_stamp',
           'stamp_to_ns', 'status_level', 'status_values']
