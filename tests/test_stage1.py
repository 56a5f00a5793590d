"""Stage-1 training: loss goes down, metrics/checkpoints are written, resume works, DDP works."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from admn_ros.fusion.checkpoint import load_checkpoint
from admn_ros.fusion.layerdrop import LayerDropConfig, evenly_spaced_mask, sample_keep
from admn_ros.fusion.stage1 import Stage1Config, train_stage1

REPO = Path(__file__).resolve().parent.parent

TINY = {
    'model': {'encoders': {m: {'in_chans': c, 'input_size': [64, 64], 'patch_size': 16, 'dim': 32, 'depth': 4,
                               'heads': 2} for m, c in (('rgb', 3), ('depth', 1), ('audio', 1))},
              'adapter_hidden': 32, 'fusion_dim': 32, 'fusion_depth': 1, 'fusion_heads': 2},
    'data': {'dataset': 'tensors', 'train_size': 256, 'val_size': 64},
    'augment': {'policy': 'none'},
    'epochs': 3, 'batch_size': 32, 'lr': 3e-3, 'warmup_steps': 5, 'stem': 'patch', 'device': 'cpu',
}


def write_config(tmp_path, **overrides) -> Path:
    cfg = {**TINY, **overrides}
    path = tmp_path / 'stage1.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_metrics(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_layerdrop_masks_follow_the_config():
    import torch
    gen = torch.Generator().manual_seed(0)
    cfg = LayerDropConfig(max_rate=0.5, warmup_epochs=2, full_drop_prob=0.0, uniform_count=False)
    assert cfg.rate(0) == 0 and cfg.rate(1) == 0.25 and cfg.rate(5) == 0.5
    early = sample_keep(['rgb'], 12, 4, 0.0, cfg, gen)['rgb']
    assert early.all()  # no dropping before the warm-up starts
    rates = [1 - float(sample_keep(['rgb', 'audio'], 12, 1, 10.0, cfg, gen)['rgb'].float().mean())
             for _ in range(400)]
    assert abs(sum(rates) / len(rates) - 0.5) < 0.05
    masks = [sample_keep(['rgb'], 12, 3, 10.0, LayerDropConfig(full_drop_prob=1.0), gen)['rgb'] for _ in range(5)]
    assert all(m[:, 0].all() and m[:, 1:].sum() == 0 for m in masks)  # full-backbone drop keeps block 0
    uni = LayerDropConfig(full_drop_prob=0.0, uniform_count=True, uniform_count_prob=1.0, warmup_epochs=0)
    counts = [int(sample_keep(['rgb'], 12, 2, 1.0, uni, gen)['rgb'][0].sum()) for _ in range(1200)]
    assert min(counts) == 1 and max(counts) == 12
    assert abs(sum(c <= 3 for c in counts) / len(counts) - 0.25) < 0.05  # small budgets as often as large
    m = sample_keep(['rgb'], 12, 5, 1.0, uni, gen)['rgb']
    assert (m == m[0]).all() and m[:, 0].all()  # one mask per batch, block 0 kept
    assert evenly_spaced_mask(3, 12).nonzero().flatten().tolist() == [0, 6, 11]


def test_absent_modalities_are_left_out_per_sample_and_never_all_at_once():
    import torch
    gen = torch.Generator().manual_seed(0)
    mods = ['rgb', 'depth', 'audio']
    cfg = LayerDropConfig(full_drop_prob=0.0, uniform_count=False, max_rate=0.2, warmup_epochs=0,
                          absent_prob=0.3)
    gone = []
    for _ in range(50):
        keep = sample_keep(mods, 12, 32, 1.0, cfg, gen)
        absent = torch.stack([~keep[m].any(1) for m in mods], 1)          # [batch, modality]
        assert not absent.all(1).any()
        present = torch.stack([keep[m].any(1) for m in mods], 1)
        for i, m in enumerate(mods):   # present samples share the batch's layer mask
            rows = keep[m][present[:, i]]
            assert (rows == rows[:1]).all()
        gone.append(absent.float())
    share = torch.cat(gone).mean(0)
    assert ((share > 0.25) & (share < 0.33)).all(), share   # about 0.3 each (a little less: never all)
    # Off by default, and then the masks are exactly those of the same stream without the option.
    plain = LayerDropConfig(full_drop_prob=0.0, uniform_count=False, max_rate=0.2, warmup_epochs=0)
    a = sample_keep(mods, 12, 2, 1.0, plain, torch.Generator().manual_seed(3))
    b = sample_keep(mods, 12, 2, 1.0, LayerDropConfig(**{**plain.__dict__, 'absent_prob': 0.0}),
                    torch.Generator().manual_seed(3))
    assert all(torch.equal(a[m], b[m]) for m in mods)


def test_distillation_step_is_the_full_and_the_sampled_model_in_one_pass():
    import torch
    import torch.nn.functional as F
    from admn_ros.fusion.config import ModelConfig
    from admn_ros.fusion.model import ADMNModel
    from admn_ros.fusion.stage1 import _distilled_step
    from tests.fixtures_models import tiny_model_config
    torch.manual_seed(0)
    model = ADMNModel(ModelConfig.from_dict(tiny_model_config(num_classes=5))).eval()
    inputs = {'rgb': torch.randn(3, 3, 64, 64), 'depth': torch.rand(3, 1, 64, 64),
              'audio': torch.randn(3, 1, 64, 64)}
    keep = {m: torch.tensor([True, False, True, False]).expand(3, 4) for m in inputs}
    labels = torch.tensor([0, 3, 1])
    sub, loss = _distilled_step(model, model.head, inputs, keep, labels, weight=0.5)
    full = model(inputs, None)
    torch.testing.assert_close(sub, model(inputs, keep), rtol=1e-4, atol=1e-5)
    expected = (F.cross_entropy(full, labels) + 0.5 * F.cross_entropy(sub, labels)
                + 0.5 * F.cross_entropy(sub, full.softmax(-1).detach()))
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    loss.backward()
    skipped = model.encoders['rgb'].blocks[1]   # dropped in the sub-network, run by the full model
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in skipped.parameters())


@pytest.mark.parametrize('distill', [0.0, 0.5])
@pytest.mark.slow
def test_tiny_stage1_run_lowers_the_loss_and_writes_artifacts(tmp_path, distill):
    cfg = Stage1Config.from_yaml(write_config(tmp_path, distill=distill))
    path = train_stage1(cfg, tmp_path / 'out', progress=False)
    rows = read_metrics(tmp_path / 'out' / 'metrics.csv')
    assert [int(r['epoch']) for r in rows] == [1, 2, 3]
    assert float(rows[-1]['train_loss']) < 0.7 * float(rows[0]['train_loss'])
    assert float(rows[-1]['val_acc']) > 2 / len(load_checkpoint(path)[1]['class_names'])  # well above chance
    model, meta = load_checkpoint(path)
    assert meta['stage'] == 'stage1' and meta['modalities'] == ['rgb', 'depth', 'audio']
    assert model.cfg.num_classes == len(meta['class_names'])


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(tmp_path):
    cfg_path = write_config(tmp_path, epochs=2)
    out = tmp_path / 'out'
    train_stage1(Stage1Config.from_yaml(cfg_path), out, progress=False)
    cfg = Stage1Config.from_yaml(write_config(tmp_path, epochs=3))
    train_stage1(cfg, out, resume=True, progress=False)
    assert [int(r['epoch']) for r in read_metrics(out / 'metrics.csv')] == [1, 2, 3]
    # Continuing with another recipe would mix two runs: refused, naming what changed.
    from admn_ros.fusion.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match='distill, lr differ'):
        train_stage1(Stage1Config.from_yaml(write_config(tmp_path, epochs=4, lr=1e-3, distill=0.5)),
                     out, resume=True, progress=False)


@pytest.mark.slow
def test_two_process_ddp_run(tmp_path):
    cfg_path = write_config(tmp_path, epochs=2)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
         '-m', 'admn_ros.cli', 'train', 'stage1', '--config', str(cfg_path), '--out', str(tmp_path / 'ddp'),
         '--no-progress'], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path / 'ddp' / 'metrics.csv')
    assert [int(r['epoch']) for r in rows] == [1, 2]  # rank 0 alone logs
    model, meta = load_checkpoint(tmp_path / 'ddp' / 'model.pt')
    assert meta['stage'] == 'stage1'
