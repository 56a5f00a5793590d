"""ros2 launch admn_ros noise_experiment.launch.py [namespace:=NS] [argument:=value ...]

Starts the 'noise_experiment' graph, one pass over a dataset with scheduled corruptions,
fused by admn_fusion and scored by evaluator.
Nodes, parameters and remappings come from admn_ros/graph.py (the single description also used by
`admn bringup noise_experiment`); `python -m admn_ros.bringup --list` shows the arguments.
"""
from admn_ros.graph import launch_description

GRAPH = 'noise_experiment'


def generate_launch_description():
    # Imports launch/launch_ros only here: they exist on full ROS 2 installs, not pip-only ones.
    return launch_description(GRAPH)
