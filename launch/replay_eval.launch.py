"""ros2 launch admn_ros replay_eval.launch.py [namespace:=NS] [argument:=value ...]

Starts the 'replay_eval' graph, a bag replay with /clock into admn_fusion and evaluator;
it ends with the bag.
Nodes, parameters and remappings come from admn_ros/graph.py (the single description also used by
`admn bringup replay_eval`); `python -m admn_ros.bringup --list` shows the arguments.
"""
from admn_ros.graph import launch_description

GRAPH = 'replay_eval'


def generate_launch_description():
    # Imports launch/launch_ros only here: they exist on full ROS 2 installs, not pip-only ones.
    return launch_description(GRAPH)
