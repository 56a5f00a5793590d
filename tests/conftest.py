"""Suite-wide isolation: ROS traffic stays on this host and each test process gets its own domain."""
import os

import pytest

# Set before anything imports rclpy; child processes inherit it.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_LOCALHOST_ONLY', None)  # Kilted ignores it; never rely on it.
_worker = os.environ.get('PYTEST_XDIST_WORKER', 'gw0')
_index = int(''.join(ch for ch in _worker if ch.isdigit()) or 0)
# 0-101 are safe on Linux; keep clear of 0 (the default a developer's robot may be using).
os.environ['ROS_DOMAIN_ID'] = str(40 + _index)

# Small thread pool: tests share two cores with each other.
os.environ.setdefault('OMP_NUM_THREADS', '1')


@pytest.fixture
def domain_id() -> int:
    return int(os.environ['ROS_DOMAIN_ID'])


@pytest.fixture
def ros_context(domain_id):
    """A private rclpy context on this process's domain, shut down after the test."""
    rclpy = pytest.importorskip('rclpy')
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)
