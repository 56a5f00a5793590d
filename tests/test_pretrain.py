"""``admn pretrain`` (fusion/mae.py, fusion/pretrain.py, datasets/unlabelled.py): masked-autoencoder
pretraining lowers its loss on a tiny generated folder, writes encoders that ``--init`` copies,
leaves every subset of layers able to reconstruct, resumes to the same weights as an
uninterrupted run, never reads a folder's val/test splits, and keeps the AV-digits evaluation
images and voices out of its pool."""
import csv

import numpy as np
import pytest
import torch

from admn_ros.datasets import avdigits as av
from admn_ros.datasets.folder import write_folder
from admn_ros.datasets.unlabelled import avdigits_excluded_speakers, avdigits_pool, load_pool
from admn_ros.fusion.checkpoint import read_checkpoint
from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.mae import DecoderConfig, MaskedAutoencoder, patchify, random_masking
from admn_ros.fusion.model import ADMNModel
from admn_ros.fusion.pretrain import PretrainConfig, pretrain, reconstruction_loss
from admn_ros.fusion.pretrained import init_from_checkpoint
from admn_ros.fusion.stage1 import Stage1Config, train_stage1
from admn_ros.fusion.training import DataConfig
from tests.fixtures_models import tiny_model_config

DEPTH = 3


def tiny_model(modalities=('rgb', 'audio')) -> ModelConfig:
    cfg = tiny_model_config(modalities, num_classes=4)
    for enc in cfg['encoders'].values():
        enc['depth'] = DEPTH
    return ModelConfig.from_dict(cfg)


def structured(n: int, seed: int, bright: int = 0):
    """Images of one bright square on a dark ground, a pure tone per clip: a hidden patch is
    predictable from the visible ones, as in real frames (pure noise would not be)."""
    rng = np.random.default_rng(seed)
    rgb = np.full((n, 64, 64, 3), bright or 20, np.uint8)
    t = np.arange(16000, dtype=np.float32) / 16000
    audio = np.empty((n, 16000), np.float32)
    for i in range(n):
        size, (y, x) = rng.integers(12, 28), rng.integers(0, 36, 2)
        rgb[i, y:y + size, x:x + size] = rng.integers(120, 255, 3)
        audio[i] = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t)
    return {'rgb': rgb, 'audio': audio}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """A generated folder: 64 unlabelled training records (rgb + audio), and val/test splits
    whose images are all white, so a pool that read them would show it."""
    root = tmp_path_factory.mktemp('unlabelled')
    write_folder(root, 'train', structured(64, 0))
    for split in ('val', 'test'):
        write_folder(root, split, structured(8, 1, bright=255))
    return root


def test_an_unlabelled_bag_is_imported_and_pooled(tmp_path):
    from admn_ros.datasets.bags import write_bag
    frames = structured(12, 3)['rgb']
    bag = write_bag(tmp_path / 'hallway', {'rgb': frames})          # no label topic at all
    pool = load_pool([str(bag)], work=tmp_path / 'work')
    assert pool.counts() == {'rgb': 12}
    np.testing.assert_array_equal(pool.arrays['rgb'], frames)
    assert not list((tmp_path / 'work' / 'bags' / 'hallway' / 'train').glob('*/label.txt'))


def tiny_config(folder, **kw) -> PretrainConfig:
    base = dict(data=(f'folder:{folder}',), init=None, model=tiny_model(), epochs=6, batch_size=16,
                lr=2e-3, warmup_steps=4, checkpoint_every=5, device='cpu',
                decoder=DecoderConfig(dim=32, depth=1, heads=2))
    return PretrainConfig(**{**base, **kw})


@pytest.fixture(scope='module')
def pretrained(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp('pretrain')
    return out, pretrain(tiny_config(folder), out, progress=False)


def test_folder_pool_reads_training_records_only(folder):
    pool = load_pool([f'folder:{folder}'])
    assert pool.counts() == {'rgb': 64, 'audio': 64}
    assert pool.sources['rgb'] == [f'folder:{folder}/train']
    assert not (pool.arrays['rgb'] == 255).any()    # no val/test image


def test_pretraining_lowers_the_loss_and_writes_encoders_that_init_copies(pretrained):
    out, path = pretrained
    with open(out / 'metrics.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for m in ('rgb', 'audio'):
        first, last = float(rows[0][f'loss_{m}']), float(rows[-1][f'loss_{m}'])
        assert last < 0.8 * first, (m, first, last)
    payload = read_checkpoint(path)
    assert payload['extra']['stage'] == 'pretrain'
    assert all(k.startswith('encoders.') for k in payload['state_dict'])
    target = ADMNModel(ModelConfig.from_dict({**payload['model_config'], 'num_classes': 7}))
    report = init_from_checkpoint(target, payload)
    assert sorted(report.copied_modalities) == ['audio', 'rgb']
    assert report.fresh['adapter:rgb'] == 'not in the checkpoint'
    for k, v in payload['state_dict'].items():
        torch.testing.assert_close(target.state_dict()[k], v)


def test_stage1_init_accepts_the_pretrained_encoders(pretrained, tmp_path, capsys):
    _, path = pretrained
    cfg = Stage1Config(model=tiny_model(('rgb', 'depth', 'audio')),
                       data=DataConfig(dataset='tensors', train_size=32, val_size=16),
                       init=str(path), epochs=1, batch_size=16, device='cpu')
    model_path = train_stage1(cfg, tmp_path / 's1', progress=False)
    assert 'copied encoder:audio (' in capsys.readouterr().out
    assert read_checkpoint(model_path)['model_config']['num_classes'] == 4


def test_every_subset_of_layers_reconstructs_better_than_untrained(pretrained, folder):
    """LayerDrop in pretraining: with any of the 2^depth subsets of blocks the pretrained encoder
    (with its decoder, from last.pt) reconstructs hidden patches better than an untrained one."""
    out, _ = pretrained
    state = read_checkpoint(out / 'last.pt')
    model = ADMNModel(ModelConfig.from_dict(state['model_config']))
    model.load_state_dict(state['state_dict'])
    fresh = ADMNModel(ModelConfig.from_dict(state['model_config']))
    from admn_ros.datasets.preprocess import Preprocessor
    x = Preprocessor()(structured(32, 2))
    dec = DecoderConfig(dim=32, depth=1, heads=2)
    for m in ('rgb', 'audio'):
        trained = MaskedAutoencoder(model.encoders[m], dec)
        own = {k: v for k, v in trained.state_dict().items() if k.startswith('encoder.')}
        trained.load_state_dict({**own, **state['extra']['decoders'][m]})
        untrained = MaskedAutoencoder(fresh.encoders[m], dec)
        for bits in range(2 ** DEPTH):
            keep = torch.tensor([bool(bits >> b & 1) for b in range(DEPTH)])
            got = reconstruction_loss(trained, x[m], keep)
            assert got < 0.8 * reconstruction_loss(untrained, x[m], keep), (m, keep.tolist(), got)


def test_resume_continues_to_the_same_weights(folder, tmp_path):
    cfg = tiny_config(folder, epochs=2)
    whole = read_checkpoint(pretrain(cfg, tmp_path / 'whole', progress=False))['state_dict']
    pretrain(cfg, tmp_path / 'cut', progress=False, stop_at_step=7)   # interrupted mid-epoch
    assert read_checkpoint(tmp_path / 'cut' / 'last.pt')['extra']['step'] == 7
    resumed = read_checkpoint(pretrain(cfg, tmp_path / 'cut', resume=True, progress=False))['state_dict']
    for k, v in whole.items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=0)


def test_resume_refuses_another_config(folder, tmp_path):
    from admn_ros.fusion.checkpoint import CheckpointError
    pretrain(tiny_config(folder, epochs=1), tmp_path / 'run', progress=False, stop_at_step=2)
    with pytest.raises(CheckpointError, match='lr'):
        pretrain(tiny_config(folder, epochs=1, lr=1e-4), tmp_path / 'run', resume=True, progress=False)


def test_masking_hides_the_asked_share_and_patchify_matches_the_patch_embedding():
    ids, mask = random_masking(5, 16, 0.75, torch.Generator().manual_seed(0))
    assert ids.shape == (5, 4) and mask.sum(1).tolist() == [12.0] * 5
    assert (mask.gather(1, ids) == 0).all()
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    patches = patchify(x, 4)
    # Token 1 is the top-right 4x4 patch (row-major, as the patch embedding flattens).
    torch.testing.assert_close(patches[0, 1].reshape(4, 4, 3).permute(2, 0, 1), x[0, :, :4, 4:])


# ------------------------------------------------------------------------ evaluation data stays out

pytestmark_avdigits = pytest.mark.skipif(not (av.resolve_data_root() / 'fsdd').is_dir(),
                                         reason='AV-digits data not found')


@pytestmark_avdigits
def test_avdigits_pool_holds_no_evaluation_image_or_voice():
    pool, files = avdigits_pool(with_files=True)
    root = av.resolve_data_root()
    t10k, _ = av.load_mnist(root, 't10k')       # the validation and test images
    evaluation = {img.tobytes() for img in t10k}
    assert not any(img[..., 0].tobytes() in evaluation for img in pool['rgb'])
    assert len(pool['rgb']) == 5000 and len(pool['audio']) == len(files) == 2000
    speakers = {f.split('_')[1] for f in files}
    assert speakers == set(av.SPEAKER_SPLITS['train'])
    assert speakers.isdisjoint(avdigits_excluded_speakers())
    for split in ('val', 'test'):
        held_out = {r.path.name for r in av.pair_avdigits(split).recordings}
        assert held_out.isdisjoint(files)


def test_shipped_encoders_are_listed_intact_and_pretrained_on_training_data_only():
    from admn_ros.fusion.pretrained import resolve_init
    from admn_ros.quality_estimators import defaults
    path = resolve_init('encoders')
    assert path.name == 'encoders_real.pt'
    assert defaults.read_checksums()[path.name] == defaults.file_sha256(path)
    assert path.stat().st_size <= 8 * 2 ** 20
    payload = read_checkpoint(path)
    extra = payload['extra']
    assert extra['stage'] == 'pretrain' and sorted(extra['pretrained']) == ['audio', 'rgb']
    assert extra['data'] == {'rgb': ['avdigits-unlabelled'], 'audio': ['avdigits-unlabelled']}
    assert sorted({k.split('.')[1] for k in payload['state_dict']}) == ['audio', 'depth', 'rgb']
    assert all(v.dtype == torch.float16 for v in payload['state_dict'].values() if v.is_floating_point())


def test_the_pretrain_command_runs_from_a_yaml_and_refuses_unknown_data_in_one_line(folder, tmp_path, capsys):
    import yaml

    from admn_ros.cli import main
    cfg = tmp_path / 'pretrain.yaml'
    cfg.write_text(yaml.safe_dump({'init': None, 'model': tiny_model().to_dict(), 'batch_size': 32,
                                   'decoder': {'dim': 32, 'depth': 1, 'heads': 2}}))
    assert main(['pretrain', '--data', f'folder:{folder}', '--config', str(cfg), '--epochs', '1',
                 '--modalities', 'rgb', '--out', str(tmp_path / 'run'), '--no-progress']) == 0
    payload = read_checkpoint(tmp_path / 'run' / 'encoders.pt')
    assert payload['extra']['pretrained'] == ['rgb']
    assert main(['pretrain', '--data', 'nowhere', '--config', str(cfg), '--out', str(tmp_path / 'x')]) == 2
    assert 'admn: error: --data nowhere: expected folder:PATH' in capsys.readouterr().err
