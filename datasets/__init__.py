"""Sensor data: synthetic RGB-D-audio world, real loaders, corruptions, preprocessing, rosbag2 I/O.

Never imports rclpy.
"""
from admn_ros.datasets.sample import MODALITIES, SAMPLE_RATE  # noqa: F401
