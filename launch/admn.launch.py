"""ros2 launch admn_ros admn.launch.py [namespace:=NS] [argument:=value ...]

Starts the 'admn' graph, the live pipeline: sensor_source -> noise_injector ->
admn_fusion, with budget_manager setting the layer budget.
Nodes, parameters and remappings come from admn_ros/graph.py (the single description also used by
`admn bringup admn`); `python -m admn_ros.bringup --list` shows the arguments.
"""
from admn_ros.graph import launch_description

GRAPH = 'admn'


def generate_launch_description():
    # Imports launch/launch_ros only here: they exist on full ROS 2 installs, not pip-only ones.
    return launch_description(GRAPH)
