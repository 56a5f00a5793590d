"""Every bad input of the issue's list is refused before any work starts, in one line naming the key,
the value and what is allowed, with exit code 2 from the ``admn`` command."""
import numpy as np
import pytest
import yaml

from admn_ros.cli import main as admn
from admn_ros.fusion.validate import ConfigError, build

TINY_STAGE1 = {
    'model': {'encoders': {m: {'in_chans': c, 'input_size': [32, 32], 'patch_size': 16, 'dim': 16,
                               'depth': 2, 'heads': 2} for m, c in (('rgb', 3), ('depth', 1), ('audio', 1))},
              'adapter_hidden': 16, 'fusion_dim': 16, 'fusion_depth': 1, 'fusion_heads': 2},
    'data': {'dataset': 'tensors', 'train_size': 32, 'val_size': 16},
    'preprocess': {'image_size': 32},
    'augment': {'policy': 'none'},
    'epochs': 1, 'batch_size': 16, 'device': 'cpu',
}


def run_admn(argv, capsys):
    code = admn(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def one_line_exit_2(code, err, *needles):
    assert code == 2, err
    assert err.count('\n') == 0 and err.startswith('admn: error: '), err
    assert 'Traceback' not in err
    for needle in needles:
        assert needle in err, (needle, err)


STAGE1_CASES = [
    # (YAML text, words the one line must hold)
    ('epochs: ten\n', ['epochs', "'ten'", 'an integer']),
    ('epochs: -3\n', ['epochs', '-3', '>= 1']),
    ('batch_size: 0\n', ['batch_size', '0', '>= 1']),
    ('model: {encoders: {rgb: {patch_size: 0}}}\n', ['model.encoders.rgb.patch_size', '0', '>= 1']),
    ('layerdrop: {max_rate: 5.0}\n', ['layerdrop.max_rate', '5.0', '[0, 1)']),
    ('device: bogus\n', ['device', "'bogus'", 'cuda:N']),
    ('bogus_key: 1\n', ['unknown key bogus_key', 'allowed keys', 'epochs']),
    ('', ['empty']),
    ('epochs: !!python/object/apply:os.system ["echo owned"]\n', ['!!python', 'line 1']),
    ('epochs: [1\n', ['not valid YAML', 'line 2']),
]

CONTROLLER_CASES = [
    ('controller: {bogus: 1}\n', ['unknown key controller.bogus', 'relaxation']),
    ('controller: {relaxation: bogus}\n', ['controller.relaxation', "'bogus'", 'gumbel_st, subset_st']),
    ('budget_range: [0, 5]\n', ['budget_range', '5.0', '(0, 1]']),
    ('budget_units: [layers, joules]\n', ['budget_units', "'joules'", 'layers, flops']),
    ('variant: clever\n', ['variant', 'supervised, label_free']),
]


@pytest.mark.parametrize('text, needles', STAGE1_CASES)
def test_bad_stage1_configs_are_one_line_and_exit_2(tmp_path, capsys, text, needles):
    cfg = tmp_path / 'bad.yaml'
    cfg.write_text(text)
    code, err = run_admn(['train', 'stage1', '--config', str(cfg), '--out', str(tmp_path / 'run'),
                          '--no-progress'], capsys)
    one_line_exit_2(code, err, str(cfg), *needles)
    assert not (tmp_path / 'run').exists()   # refused before any work started
    assert 'owned' not in capsys.readouterr().out


@pytest.mark.parametrize('text, needles', CONTROLLER_CASES)
def test_bad_controller_configs_are_one_line_and_exit_2(tmp_path, capsys, text, needles):
    cfg = tmp_path / 'bad.yaml'
    cfg.write_text(text)
    code, err = run_admn(['train', 'controller', '--stage1', str(tmp_path / 'none.pt'),
                          '--config', str(cfg), '--out', str(tmp_path / 'run'), '--no-progress'], capsys)
    one_line_exit_2(code, err, *needles)
    assert not (tmp_path / 'run').exists()


def test_a_command_line_override_is_checked_too(tmp_path, capsys):
    cfg = tmp_path / 'ok.yaml'
    cfg.write_text(yaml.safe_dump(TINY_STAGE1))
    code, err = run_admn(['train', 'stage1', '--config', str(cfg), '--out', str(tmp_path / 'run'),
                          '--epochs', '-3', '--no-progress'], capsys)
    one_line_exit_2(code, err, 'epochs = -3', '>= 1')


def test_the_shipped_configs_pass_validation():
    from admn_ros.fusion.stage1 import Stage1Config
    from admn_ros.paths import config_dir
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig
    files = sorted((config_dir() / 'training').glob('*.yaml'))
    assert files
    for f in files:
        cls = Stage1Config if f.name.startswith('stage1') else ControllerTrainConfig
        cls.from_yaml(str(f))


def test_types_limits_and_nesting_are_checked_field_by_field():
    from admn_ros.fusion.stage1 import Stage1Config
    cfg = build(Stage1Config, {'lr': '1e-3', 'augment': {'severity_levels': [0.5, 1]},
                               'model': {'encoders': {'rgb': {'input_size': [64, 64]}}}})
    assert cfg.lr == 1e-3                           # YAML 1.1 reads 1e-3 as a string
    assert cfg.augment.severity_levels == (0.5, 1.0)
    assert list(cfg.model.encoders) == ['rgb'] and cfg.model.encoders['rgb'].input_size == (64, 64)
    for bad, key in (({'distill': 1.5}, 'distill'), ({'lr': 0}, 'lr'), ({'epochs': True}, 'epochs'),
                     ({'model': {'encoders': {'rgb': {'patch_size': 7}}}}, 'model.encoders.rgb.patch_size'),
                     ({'model': {'encoders': {'rgb': {'depth': 4}, 'audio': {'depth': 6}}}}, 'model.encoders'),
                     ({'preprocess': {'n_mels': 0}}, 'preprocess.n_mels'),
                     ({'data': ['synthetic']}, 'data')):
        with pytest.raises(ConfigError) as err:
            build(Stage1Config, bad)
        assert err.value.key == key, err.value


def test_empty_budget_list_is_refused(capsys):
    code, err = run_admn(['eval', '--budgets', ',', '--checkpoint', '/nonexistent.pt'], capsys)
    one_line_exit_2(code, err, '--budgets', "','", 'non-empty')
    code, err = run_admn(['eval', '--budgets', '0.5,2', '--checkpoint', '/nonexistent.pt'], capsys)
    one_line_exit_2(code, err, "'2'", '(0, 1]')


def test_last_pt_without_optimizer_state_is_one_line(tmp_path, capsys):
    from admn_ros.fusion.checkpoint import save_checkpoint
    from admn_ros.fusion.config import ModelConfig
    from admn_ros.fusion.model import ADMNModel
    cfg = tmp_path / 'tiny.yaml'
    cfg.write_text(yaml.safe_dump(TINY_STAGE1))
    out = tmp_path / 'run'
    save_checkpoint(out / 'last.pt', ADMNModel(ModelConfig.from_dict(TINY_STAGE1['model'])))
    code, err = run_admn(['train', 'stage1', '--config', str(cfg), '--out', str(out), '--resume',
                          '--no-progress'], capsys)
    one_line_exit_2(code, err, 'last.pt', 'optimizer', 'cannot resume')


def test_shape_mismatch_is_one_line_from_the_command(tmp_path, capsys):
    from admn_ros.fusion.checkpoint import read_checkpoint, write_payload
    from tests.fixtures_models import make_random_checkpoint
    path = make_random_checkpoint(tmp_path / 'm.pt')
    payload = read_checkpoint(path)
    payload['model_config']['fusion_dim'] *= 2
    write_payload(payload, path)
    code, err = run_admn(['eval', '--checkpoint', str(path), '--budgets', '0.5', '--size', '4',
                          '--policies', 'full'], capsys)
    one_line_exit_2(code, err, 'of another shape')


def test_a_truncated_wav_body_is_refused(tmp_path):
    import soundfile as sf
    from admn_ros.datasets.folder import read_audio
    path = tmp_path / 'a.wav'
    sf.write(path, np.zeros(16000, np.float32), 16000, subtype='PCM_16')
    assert len(read_audio(path)) == 16000
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='truncated: the header declares 32000 bytes') as err:
        read_audio(path)
    assert '\n' not in str(err.value)


def test_budget_manager_refuses_max_below_min(ros_context):
    from rclpy.parameter import Parameter
    from admn_ros.nodes.budget_manager import BudgetManager, budget_range_problem
    assert budget_range_problem(0.5, 0.4) and not budget_range_problem(0.4, 0.4)
    with pytest.raises(ValueError, match=r'max_budget = 0.3: allowed: >= min_budget \(0.5\)'):
        BudgetManager(context=ros_context, parameter_overrides=[
            Parameter('min_budget', value=0.5), Parameter('max_budget', value=0.3)])
    node = BudgetManager(context=ros_context)
    try:
        result = node.set_parameters([Parameter('max_budget', value=0.1)])[0]
        assert not result.successful and 'min_budget' in result.reason
        assert node.get_parameter('max_budget').value == 1.0
    finally:
        node.destroy_node()


def test_fusion_node_refuses_a_bogus_device_when_set(ros_context):
    from rclpy.parameter import Parameter
    from admn_ros.nodes.admn_fusion import AdmnFusion
    node = AdmnFusion(context=ros_context, parameter_overrides=[Parameter('autostart', value=False)])
    try:
        result = node.set_parameters([Parameter('device', value='bogus')])[0]
        assert not result.successful and 'cuda:N' in result.reason
        assert node.set_parameters([Parameter('device', value='cuda:1')])[0].successful
    finally:
        node.destroy_node()


def test_schedule_yaml_with_a_python_tag_is_one_line(tmp_path):
    from admn_ros.datasets.schedules import load_schedule
    path = tmp_path / 's.yaml'
    path.write_text('- !!python/object/apply:os.system ["echo owned"]\n')
    with pytest.raises(ValueError, match='no !!python tags') as err:
        load_schedule(path)
    assert '\n' not in str(err.value)


def test_an_override_matching_no_node_or_argument_is_one_line(capsys):
    code = admn(['bringup', 'admn', 'bogus=1'])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count('\n') == 0 and "override 'bogus'" in err and 'arguments' in err


def _alias_bomb(levels=9):
    text = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for k in range(1, levels):
        text += f'l{k}: &l{k} [' + ', '.join([f'*l{k - 1}'] * 9) + ']\n'
    return text


@pytest.mark.parametrize('text, needles', [
    (_alias_bomb().replace('l0:', 'x0:').replace('\nl', '\nx') + f'epochs: *l8\n', []),
    ('batch_size: 0\nepochs: 1\nbatch_size: 8\n', ["duplicate key 'batch_size'", 'line 3',
                                                     'first on line 1']),
    ('model: {fusion_dim: 16, fusion_dim: 32}\n', ["duplicate key 'fusion_dim'"]),
])
def test_alias_bombs_and_duplicate_keys_are_one_line_and_fast(tmp_path, capsys, text, needles):
    import time
    if not needles:   # the bomb, as the config's only keys besides epochs
        text = _alias_bomb() + 'epochs: *l8\n'
        needles = ['aliases expand to more than']
    cfg = tmp_path / 'bad.yaml'
    cfg.write_text(text)
    t0 = time.monotonic()
    code, err = run_admn(['train', 'stage1', '--config', str(cfg), '--out', str(tmp_path / 'run'),
                          '--no-progress'], capsys)
    one_line_exit_2(code, err, str(cfg), *needles)
    assert time.monotonic() - t0 < 10


def test_every_config_reader_refuses_bombs_and_duplicates(tmp_path):
    from admn_ros.datasets.conditions import load_conditions
    from admn_ros.graph import load_params_file
    from admn_ros.scenario import load_scenario
    bomb = tmp_path / 'bomb.yaml'
    bomb.write_text(_alias_bomb() + 'x: *l8\n')
    dup = tmp_path / 'dup.yaml'
    dup.write_text('admn_fusion:\n  ros__parameters: {budget: 0.5}\nadmn_fusion: {}\n')
    for reader in (load_params_file, load_scenario, load_conditions):
        for path, needle in ((bomb, 'aliases expand'), (dup, 'duplicate key')):
            with pytest.raises(ValueError, match=needle) as err:
                reader(path)
            assert '\n' not in str(err.value)


def test_a_refused_value_is_shown_short_whatever_its_size():
    import time
    from admn_ros.datasets.validate import _show
    value = ['lol'] * 9
    for _ in range(8):   # 9^9 leaves if walked
        value = [value] * 9
    t0 = time.monotonic()
    text = _show(value)
    assert len(text) <= 80 and time.monotonic() - t0 < 1.0
    assert '...' in _show('x' * 10**6) and len(_show('x' * 10**6)) <= 80
