"""admn_ros.graph is the single graph description: config, launch files and bringup follow it."""
import ast
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from admn_ros import graph as G
from admn_ros.bringup import Bringup

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_DIR = ROOT / 'launch'
OUR_NODES = ('sensor_source', 'noise_injector', 'bag_player')


def _setup_node_list():
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        targets = [getattr(t, 'id', None) for t in getattr(node, 'targets', [])]
        if isinstance(node, ast.Assign) and 'NODES' in targets:
            return ast.literal_eval(node.value)
    raise AssertionError('setup.py has no NODES list')


def test_every_executable_is_a_console_script_and_importable_when_written():
    scripts = set(_setup_node_list())
    for graph in G.GRAPHS.values():
        for spec in graph.nodes:
            assert spec.executable in scripts, (graph.name, spec.executable)
            module = ROOT / 'admn_ros' / 'nodes' / f'{spec.executable}.py'
            if module.exists():  # admn_fusion, budget_manager, evaluator come from elsewhere
                assert re.search(r'^def main\(args=None\)', module.read_text(), re.M), module


def test_config_files_hold_sections_only_for_graph_nodes_and_cover_arguments(tmp_path):
    for graph in G.GRAPHS.values():
        sections = G.load_params_file(graph.params_file)
        assert set(sections) <= set(graph.node_names), (graph.name, sorted(sections))
        params = graph.parameters()
        for arg in graph.arguments:
            # A launch argument's default comes from the file, so the parameter must be there.
            assert arg.parameter in params[arg.node], (graph.name, arg)
    bad = tmp_path / 'bad.yaml'
    bad.write_text('sensor_source:\n  rate_hz: 3.0\n')  # no ros__parameters level
    with pytest.raises(ValueError, match='ros__parameters'):
        G.load_params_file(bad)


def test_flatten_and_nest_are_inverse():
    nested = {'rgb': {'type': 'holes', 'severity': 0.5}, 'rate_hz': 3.0}
    flat = G.flatten(nested)
    assert flat == {'rgb.type': 'holes', 'rgb.severity': 0.5, 'rate_hz': 3.0}
    assert G.nest(flat) == nested
    with pytest.raises(ValueError, match='clashes'):
        G.nest({'rgb': 1, 'rgb.type': 'x'})


def test_overrides_resolve_to_node_parameters_with_float_coercion():
    graph = G.get_graph('noise_experiment')
    overrides = G.parse_overrides(['noise_injector.rgb.severity=1', 'schedule:=/tmp/s.yaml',
                                   'sensor_source.rate_hz=2', 'sensor_source.source=wav:/x.wav',
                                   'sensor_source.modalities=[rgb, audio]'])
    params = graph.parameters(overrides)
    assert params['noise_injector']['rgb.severity'] == 1.0
    assert isinstance(params['noise_injector']['rgb.severity'], float)  # file holds a float
    assert params['noise_injector']['schedule_file'] == '/tmp/s.yaml'
    rate = params['sensor_source']['rate_hz']
    assert rate == 2.0 and isinstance(rate, float)
    assert params['sensor_source']['modalities'] == ['rgb', 'audio']
    assert params['sensor_source']['source'] == 'wav:/x.wav'
    # Nested form and file values not overridden survive.
    params = graph.parameters({'noise_injector': {'depth': {'type': 'blocked'}}})
    assert params['noise_injector']['depth.type'] == 'blocked'
    assert params['noise_injector']['depth.severity'] == 0.5
    with pytest.raises(ValueError, match='audio_input=image'):   # would bypass the injector
        graph.parameters({'admn_fusion': {'audio_input': 'audio_common'}})
    for bad in ({'nonexistent.x': 1}, {'bogus': 3}):
        with pytest.raises(ValueError, match='matches no node or argument'):
            graph.parameters(bad)
    with pytest.raises(ValueError, match='must look like'):
        G.parse_overrides(['no_equals_sign'])
    with pytest.raises(ValueError, match='unknown graph'):
        G.get_graph('nope')


def test_generated_command_and_params_file_as_rclpy_reads_them(ros_context, tmp_path):
    from rclpy.node import Node

    graph = G.get_graph('admn')
    params = graph.parameters({'noise_injector.rgb.severity': 0.25, 'model': '/m.pt'})
    path = G.write_params_file(params, tmp_path / 'p.yaml', namespace='robot1')
    for name, expect in (('admn_fusion', {'model_path': '/m.pt', 'device': 'cpu'}),
                         ('noise_injector', {'rgb.severity': 0.25, 'rgb.type': 'clean'})):
        cmd = G.node_command(graph.node(name), path, namespace='robot1')
        assert cmd[1:3] == ['-m', f'admn_ros.nodes.{name}']
        node = Node('placeholder', context=ros_context, cli_args=cmd[cmd.index('--ros-args'):],
                    automatically_declare_parameters_from_overrides=True)
        try:
            assert node.get_name() == name and node.get_namespace() == '/robot1'
            for key, value in expect.items():
                assert node.get_parameter(key).value == value
            resolved = node.resolve_topic_name('camera/color/image_raw')
            if name == 'admn_fusion':  # fed by the injector
                assert resolved == '/robot1/corrupted/camera/color/image_raw'
            else:
                assert resolved == '/robot1/camera/color/image_raw'
        finally:
            node.destroy_node()


def test_config_files_load_into_the_real_nodes(ros_context, tmp_path):
    """Every key of our nodes' YAML sections is a declared parameter and arrives with its value."""
    import soundfile
    from rclpy.parameter import Parameter

    from admn_ros.nodes.bag_player import BagPlayer
    from admn_ros.nodes.noise_injector import NoiseInjector
    from admn_ros.nodes.sensor_source import SensorSource
    from admn_ros.datasets.bags import write_bag

    wav = tmp_path / 'a.wav'
    soundfile.write(wav, np.zeros(1600, np.float32), 16000)
    bag = write_bag(tmp_path / 'bag', {'rgb': np.zeros((2, 4, 4, 3), np.uint8)}, rate_hz=10.0)
    # Only what must point at test files is overridden; overrides are then skipped in the check.
    replace = {'sensor_source': {'source': f'wav:{wav}'}, 'bag_player': {'bag_path': str(bag)}}
    classes = {'sensor_source': SensorSource, 'noise_injector': NoiseInjector,
               'bag_player': BagPlayer}
    checked = 0
    for graph in G.GRAPHS.values():
        for name, section in G.load_params_file(graph.params_file).items():
            if name not in OUR_NODES:
                continue
            fixed = replace.get(name, {})
            cli = ['--ros-args', '--params-file', str(graph.params_file)]
            node = classes[name](
                context=ros_context, cli_args=cli,
                parameter_overrides=[Parameter(k, value=v) for k, v in fixed.items()])
            try:
                for key, value in section.items():
                    assert node.has_parameter(key), f'{graph.name}: {name} does not declare {key!r}'
                    if key not in fixed:
                        assert node.get_parameter(key).value == value, (graph.name, name, key)
                        checked += 1
            finally:
                node.destroy_node()
    assert checked > 20


def test_launch_files_are_thin_wrappers_around_the_graph():
    files = {p.name.removesuffix('.launch.py'): p for p in LAUNCH_DIR.glob('*.launch.py')}
    assert set(files) == set(G.GRAPHS)
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        imports = [(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   for a in n.names]
        imports += [(a.name, None) for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names]
        assert ('admn_ros.graph', 'launch_description') in imports
        # launch itself is imported only when the description is built (absent on pip installs)
        assert not any(m.split('.')[0] in ('launch', 'launch_ros') for m, _ in imports if m)
        consts = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  for t in n.targets if isinstance(t, ast.Name)}
        assert consts.get('GRAPH') == name
        functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert 'generate_launch_description' in functions


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stub_launch(monkeypatch):
    """Minimal stand-ins for launch / launch_ros that record what they were built with."""
    mods = {name: types.ModuleType(name) for name in (
        'launch', 'launch.actions', 'launch.event_handlers', 'launch.substitutions', 'launch_ros',
        'launch_ros.actions', 'launch_ros.parameter_descriptions')}
    classes = {}
    for mod, names in (('launch', ['LaunchDescription']),
                       ('launch.actions', ['DeclareLaunchArgument', 'RegisterEventHandler', 'Shutdown']),
                       ('launch.event_handlers', ['OnProcessExit']),
                       ('launch.substitutions', ['LaunchConfiguration']),
                       ('launch_ros.actions', ['Node']),
                       ('launch_ros.parameter_descriptions', ['ParameterValue'])):
        for name in names:
            classes[name] = type(name, (_Recorder,), {})
            setattr(mods[mod], name, classes[name])
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return classes


def test_launch_files_build_exactly_the_graph(monkeypatch):
    import runpy
    classes = _stub_launch(monkeypatch)
    for name, graph in G.GRAPHS.items():
        module = runpy.run_path(str(LAUNCH_DIR / f'{name}.launch.py'))
        desc = module['generate_launch_description']()
        entities = desc.args[0]
        declared = [e.args[0] for e in entities if isinstance(e, classes['DeclareLaunchArgument'])]
        assert declared == ['namespace'] + [a.name for a in graph.arguments]
        nodes = [e.kwargs for e in entities if isinstance(e, classes['Node'])]
        assert [n['name'] for n in nodes] == list(graph.node_names)
        params = graph.parameters()
        for spec, kw in zip(graph.nodes, nodes):
            assert kw['executable'] == spec.executable and kw['package'] == 'admn_ros'
            assert kw['remappings'] == list(spec.remappings)
            assert ('on_exit' in kw) == spec.required
            assert kw.get('respawn', False) == spec.respawn
            if spec.respawn:
                assert kw['respawn_max_retries'] == G.RESPAWN_LIMIT
            node_params = kw['parameters'][0]
            assert set(node_params) == set(params[spec.name])
            for key, value in node_params.items():
                if isinstance(value, classes['ParameterValue']):  # bound to a launch argument
                    arg = value.args[0].args[0]
                    assert graph.argument(arg).parameter == key
                    assert value.kwargs['value_type'] is type(params[spec.name][key])
                else:
                    assert value == params[spec.name][key]
        # Every node that does not end the graph on any exit gets the exit policy as a handler.
        handlers = [e.args[0] for e in entities if isinstance(e, classes['RegisterEventHandler'])]
        assert [h.kwargs['target_action'].kwargs['name'] for h in handlers] == \
            [s.name for s in graph.nodes if not s.required]
        for handler in handlers:
            target = graph.node(handler.kwargs['target_action'].kwargs['name'])
            on_exit = handler.kwargs['on_exit']
            failed = on_exit(types.SimpleNamespace(returncode=1), None)
            refused = on_exit(types.SimpleNamespace(returncode=G.CONFIG_REFUSED), None)
            assert on_exit(types.SimpleNamespace(returncode=0), None) is None
            assert isinstance(refused[0], classes['Shutdown'])   # a restart cannot mend a config
            assert (failed is None) == target.respawn


def test_launch_description_without_launch_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, 'launch', None)  # import fails as on a pip-only install
    with pytest.raises(ImportError, match='admn bringup admn'):
        G.launch_description('admn')


def _fake_python(tmp_path, traps):
    """A stand-in interpreter that ignores the given signals (and dies of any other), so stop() must
    escalate; on SIGUSR1 it prints, as run_node dumps its stacks. A Python script rather than sh: a shell defers signals until its foreground child
    returns, which under load outlasted the short timeouts."""
    script = tmp_path / f'python_{"_".join(traps) or "plain"}'
    ignored = ', '.join(f'signal.SIG{name}' for name in traps)
    script.write_text(f'#!{sys.executable} -S\n'
                      'import signal, time\n'
                      'signal.signal(signal.SIGINT, signal.SIG_DFL)\n'
                      f'for sig in ({ignored}{"," if traps else ""}):\n'
                      '    signal.signal(sig, signal.SIG_IGN)\n'
                      "signal.signal(signal.SIGUSR1, lambda *_: print('my stacks', flush=True))\n"
                      "print('ready', flush=True)\n"
                      'while True:\n'
                      '    time.sleep(0.05)\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize('traps, expected', [((), -signal.SIGINT), (('INT',), -signal.SIGTERM),
                                             (('INT', 'TERM'), -signal.SIGKILL)])
def test_stop_escalates_sigint_sigterm_sigkill(tmp_path, traps, expected):
    lines = []
    bringup = Bringup('replay_eval', {'bag': '/nonexistent'}, only=['bag_player'],
                      sink=lines.append, python=_fake_python(tmp_path, traps),
                      sigint_timeout=1.0, sigterm_timeout=1.0)
    bringup.start()
    deadline = time.monotonic() + 5
    while not any('[bag_player] ready' in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.02)
    codes = bringup.stop()
    assert codes == {'bag_player': expected}
    assert bringup.exit_code() == 128 + abs(expected)
    assert ('SIGTERM' in ' '.join(lines)) == (expected != -signal.SIGINT)
    # Before the kill the node is asked for its stacks, so the log shows where it hung.
    assert ('[bag_player] my stacks' in lines) == (expected == -signal.SIGKILL), lines


@pytest.mark.ros
def test_bringup_processes_talk_and_stop_cleanly_on_sigint(ros_context, tmp_path):
    """Two node processes started by `python -m admn_ros.bringup`: the injector corrupts what the
    source publishes, and one SIGINT to bringup stops both with exit code 0."""
    import rclpy
    import soundfile
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from admn_ros import wire

    wav = tmp_path / 'tone.wav'
    soundfile.write(wav, (0.3 * np.sin(np.arange(8000) * 0.2)).astype(np.float32), 16000)
    cmd = [sys.executable, '-m', 'admn_ros.bringup', 'noise_experiment', '--namespace', 'talk',
           '--only', 'sensor_source,noise_injector', f'source:=wav:{wav}',
           'sensor_source.start_delay_s=0', 'sensor_source.loop=true',
           'sensor_source.audio_chunk_s=0.1', 'noise_injector.audio.type=muted',
           'noise_injector.audio.severity=1']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    node = rclpy.create_node('probe', context=ros_context)
    audio, levels = [], []
    node.create_subscription(Image, '/talk/' + wire.CORRUPTED_TOPICS['audio'], audio.append, 10)
    node.create_subscription(DiagnosticArray, '/talk/' + wire.CORRUPTION, levels.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30
        while len(audio) < 3 and time.monotonic() < deadline and proc.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        assert len(audio) >= 3, 'no corrupted audio arrived'
        assert np.all(wire.read_audio(audio[-1]) == 0)       # muted at severity 1 by the injector
        assert wire.read_corruption(levels[-1])['audio'] == ('muted', 1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        executor.shutdown()
        node.destroy_node()
    assert proc.returncode == 0, out
    assert re.search(r"^\[sensor_source\] .*publishing \('audio',\)", out, re.M), out
    assert "exit codes: {'sensor_source': 0, 'noise_injector': 0}" in out
    for pid in map(int, re.findall(r'\(pid (\d+)\)', out)):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_no_node_imports_another_node():
    """What nodes share (topics, QoS, message encoders) lives in modules, not in other nodes."""
    import ast
    from pathlib import Path
    nodes = Path(__file__).resolve().parent.parent / 'admn_ros' / 'nodes'
    for path in nodes.glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith('admn_ros.nodes'), (path.name, node.module)
                if node.module == 'admn_ros':
                    assert 'nodes' not in {a.name for a in node.names}, path.name
