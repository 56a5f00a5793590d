"""Oversized images with the default best-effort inputs are counted: one that arrives is rejected
before decoding (``rejected``); one that DDS cannot deliver to a best-effort reader (its fragments
over the shared-memory segment or UDP do not all arrive) is counted from the subscription's
message-lost event (``lost``). Before, the second kind vanished without a trace."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from admn_ros import wire  # noqa: E402
from tests.fixtures_models import make_random_checkpoint, sample_frame  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_oversized_best_effort_images_are_rejected_or_counted_lost(ros_context, tmp_path):
    ns = f'/oversized_{os.getpid()}'
    model = make_random_checkpoint(tmp_path / 'm.pt')
    fusion = subprocess.Popen(
        [sys.executable, '-m', 'admn_ros.nodes.admn_fusion', '--ros-args', '-r', f'__ns:={ns}',
         '-p', f'model_path:={model}', '-p', 'policy:=naive', '-p', 'max_message_bytes:=40000'],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    node = rclpy.create_node('feeder', namespace=ns, context=ros_context)
    try:
        from rclpy.executors import SingleThreadedExecutor
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        pubs = {m: node.create_publisher(Image, wire.SENSOR_TOPICS[m], qos_profile_sensor_data)
                for m in ('rgb', 'depth', 'audio')}
        inputs = []
        node.create_subscription(
            DiagnosticArray, '/diagnostics',
            lambda arr: inputs.extend(s for s in arr.status if s.name == 'admn_fusion: inputs'),
            50)

        def spin(seconds, until=lambda: False):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not until():
                executor.spin_once(timeout_sec=0.05)
        spin(120, lambda: all(p.get_subscription_count() for p in pubs.values())
             and any(s.message != 'inactive' for s in inputs))
        assert fusion.poll() is None and inputs, 'fusion did not come up'
        data = sample_frame(0)
        big = np.zeros((1000, 1000, 3), np.uint8)    # 3 MB: over the segment, and over the limit
        for i in range(40):
            stamp = node.get_clock().now().nanoseconds
            pubs['rgb'].publish(wire.rgb_msg(big if i % 10 == 5 else data['rgb'], stamp))
            pubs['depth'].publish(wire.depth_msg(data['depth'], stamp))
            pubs['audio'].publish(wire.audio_msg(data['audio'], stamp))
            spin(0.05)
        inputs.clear()
        spin(5, lambda: bool(inputs))
        values = {kv.key: kv.value for kv in inputs[-1].values}
        counted = int(values['rgb rejected']) + int(values.get('rgb lost', 0))
        assert counted >= 4, values
        assert int(values['depth rejected']) == 0 and int(values['rgb received']) >= 30, values
    finally:
        node.destroy_node()
        fusion.send_signal(2)
        try:
            fusion.wait(30)
        except subprocess.TimeoutExpired:
            fusion.kill()
