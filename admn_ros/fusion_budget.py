"""Who sets admn_fusion's ``budget``: the budget topic (budget_manager) or a person.

The ``budget`` parameter is what every frame runs under. While ``budget_from_topic`` is true the
``budget`` topic sets it. A manual set - anything through the parameter services, such as
``ros2 param set /admn_fusion budget 0.3`` - wins: a pre-set hook adds ``budget_from_topic:
false`` to the same atomic change, and topic messages are then counted as held, not applied.
Setting ``budget_from_topic`` true hands the budget back and applies the latest topic value in
that same change. Sets made for a controller go through :meth:`BudgetOwnership.set_automatically`,
which leaves the owner as it is.
"""
from __future__ import annotations

import threading
from typing import List, Optional

from rclpy.parameter import Parameter
from std_msgs.msg import Float32

from admn_ros import wire
from admn_ros.node_utils import add_pre_set, param
from admn_ros.quality_estimators.budget import budget_problem


class BudgetOwnership:
    """The budget topic subscription and the ownership rule of one node (module docstring)."""

    def __init__(self, node):
        self.node = node
        self.rejected = 0                    # topic messages refused (outside BUDGET_RANGE)
        self.held = 0                        # topic messages not applied (budget set by hand)
        self.topic_value: Optional[float] = None
        self._automatic = threading.local()  # .active: the set in progress is not a manual one
        node.create_subscription(Float32, wire.BUDGET, self._on_message, wire.budget_qos(),
                                 event_callbacks=wire.subscription_events(node, wire.BUDGET,
                                                                            wire.BUDGET_ADVICE))
        add_pre_set(node, self._pre_set)

    @property
    def from_topic(self) -> bool:
        return bool(param(self.node, 'budget_from_topic'))

    def set_automatically(self, value: float):
        """Set ``budget`` for a controller (the topic, an in-node rule), keeping the owner.
        Returns the SetParametersResult."""
        self._automatic.active = True
        try:
            return self.node.set_parameters([Parameter('budget', Parameter.Type.DOUBLE, value)])[0]
        finally:
            self._automatic.active = False

    def _pre_set(self, params: List[Parameter]) -> List[Parameter]:
        names = {p.name for p in params}
        if 'budget' in names and 'budget_from_topic' not in names:
            if not getattr(self._automatic, 'active', False) and self.from_topic:
                return params + [Parameter('budget_from_topic', Parameter.Type.BOOL, False)]
        elif 'budget_from_topic' in names and 'budget' not in names:
            handed_back = any(p.value for p in params if p.name == 'budget_from_topic')
            if (handed_back and self.topic_value is not None
                    and self.topic_value != param(self.node, 'budget')):
                return params + [Parameter('budget', Parameter.Type.DOUBLE, self.topic_value)]
        return params

    def changed(self) -> None:
        """Log a change of owner (the node's post-set callback calls this)."""
        log = self.node.get_logger()
        if self.from_topic:
            log.info(f'budget follows the {wire.BUDGET} topic again')
        else:
            log.warning(f'budget {param(self.node, "budget"):g} set by hand: the {wire.BUDGET} '
                        'topic (budget_manager) is ignored until budget_from_topic is set true')

    def _on_message(self, msg) -> None:
        log = self.node.get_logger()
        value = wire.read_budget(msg)
        problem = budget_problem(value)
        if problem:
            self.rejected += 1
            log.warning(f'ignoring budget from topic {wire.BUDGET}: {problem}')
            return
        self.topic_value = value
        if not self.from_topic:
            self.held += 1
            log.warning(f'budget {value:g} from topic {wire.BUDGET} not applied: budget was set by '
                        'hand (budget_from_topic false)', throttle_duration_sec=10.0)
            return
        if value == param(self.node, 'budget'):
            return
        result = self.set_automatically(value)
        if not result.successful:
            self.rejected += 1
            log.warning(f'budget {value} from topic refused: {result.reason}')
