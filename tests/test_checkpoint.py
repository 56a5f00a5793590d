"""Checkpoints rebuild the model from the file alone and refuse anything else with a clear error."""
import pytest
import torch

from admn_ros.fusion.checkpoint import (CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint,
                                       write_payload)
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
    payload = read_checkpoint(path)
    payload['model_config']['fusion_depth'] = 3  # config now asks for more fusion blocks than stored
    write_payload(payload, path)
    with pytest.raises(CheckpointError, match='do not match'):
        load_checkpoint(path)


def _flip_bytes_inside(path, needle: bytes, count: int, seed: int = 0) -> None:
    """Flip ``count`` random bytes inside the stored tensor whose raw bytes contain ``needle``,
    keeping the zip archive itself readable (as a bit rot on disk would)."""
    import numpy as np
    data = bytearray(path.read_bytes())
    start = data.find(needle)
    assert start >= 0
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(needle), size=min(count, len(needle)), replace=False):
        data[start + int(i)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_inside_the_weights_are_refused_by_the_digest(tmp_path):
    # Defect: a checkpoint with 2,000 flipped bytes in its weights loaded and ran.
    torch.manual_seed(0)
    model = ADMNModel(small_config())
    path = save_checkpoint(tmp_path / 'm.pt', model)
    weight = max(model.state_dict().values(), key=lambda t: t.numel())
    needle = weight.detach().contiguous().numpy().tobytes()
    _flip_bytes_inside(path, needle, 2000)
    payload = torch.load(path, weights_only=True)   # torch itself does not notice
    assert payload['format'] == 'admn_ros.checkpoint'
    with pytest.raises(CheckpointError, match='digest mismatch') as err:
        load_checkpoint(path)
    assert '\n' not in str(err.value)


def test_a_file_without_digest_is_refused_until_one_is_added(tmp_path):
    from admn_ros.fusion.checkpoint import DIGEST_KEY, main
    model = ADMNModel(small_config())
    path = save_checkpoint(tmp_path / 'm.pt', model)
    payload = torch.load(path, weights_only=True)
    payload.pop(DIGEST_KEY)
    payload['version'] = 1   # as written before digests
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match='--add-digest'):
        load_checkpoint(path)
    assert main(['--add-digest', str(path)]) == 0
    loaded, _ = load_checkpoint(path)
    assert loaded.cfg == model.cfg


def test_a_shape_mismatch_is_one_line(tmp_path):
    big = small_config()
    path = save_checkpoint(tmp_path / 'm.pt', ADMNModel(big))
    payload = read_checkpoint(path)
    for enc in payload['model_config']['encoders'].values():
        enc['dim'] *= 2   # every encoder tensor now disagrees with the stored weights
    write_payload(payload, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert '\n' not in message and 'of another shape' in message and len(message) < 400


class _Code:
    def __reduce__(self):
        import os
        return (os.system, ('echo owned',))


TORCH_TEXT = ('torch.load', 'weights_only', 'file an issue', 'Weights only load failed', 'GLOBAL')


def _pickle_span(path):
    """(start, length) of data.pkl's bytes inside a torch.save zip (stored uncompressed)."""
    import struct
    import zipfile
    data = path.read_bytes()
    info = next(i for i in zipfile.ZipFile(path).infolist() if i.filename.endswith('data.pkl'))
    name_len, extra_len = struct.unpack_from('<HH', data, info.header_offset + 26)
    return info.header_offset + 30 + name_len + extra_len, info.file_size


@pytest.mark.parametrize('damage', ['code', 'flipped_pickle', 'truncated'])
def test_checkpoint_refusals_are_one_line_in_our_words(tmp_path, capsys, damage):
    import numpy as np
    from admn_ros.cli import main as admn
    path = tmp_path / 'm.pt'
    if damage == 'code':
        torch.save({'format': 'admn_ros.checkpoint', 'obj': _Code()}, path)
        needle = 'holds Python objects or code'
    else:
        save_checkpoint(path, ADMNModel(small_config()), class_names=['a', 'b'])
        data = bytearray(path.read_bytes())
        if damage == 'truncated':
            data = data[:len(data) // 2] + data[-200:]
        else:
            # Bit rot inside the pickle that torch's restricted unpickler trips over (its
            # refusal is the long text, with the advice never to follow).
            import pickle
            start, size = _pickle_span(path)
            clean = bytes(data)
            for seed in range(200):
                data = bytearray(clean)
                for i in np.random.default_rng(seed).integers(start + 2, start + size - 2, 3):
                    data[int(i)] ^= 0xFF
                path.write_bytes(bytes(data))
                try:
                    torch.load(path, weights_only=True)
                except pickle.UnpicklingError as exc:
                    if 'GLOBAL' not in str(exc):
                        break
                except Exception:
                    pass
            else:
                pytest.fail('no flip made the restricted unpickler refuse')
        path.write_bytes(bytes(data))
        needle = 'not a readable torch checkpoint'
    with pytest.raises(CheckpointError, match=needle) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert '\n' not in text and not [t for t in TORCH_TEXT if t in text], text
    assert admn(['eval', '--checkpoint', str(path), '--dataset', 'synthetic', '--size', '4',
                 '--budgets', '0.5', '--policies', 'full']) == 2
    out = capsys.readouterr()
    assert out.err.strip().count('\n') == 0 and needle in out.err, out.err
    assert 'owned' not in out.out


def test_eval_of_a_missing_folder_names_the_folder(tmp_path, capsys):
    from admn_ros.cli import main as admn
    missing = tmp_path / 'nonexistent'
    assert admn(['eval', '--dataset', f'folder:{missing}', '--budgets', '0.5']) == 2
    err = capsys.readouterr().err.strip()
    assert f'dataset folder {missing} does not exist' in err and err.count('\n') == 0, err
    missing.mkdir()
    assert admn(['eval', '--dataset', f'folder:{missing}', '--budgets', '0.5']) == 2
    err = capsys.readouterr().err.strip()
    assert 'no trained default' in err and '--checkpoint' in err, err
