"""Parameters set the way users set them: over the parameter services (real DDS), with the integer
a command line gives for ``40`` or ``1`` on a double parameter."""
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.parameter import Parameter  # noqa: E402

from tests.fixtures_models import RosHarness  # noqa: E402

pytestmark = pytest.mark.ros


def _set_remotely(h, node_name, parameters):
    """SetParameters through the node's service, as ``ros2 param set`` calls it."""
    from rclpy.parameter_client import AsyncParameterClient
    client = AsyncParameterClient(h.probe, node_name)
    assert h.spin_until(lambda: client.services_are_ready(), 10), 'parameter services not found'
    future = client.set_parameters(parameters)
    assert h.spin_until(future.done, 10)
    return future.result().results


def test_integers_for_double_parameters_are_converted_and_range_checked(ros_context):
    from admn_ros.nodes.admn_fusion import AdmnFusion
    from admn_ros.nodes.budget_manager import BudgetManager
    h = RosHarness(ros_context)
    try:
        fusion = h.add(AdmnFusion(context=ros_context, parameter_overrides=[
            Parameter('autostart', value=False)]))
        # An integer in a parameter file (or -p deadline_ms:=40) for a read-only double.
        manager = h.add(BudgetManager(context=ros_context, parameter_overrides=[
            Parameter('mode', value='deadline'), Parameter('deadline_ms', value=40)]))
        assert manager.get_parameter('deadline_ms').type_ == Parameter.Type.DOUBLE
        assert manager.get_parameter('deadline_ms').value == 40.0

        ok = _set_remotely(h, 'admn_fusion', [Parameter('deadline_ms', value=40),
                                              Parameter('budget', value=1)])
        assert [r.successful for r in ok] == [True, True], [r.reason for r in ok]
        for name, value in (('deadline_ms', 40.0), ('budget', 1.0)):
            got = fusion.get_parameter(name)
            assert got.type_ == Parameter.Type.DOUBLE and got.value == value, name
        assert fusion.budget.fraction == 1.0   # the node acted on it, not only stored it

        # Converted values still go through the declared range ([0.01, 1] for budget).
        (refused,) = _set_remotely(h, 'admn_fusion', [Parameter('budget', value=2)])
        assert not refused.successful and fusion.get_parameter('budget').value == 1.0
        # Types that are not numbers stay refused.
        (refused,) = _set_remotely(h, 'admn_fusion', [Parameter('budget', value='half')])
        assert not refused.successful and 'type' in refused.reason.lower()
        (ok,) = _set_remotely(h, 'budget_manager', [Parameter('max_budget', value=1)])
        assert ok.successful and manager.get_parameter('max_budget').value == 1.0
    finally:
        h.close()
