"""Checkpoints rebuild the model from the file alone and refuse anything else with a clear error."""
import pytest
import torch

from admn_ros.fusion.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from admn_ros.fusion.model import ADMNModel
from tests.test_model import inputs, small_config


class Payload:
    """An arbitrary Python object: loading it would need full unpickling (code execution)."""


def test_round_trip_rebuilds_an_identical_model(tmp_path):
    torch.manual_seed(0)
    model = ADMNModel(small_config()).eval()
    path = save_checkpoint(tmp_path / 'm.pt', model, class_names=['a', 'b'], stage='stage1')
    loaded, extra = load_checkpoint(path)
    assert extra == {'class_names': ['a', 'b'], 'stage': 'stage1'}
    assert loaded.cfg == model.cfg
    x = inputs(2)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.eval()(x), model(x))


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / 'evil.pt'
    torch.save({'format': 'admn_ros.checkpoint', 'obj': Payload()}, path)
    with pytest.raises(CheckpointError, match='refused to unpickle'):
        read_checkpoint(path)


def test_foreign_and_corrupt_files_are_refused(tmp_path):
    torch.save({'state_dict': {}}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match='not an admn_ros checkpoint'):
        load_checkpoint(tmp_path / 'other.pt')
    (tmp_path / 'junk.pt').write_bytes(b'\x00not a zip' * 10)
    with pytest.raises(CheckpointError, match='not a readable'):
        load_checkpoint(tmp_path / 'junk.pt')
    with pytest.raises(CheckpointError, match='no such'):
        load_checkpoint(tmp_path / 'missing.pt')


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    model = ADMNModel(small_config())
    path = save_checkpoint(tmp_path / 'm.pt', model)
    payload = torch.load(path, weights_only=True)
    payload['model_config']['fusion_depth'] = 3  # config now asks for more fusion blocks than stored
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match='do not match'):
        load_checkpoint(path)
