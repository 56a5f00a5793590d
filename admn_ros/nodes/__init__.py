"""rclpy nodes. Each module defines a node class usable in-process (it takes Node's keyword
arguments: ``context``, ``parameter_overrides``, ``cli_args``, ``namespace``) and a
``main(args=None)``, so it runs as ``python -m admn_ros.nodes.<module>`` or as the console script
of the same name.

Topic names are node-relative (no leading slash), so ``__ns:=/robot1`` moves a whole graph;
only ``/diagnostics`` and ``/clock`` are absolute, as in ROS itself.
"""
from admn_ros.node_utils import quiet_start

quiet_start()
