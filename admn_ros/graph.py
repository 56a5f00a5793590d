"""The one description of every runnable node graph.

Both ways of starting a graph are built from :data:`GRAPHS`, so they cannot drift apart:

* ``launch/<graph>.launch.py`` (full ROS 2: ``ros2 launch admn_ros admn.launch.py``) call
  :func:`launch_description`;
* ``admn bringup <graph>`` / ``python -m admn_ros.bringup <graph>`` (pip-only, no ``launch``) start
  the same nodes as subprocesses with :func:`node_command`.

A graph lists its nodes (name, executable, remappings, inline parameters, whether the graph ends
when the node exits, whether it is restarted after a crash; :func:`exit_action` is the one exit
policy) and a parameter file ``config/<graph>.yaml`` in the standard
``node_name: ros__parameters:`` form. Launch-style arguments (``bag:=...``) are shortcuts for one
node parameter each. Values are layered: node defaults < YAML file < inline < user overrides.

Topic wiring: every node uses node-relative names (see :mod:`admn_ros.datasets.ros_messages.topics`), so a namespace
moves the whole graph. Where a noise_injector sits between the sensors and admn_fusion, the sensor
inputs of admn_fusion are remapped to the ``corrupted/...`` topics the injector publishes.

This module imports neither rclpy nor launch at import time.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

from admn_ros.fusion.validate import safe_load, yaml_problem
from admn_ros.datasets.ros_messages.topics import CORRUPTED_TOPICS, SENSOR_TOPICS
from admn_ros.paths import PACKAGE, config_dir


PARAMS_KEY = 'ros__parameters'


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph."""

    name: str                                   # node name, also its section in the YAML file
    executable: str                             # admn_ros.nodes.<executable>, also a console script
    remappings: Tuple[Tuple[str, str], ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)  # inline, over the YAML file
    required: bool = False                      # the whole graph stops when this node exits
    respawn: bool = False                       # restarted after a crash (see exit_action)

    @property
    def module(self) -> str:
        return f'{PACKAGE}.nodes.{self.executable}'


# What happens when a node exits (both forms, bringup and launch, follow it):
#  * a required node: the graph stops, with the node's exit code (a bag that ended: 0);
#  * exit code 0 otherwise: the node is done, the rest runs on (as in ros2 launch);
#  * any other code: the graph stops with that code, so it never runs on half dead (ros2
#    launch's on_exit=Shutdown) - unless the node is marked respawn and did not refuse its
#    configuration (exit code 2, which a restart cannot mend): then it is restarted after
#    RESPAWN_DELAY_S, at most RESPAWN_LIMIT times.
CONFIG_REFUSED = 2          # run_node's exit code for a refused parameter, file or model
RESPAWN_LIMIT = 3
RESPAWN_DELAY_S = 1.0
IGNORE, RESTART, STOP = 'ignore', 'restart', 'stop'


def exit_action(spec: NodeSpec, returncode: int, restarts: int = 0) -> str:
    """IGNORE, RESTART or STOP for node ``spec`` exiting with ``returncode`` after ``restarts``
    restarts (the policy above)."""
    if spec.required:
        return STOP
    if returncode == 0:
        return IGNORE
    if spec.respawn and returncode != CONFIG_REFUSED and restarts < RESPAWN_LIMIT:
        return RESTART
    return STOP


@dataclass(frozen=True)
class Argument:
    """A launch-style argument ``name:=value`` that sets one node parameter."""

    name: str
    node: str
    parameter: str
    description: str


@dataclass(frozen=True)
class GraphSpec:
    """Nodes started together, their parameter file and their launch-style arguments."""

    name: str
    description: str
    nodes: Tuple[NodeSpec, ...]
    arguments: Tuple[Argument, ...] = ()
    config: Optional[str] = None                # parameter file name in config/, if any

    @property
    def params_file(self) -> Optional[Path]:
        return config_dir() / self.config if self.config else None

    @property
    def node_names(self) -> Tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def node(self, name: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.name == name:
                return spec
        raise ValueError(f'graph {self.name!r} has no node {name!r}; nodes: {self.node_names}')

    def argument(self, name: str) -> Optional[Argument]:
        return next((a for a in self.arguments if a.name == name), None)

    def file_parameters(self) -> Dict[str, Dict[str, Any]]:
        """``{node: {dotted.param: value}}`` from this graph's YAML file (empty without one)."""
        path = self.params_file
        if path is None:
            return {}
        if not path.is_file():
            raise FileNotFoundError(f'parameter file of graph {self.name!r} not found: {path}')
        return load_params_file(path)

    def parameters(self, overrides: Optional[Mapping] = None) -> Dict[str, Dict[str, Any]]:
        """Every node's parameters: YAML file, then inline values, then ``overrides``
        (see :func:`resolve_overrides` for their forms)."""
        from_file = self.file_parameters()
        extra = resolve_overrides(self, overrides or {})
        out = {}
        for spec in self.nodes:
            merged = dict(from_file.get(spec.name, {}))
            merged.update(flatten(dict(spec.parameters)))
            for name, value in extra.get(spec.name, {}).items():
                merged[name] = _like(merged.get(name), value)
            if spec.remappings == _FROM_INJECTOR and merged.get('audio_input') == 'audio_common':
                # The injector corrupts the Image audio topic only: stamped audio would arrive
                # clean while ground_truth/corruption reports it corrupted.
                raise ValueError(f'graph {self.name!r}: {spec.name} reads its inputs through the '
                                 'noise injector, which corrupts audio on the Image topic only; '
                                 'use audio_input=image here')
            out[spec.name] = merged
        return out


def _like(known: Any, value: Any) -> Any:
    """``value`` as a float when the known value is one: ``rate_hz=5`` parses as an int, which
    rclpy refuses for a double parameter."""
    if isinstance(known, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(known, list) and known and isinstance(value, list):
        return [_like(known[0], v) for v in value]
    return value


# Nodes whose sensor inputs come from the noise injector rather than the sensors.
_FROM_INJECTOR = tuple((SENSOR_TOPICS[m], CORRUPTED_TOPICS[m]) for m in SENSOR_TOPICS)

GRAPHS: Dict[str, GraphSpec] = {g.name: g for g in (
    GraphSpec(
        name='admn',
        description='live pipeline: sensor_source -> noise_injector -> admn_fusion, '
                    'with budget_manager setting the layer budget',
        # A live robot graph: a crashed driver or the fusion node itself comes back.
        nodes=(
            NodeSpec('sensor_source', 'sensor_source', respawn=True),
            NodeSpec('noise_injector', 'noise_injector', respawn=True),
            NodeSpec('admn_fusion', 'admn_fusion', remappings=_FROM_INJECTOR, respawn=True),
            NodeSpec('budget_manager', 'budget_manager', respawn=True),
        ),
        arguments=(
            Argument('source', 'sensor_source', 'source', 'sensor source (see sensor_source)'),
            Argument('model', 'admn_fusion', 'model_path', 'absolute path of the ADMN checkpoint'),
            Argument('device', 'admn_fusion', 'device', 'torch device for inference'),
            Argument('budget_schedule', 'budget_manager', 'schedule_file',
                     'budget schedule YAML ([t, budget] pairs); empty = follow the load'),
        ),
        config='ros/admn.yaml',
    ),
    GraphSpec(
        name='replay_eval',
        description='replay a recorded bag (with /clock) into admn_fusion and score it with '
                    'evaluator; ends when the bag does',
        nodes=(
            NodeSpec('bag_player', 'bag_player', required=True),
            NodeSpec('admn_fusion', 'admn_fusion'),
            NodeSpec('evaluator', 'evaluator'),
        ),
        arguments=(
            Argument('bag', 'bag_player', 'bag_path', 'rosbag2 directory to replay'),
            Argument('rate', 'bag_player', 'rate', 'playback speed factor'),
            Argument('model', 'admn_fusion', 'model_path', 'absolute path of the ADMN checkpoint'),
            Argument('device', 'admn_fusion', 'device', 'torch device for inference'),
            Argument('report', 'evaluator', 'report_path', 'evaluation report (JSON, + .md)'),
        ),
        config='ros/replay_eval.yaml',
    ),
    GraphSpec(
        name='noise_experiment',
        description='one pass over a dataset with corruption levels from a schedule: '
                    'sensor_source -> noise_injector -> admn_fusion -> evaluator '
                    '(+ budget_manager); ends with the data',
        nodes=(
            NodeSpec('sensor_source', 'sensor_source', required=True),
            NodeSpec('noise_injector', 'noise_injector'),
            NodeSpec('admn_fusion', 'admn_fusion', remappings=_FROM_INJECTOR),
            NodeSpec('budget_manager', 'budget_manager'),
            NodeSpec('evaluator', 'evaluator'),
        ),
        arguments=(
            Argument('source', 'sensor_source', 'source', 'sensor source (see sensor_source)'),
            Argument('schedule', 'noise_injector', 'schedule_file', 'corruption schedule YAML'),
            Argument('model', 'admn_fusion', 'model_path', 'absolute path of the ADMN checkpoint'),
            Argument('device', 'admn_fusion', 'device', 'torch device for inference'),
            Argument('budget_schedule', 'budget_manager', 'schedule_file',
                     'budget schedule YAML ([t, budget] pairs); empty = follow the load'),
            Argument('report', 'evaluator', 'report_path', 'evaluation report (JSON, + .md)'),
        ),
        config='ros/noise_experiment.yaml',
    ),
)}


def get_graph(name: str) -> GraphSpec:
    if name not in GRAPHS:
        raise ValueError(f'unknown graph {name!r}; known: {sorted(GRAPHS)}')
    return GRAPHS[name]


# --------------------------------------------------------------------------- config files
def flatten(params: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
    """Nested YAML maps -> dotted parameter names, as rclpy reads them (``rgb: {type: x}`` ->
    ``rgb.type``)."""
    out = {}
    for key, value in params.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            out.update(flatten(value, name + '.'))
        else:
            out[name] = value
    return out


def nest(params: Mapping[str, Any]) -> Dict[str, Any]:
    """Dotted parameter names -> nested maps (the inverse of :func:`flatten`)."""
    out: Dict[str, Any] = {}
    for name, value in params.items():
        parts = name.split('.')
        level = out
        for part in parts[:-1]:
            level = level.setdefault(part, {})
            if not isinstance(level, dict):
                raise ValueError(f'parameter {name!r} clashes with a parameter named {part!r}')
        level[parts[-1]] = value
    return out


def load_params_file(path) -> Dict[str, Dict[str, Any]]:
    """A ROS 2 parameter file -> ``{node_name: {dotted.param: value}}``; ValueError if malformed."""
    with open(path, encoding='utf-8') as f:
        try:
            data = safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f'{path}: {yaml_problem(exc)}') from None
    if not isinstance(data, dict):
        raise ValueError(f'{path}: top level must map node names to sections')
    out = {}
    for node, section in data.items():
        if (not isinstance(section, dict) or set(section) != {PARAMS_KEY}
                or not isinstance(section[PARAMS_KEY], dict)):
            raise ValueError(f'{path}: section {node!r} must hold exactly one '
                             f'{PARAMS_KEY!r} mapping')
        out[str(node).split('/')[-1]] = flatten(section[PARAMS_KEY])
    return out


def write_params_file(params: Mapping[str, Mapping[str, Any]], path, namespace: str = '') -> Path:
    """Write ``{node: {param: value}}`` keyed by fully-qualified node name (so it also applies
    under a namespace). Empty lists are left out: rcl's YAML parser cannot type them, and every
    list parameter here defaults to its empty / full form anyway."""
    ns = normalise_namespace(namespace)
    doc = {}
    for node, values in params.items():
        kept = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()
                if not (isinstance(v, (list, tuple)) and len(v) == 0)}
        if kept:
            doc[f'{ns.rstrip("/")}/{node}'] = {PARAMS_KEY: nest(kept)}
    path = Path(path)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding='utf-8')
    return path


# --------------------------------------------------------------------------- overrides
def parse_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """Command-line overrides -> a mapping for :func:`resolve_overrides`.

    ``node.param=value`` (``noise_injector.rgb.severity=0.5``) or ``argument:=value`` /
    ``argument=value`` (``bag:=/data/run1``); values are parsed as YAML (``5`` int, ``true`` bool,
    ``[a, b]`` list), so quote strings that look like numbers.
    """
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition(':=') if ':=' in item else item.partition('=')
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like 'node.param=value' "
                             "or 'argument:=value'")
        value = yaml.safe_load(raw) if raw.strip() else ''
        node, dot, name = key.partition('.')
        if dot:
            out.setdefault(node, {})
            if not isinstance(out[node], dict):
                raise ValueError(f'{node!r} is given both as an argument and as a node')
            out[node][name] = value
        else:
            out[key] = value
    return out


def resolve_overrides(graph: GraphSpec, overrides: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{node: {param: value}}`` from overrides given as ``{node: {param: value}}``,
    ``{'node.param': value}`` or ``{argument: value}``; unknown names raise ValueError."""
    out: Dict[str, Dict[str, Any]] = {}
    for key, value in overrides.items():
        arg = graph.argument(key)
        if arg is not None and not isinstance(value, Mapping):
            out.setdefault(arg.node, {})[arg.parameter] = value
        elif key in graph.node_names and isinstance(value, Mapping):
            out.setdefault(key, {}).update(flatten(value))
        elif '.' in key and key.split('.', 1)[0] in graph.node_names:
            node, name = key.split('.', 1)
            out.setdefault(node, {})[name] = value
        else:
            raise ValueError(f'override {key!r} matches no node or argument of graph '
                             f'{graph.name!r}; nodes: {graph.node_names}, '
                             f'arguments: {[a.name for a in graph.arguments]}')
    return out


# --------------------------------------------------------------------------- subprocess form
def normalise_namespace(namespace: str) -> str:
    ns = (namespace or '').strip()
    if not ns or ns == '/':
        return '/'
    return '/' + ns.strip('/')


def node_command(spec: NodeSpec, params_file=None, namespace: str = '',
                 python: Optional[str] = None) -> List[str]:
    """``python -m admn_ros.nodes.<exe> --ros-args -r __node:=<name> [-r __ns:=<ns>]
    --params-file <file> -r from:=to ...`` for one node."""
    cmd = [python or sys.executable, '-m', spec.module, '--ros-args', '-r', f'__node:={spec.name}']
    ns = normalise_namespace(namespace)
    if ns != '/':
        cmd += ['-r', f'__ns:={ns}']
    if params_file is not None:
        cmd += ['--params-file', os.fspath(params_file)]
    for old, new in spec.remappings:
        cmd += ['-r', f'{old}:={new}']
    return cmd


# --------------------------------------------------------------------------- launch form
def launch_description(name: str):
    """A ``launch.LaunchDescription`` for graph ``name`` (full ROS 2 installs only).

    Declares ``namespace`` plus the graph's arguments; each node gets its merged parameters
    (YAML file + inline) as a dict, with argument-backed ones replaced by ``LaunchConfiguration``s.
    """
    try:
        from launch import LaunchDescription
        from launch.actions import DeclareLaunchArgument, RegisterEventHandler, Shutdown
        from launch.event_handlers import OnProcessExit
        from launch.substitutions import LaunchConfiguration
        from launch_ros.actions import Node
        from launch_ros.parameter_descriptions import ParameterValue
    except ImportError as exc:
        raise ImportError(f'launch/launch_ros are not installed ({exc}); on pip-only installs run '
                          f'`admn bringup {name}` instead') from exc

    graph = get_graph(name)
    params = graph.parameters()
    entities = [DeclareLaunchArgument('namespace', default_value='',
                                      description='namespace of every node')]
    for arg in graph.arguments:
        default = params[arg.node].get(arg.parameter, '')
        entities.append(DeclareLaunchArgument(arg.name, default_value=str(default),
                                              description=arg.description))
    for spec in graph.nodes:
        node_params: Dict[str, Any] = dict(params[spec.name])
        for arg in graph.arguments:
            if arg.node == spec.name:
                current = node_params.get(arg.parameter, '')
                # Typed, so a numeric-looking string stays a string and '2' becomes 2.0 for floats.
                node_params[arg.parameter] = ParameterValue(LaunchConfiguration(arg.name),
                                                            value_type=type(current))
        extra: Dict[str, Any] = {'on_exit': Shutdown()} if spec.required else {}
        if spec.respawn:
            extra.update(respawn=True, respawn_delay=RESPAWN_DELAY_S,
                         respawn_max_retries=RESPAWN_LIMIT)
        node = Node(package=PACKAGE, executable=spec.executable, name=spec.name,
                    namespace=LaunchConfiguration('namespace'), parameters=[node_params],
                    remappings=list(spec.remappings), output='screen', **extra)
        entities.append(node)
        if not spec.required:
            # exit_action decides; launch itself counts the respawns.
            entities.append(RegisterEventHandler(OnProcessExit(
                target_action=node, on_exit=_launch_exit_handler(spec, Shutdown))))
    return LaunchDescription(entities)


def _launch_exit_handler(spec: NodeSpec, shutdown):
    def on_exit(event, context):
        if exit_action(spec, event.returncode) == STOP:
            return [shutdown(reason=f'{spec.name} exited with code {event.returncode}')]
        return None
    return on_exit


def describe(names: Sequence[str] = ()) -> str:
    """Human-readable summary of graphs (for ``admn bringup --list``)."""
    lines = []
    for graph in (get_graph(n) for n in (names or sorted(GRAPHS))):
        lines.append(f'{graph.name}: {graph.description}')
        for spec in graph.nodes:
            remap = ', '.join(f'{a}->{b}' for a, b in spec.remappings)
            required = (' [required]' if spec.required else '') + (' [respawn]' if spec.respawn else '')
            lines.append(f'  {spec.name} ({spec.executable}){required}'
                         + (f' remap {remap}' if remap else ''))
        for arg in graph.arguments:
            lines.append(f'  {arg.name}:=  -> {arg.node}.{arg.parameter}: {arg.description}')
    return '\n'.join(lines)
