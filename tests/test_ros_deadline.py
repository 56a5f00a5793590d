"""budget_manager ``mode: deadline`` over real DDS: frames' latencies in, a budget that meets the
deadline out (the controller itself: tests/test_deadline.py)."""
import os
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from admn_ros import wire  # noqa: E402
from tests.fixtures_models import RosHarness  # noqa: E402

pytestmark = pytest.mark.ros
MODS = ('rgb', 'depth', 'audio')


def frame_messages(stamp, budget, latency_ms):
    header = wire.header(stamp)
    alloc = SimpleNamespace(keep={m: np.arange(12) < 4 for m in MODS}, present=MODS,
                            budget_fraction=budget, budget_unit='layers', budget_spent=budget)
    inf = SimpleNamespace(gflops=0.1, model_ms=5.0, policy_ms=1.0, preprocess_ms=1.0, present=MODS)
    return (wire.allocation_msg(alloc, MODS, header),
            wire.inference_msg(inf, header, latency_ms=latency_ms, processing_ms=latency_ms,
                               dropped=0))


def test_deadline_mode_lowers_the_budget_when_frames_get_slow(ros_context):
    from admn_ros.nodes.budget_manager import BudgetManager
    h = RosHarness(ros_context, f'/deadline_{os.getpid()}')
    try:
        heard = []
        h.probe.create_subscription(Float32, wire.BUDGET, lambda m: heard.append(round(m.data, 6)),
                                    wire.budget_qos())
        manager = h.add(BudgetManager(context=h.ctx, namespace=h.namespace, parameter_overrides=[
            Parameter('mode', value='deadline'), Parameter('deadline_ms', value=40.0),
            Parameter('min_budget', value=0.3), Parameter('deadline_window', value=20)]))
        assert h.spin_until(lambda: heard == [1.0], 5)   # starts at max_budget
        alloc_pub = h.publisher(wire.output_class(wire.ALLOCATION), wire.ALLOCATION, 100)
        inf_pub = h.publisher(wire.output_class(wire.INFERENCE), wire.INFERENCE, 100)
        assert h.spin_until(lambda: alloc_pub.get_subscription_count()
                            and inf_pub.get_subscription_count(), 5)
        # Latency proportional to the budget in force, doubled halfway (a competing process).
        for i in range(60):
            budget = heard[-1]
            alloc, inf = frame_messages((i + 1) * 50_000_000, budget,
                                        (25.0 if i < 20 else 60.0) * (0.2 + 0.8 * budget))
            if i % 2:   # either message may arrive first: they are joined by stamp
                alloc_pub.publish(alloc)
                inf_pub.publish(inf)
            else:
                inf_pub.publish(inf)
                alloc_pub.publish(alloc)
            frames = manager.deadline.frames
            assert h.spin_until(lambda: manager.deadline.frames > frames, 5)
            h.spin_for(0.01)
        assert heard[0] == 1.0 and 0.3 <= heard[-1] <= 0.45   # 60 ms at full: down to fit 40
        assert all(0.3 <= b <= 1.0 for b in heard)
        status = manager._status()
        assert status[2]['deadline_ms'] == 40.0 and status[2]['frames'] == 60
    finally:
        h.close()


def test_fusion_node_runs_the_deadline_rule_in_process_and_reports_its_threads(ros_context,
                                                                                tmp_path):
    """admn_fusion with ``deadline_ms``: a deadline no budget meets drives it to
    ``deadline_min_budget`` (never below), and back up to ``budget`` when the deadline is lifted;
    ``threads`` is in force and on /diagnostics."""
    import time

    import torch
    from sensor_msgs.msg import Image

    from admn_ros.nodes.admn_fusion import AdmnFusion
    from tests.fixtures_models import make_random_checkpoint, sample_frame
    model = make_random_checkpoint(tmp_path / 'model.pt')
    h = RosHarness(ros_context, f'/deadline_node_{os.getpid()}')
    before = torch.get_num_threads()
    try:
        params = {'model_path': str(model), 'policy': 'naive', 'budget': 0.9, 'threads': 1,
                  'deadline_ms': 0.01, 'deadline_min_budget': 0.3}
        node = h.add(AdmnFusion(context=h.ctx, namespace=h.namespace, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()]))
        allocs = h.listen(wire.output_class(wire.ALLOCATION), wire.ALLOCATION)
        pubs = {m: h.publisher(Image, wire.SENSOR_TOPICS[m]) for m in MODS}
        build = {'rgb': wire.rgb_msg, 'depth': wire.depth_msg, 'audio': wire.audio_msg}
        samples = [sample_frame(i) for i in range(3)]

        def feed(n):
            start = len(allocs)
            for i in range(n):
                stamp = h.probe.get_clock().now().nanoseconds
                for m in MODS:
                    pubs[m].publish(build[m](samples[i % 3][m], stamp))
                h.spin_until(lambda: len(allocs) > start + i, 2.0)
                time.sleep(0.01)
            return [wire.read_allocation(a)['fraction'] for a in allocs[start:]]

        fractions = feed(20)
        assert fractions[0] == 0.9                      # the first frame: the `budget` cap
        assert fractions[-1] == 0.3 and min(fractions) >= 0.3
        state = node.deadline.state()
        assert state['frames'] >= 15 and state['budget'] == 0.3
        diag = {s.name.split(': ')[-1]: {kv.key: kv.value for kv in s.values}
                for s in node.diagnostics.build().status}
        assert diag['lifecycle']['threads'].startswith('1 intra-op / 1 inter-op / 1 BLAS (override')
        assert diag['lifecycle']['torch intra-op threads'] == '1' and torch.get_num_threads() == 1
        assert diag['allocation']['deadline budget'] == '0.3'
        # Deadline off: the budget parameter alone again, from the next frame.
        node.set_parameters([Parameter('deadline_ms', value=0.0)])
        assert node.deadline is None and feed(3)[-1] == 0.9
    finally:
        h.close()
        torch.set_num_threads(before)
