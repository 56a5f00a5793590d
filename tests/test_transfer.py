"""Starting from trained weights (fusion/pretrained.py) and the small-data recipe (fusion/recipe.py):
``--init`` copies exactly the shared encoders and leaves the new head fresh, the timm key map round
trips and loads a timm-layout ViT, the recipe gives the documented steps per epoch, a class-count
mismatch is refused outside ``--init``, and resize on load gives the preprocessing's inputs."""
import numpy as np
import pytest
import torch
import yaml

from admn_ros.fusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from admn_ros.fusion.config import EncoderConfig, ModelConfig
from admn_ros.fusion.encoder import AdaptiveDepthEncoder
from admn_ros.fusion.model import ADMNModel
from admn_ros.fusion import pretrained, recipe
from admn_ros.fusion.stage1 import Stage1Config, train_stage1

ENC = {'input_size': [64, 64], 'patch_size': 16, 'dim': 32, 'depth': 4, 'heads': 2}


def small_config(modalities=('rgb', 'depth', 'audio'), num_classes=4, dim=32) -> ModelConfig:
    chans = {'rgb': 3, 'depth': 1, 'audio': 1}
    return ModelConfig.from_dict({
        'encoders': {m: {**ENC, 'dim': dim, 'in_chans': chans[m]} for m in modalities},
        'adapter_hidden': 32, 'fusion_dim': 32, 'fusion_depth': 1, 'fusion_heads': 2,
        'num_classes': num_classes})


def source_checkpoint(tmp_path, **kw):
    torch.manual_seed(1)
    src = ADMNModel(small_config(**kw))
    path = save_checkpoint(tmp_path / 'src.pt', src, stage='stage1', dataset='x',
                           class_names=[f'c{i}' for i in range(src.cfg.num_classes)])
    return src, path


def test_init_copies_exactly_the_shared_encoders_and_leaves_the_head_fresh(tmp_path):
    src, path = source_checkpoint(tmp_path, modalities=('rgb', 'audio'), num_classes=10)
    # The new task: rgb and depth (no audio), 3 classes; depth is new to the checkpoint.
    cfg, notes = pretrained.init_model_config(small_config(('rgb', 'depth')), src.cfg,
                                              ['rgb', 'depth'], 3)
    torch.manual_seed(2)
    fresh = ADMNModel(cfg)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    report = pretrained.init_from_checkpoint(fresh, path)
    after, theirs = fresh.state_dict(), src.state_dict()
    for key, value in after.items():
        copied = key.startswith(('encoders.rgb.', 'adapters.rgb.', 'modality_embed.rgb', 'fusion',
                                 'null_token'))
        if copied:
            assert torch.equal(value, theirs[key]), key
        else:   # depth encoder, its adapter and the head keep their own fresh initialisation
            assert torch.equal(value, before[key]), key
    assert report.copied_modalities == ['rgb']
    assert 'head' in report.fresh and 'encoder:depth' in report.fresh
    assert after['head.fc.weight'].shape == (3, 32)
    assert any('depth encoder new' in n for n in notes)


def test_an_encoder_of_another_shape_is_left_fresh_with_the_reason(tmp_path):
    src, path = source_checkpoint(tmp_path, modalities=('rgb',), dim=32)
    other = ADMNModel(small_config(('rgb',), dim=64))   # wider encoder: nothing of it fits
    before = {k: v.clone() for k, v in other.encoders['rgb'].state_dict().items()}
    report = pretrained.init_from_checkpoint(other, path)
    assert 'encoder:rgb' not in report.copied
    assert '32] there, [1, 1, 64] here' in report.fresh['encoder:rgb']
    assert all(torch.equal(v, other.encoders['rgb'].state_dict()[k]) for k, v in before.items())


def test_freeze_blocks_stops_the_lower_blocks_learning():
    model = ADMNModel(small_config(('rgb', 'audio')))
    n = pretrained.freeze_blocks(model, 2, ['rgb'])
    enc = model.encoders['rgb']
    assert n > 0 and not enc.pos_embed.requires_grad
    assert not any(p.requires_grad for b in enc.blocks[:2] for p in b.parameters())
    assert all(p.requires_grad for b in enc.blocks[2:] for p in b.parameters())
    assert all(p.requires_grad for p in model.encoders['audio'].parameters())
    with pytest.raises(ValueError, match='has 4 blocks'):
        pretrained.freeze_blocks(model, 5, ['rgb'])


def timm_vit_state(dim=32, depth=4, patch=16, chans=3, tokens=17, classes=7, seed=0):
    """A state dict with timm's VisionTransformer names and shapes (random values)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)   # noqa: E731
    state = {'cls_token': r(1, 1, dim), 'pos_embed': r(1, tokens, dim),
             'patch_embed.proj.weight': r(dim, chans, patch, patch), 'patch_embed.proj.bias': r(dim),
             'norm.weight': r(dim), 'norm.bias': r(dim), 'head.weight': r(classes, dim),
             'head.bias': r(classes)}
    for i in range(depth):
        b = f'blocks.{i}.'
        state.update({b + 'norm1.weight': r(dim), b + 'norm1.bias': r(dim),
                      b + 'attn.qkv.weight': r(3 * dim, dim), b + 'attn.qkv.bias': r(3 * dim),
                      b + 'attn.proj.weight': r(dim, dim), b + 'attn.proj.bias': r(dim),
                      b + 'norm2.weight': r(dim), b + 'norm2.bias': r(dim),
                      b + 'mlp.fc1.weight': r(4 * dim, dim), b + 'mlp.fc1.bias': r(4 * dim),
                      b + 'mlp.fc2.weight': r(dim, 4 * dim), b + 'mlp.fc2.bias': r(dim)})
    return state


def test_timm_key_map_round_trips_and_loads_a_timm_layout_vit(tmp_path):
    enc = AdaptiveDepthEncoder(EncoderConfig(in_chans=3, **{**ENC, 'input_size': (64, 64)}))
    own = enc.state_dict()
    back = pretrained.timm_to_encoder(pretrained.encoder_to_timm(own))
    assert back.keys() == own.keys() and all(torch.equal(back[k], own[k]) for k in own)

    state = timm_vit_state()
    path = tmp_path / 'vit.pth'
    torch.save({'model': state}, path)          # timm's training scripts wrap it like this
    left_out = pretrained.load_timm_encoder(enc, path)
    assert sorted(left_out) == ['head.bias', 'head.weight']
    loaded = enc.state_dict()
    assert torch.equal(loaded['blocks.2.mlp.0.weight'], state['blocks.2.mlp.fc1.weight'])
    assert torch.equal(loaded['blocks.3.mlp.2.bias'], state['blocks.3.mlp.fc2.bias'])
    assert torch.equal(loaded['blocks.1.attn.qkv.weight'], state['blocks.1.attn.qkv.weight'])
    # The forward pass is a ViT's: block 0 by hand from the timm tensors equals the encoder's.
    x = torch.randn(2, 17, 32)
    ln = lambda t, p: torch.nn.functional.layer_norm(t, (32,), state[p + '.weight'], state[p + '.bias'])  # noqa
    qkv = ln(x, 'blocks.0.norm1') @ state['blocks.0.attn.qkv.weight'].T + state['blocks.0.attn.qkv.bias']
    q, k, v = qkv.reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
    att = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 17, 32)
    h = x + att @ state['blocks.0.attn.proj.weight'].T + state['blocks.0.attn.proj.bias']
    mlp = torch.nn.functional.gelu(ln(h, 'blocks.0.norm2') @ state['blocks.0.mlp.fc1.weight'].T
                                   + state['blocks.0.mlp.fc1.bias'])
    h = h + mlp @ state['blocks.0.mlp.fc2.weight'].T + state['blocks.0.mlp.fc2.bias']
    torch.testing.assert_close(enc.blocks[0](x), h, rtol=1e-4, atol=1e-4)


def test_timm_rgb_patch_projection_loads_into_a_one_channel_encoder_and_mismatches_are_refused():
    depth_enc = AdaptiveDepthEncoder(EncoderConfig(in_chans=1, **{**ENC, 'input_size': (64, 64)}))
    state = timm_vit_state(chans=3)
    pretrained.load_timm_encoder(depth_enc, state)
    torch.testing.assert_close(depth_enc.patch_embed.proj.weight,
                               state['patch_embed.proj.weight'].sum(1, keepdim=True))
    with pytest.raises(CheckpointError, match='pos_embed'):       # 224 px ViT: 197 tokens, not 17
        pretrained.load_timm_encoder(depth_enc, timm_vit_state(tokens=197))
    with pytest.raises(CheckpointError, match='missing'):          # a 2-block ViT into 4 blocks
        pretrained.load_timm_encoder(depth_enc, timm_vit_state(depth=2))


def test_a_stage1_config_starts_an_encoder_from_a_timm_file_and_freezes_it(tmp_path):
    path = tmp_path / 'vit.pth'
    torch.save(timm_vit_state(), path)
    cfg = Stage1Config(init_encoders={'rgb': str(path)}, freeze_blocks=2)
    start = pretrained.plan_init(cfg, small_config(('rgb', 'audio')))
    model = ADMNModel(start.model_config)
    told = start.apply(model, cfg.freeze_blocks)
    assert 'init rgb encoder from timm ViT' in told and 'frozen' in told
    assert torch.equal(model.encoders['rgb'].blocks[1].mlp[0].weight,
                       timm_vit_state()['blocks.1.mlp.fc1.weight'])
    assert not model.encoders['rgb'].blocks[1].attn.qkv.weight.requires_grad
    assert model.encoders['audio'].blocks[0].attn.qkv.weight.requires_grad   # random: not frozen
    with pytest.raises(ValueError, match='freeze_blocks needs init'):
        pretrained.plan_init(Stage1Config(freeze_blocks=2), small_config())
    with pytest.raises(ValueError, match='does not have'):
        pretrained.plan_init(Stage1Config(init_encoders={'depth': str(path)}), small_config(('rgb',)))


@pytest.mark.parametrize('n', [20, 37, 150, 144, 640, 1280, 5000])
def test_recipe_gives_at_least_the_documented_steps_per_epoch(n):
    r = recipe.choose(n)
    assert n // r.batch_size >= recipe.MIN_STEPS_PER_EPOCH
    assert r.batch_size <= recipe.MAX_BATCH_SIZE
    assert r.steps_per_epoch * r.epochs >= min(recipe.MIN_TOTAL_STEPS,
                                               r.steps_per_epoch * recipe.MAX_EPOCHS)
    assert recipe.MIN_EPOCHS <= r.epochs <= recipe.MAX_EPOCHS
    assert 1 <= r.warmup_steps <= recipe.MAX_WARMUP_STEPS
    assert r.stem == ('conv' if n < recipe.CONV_STEM_BELOW else None)
    assert r.patience >= recipe.MIN_PATIENCE       # chosen epochs come with early stopping
    # What is set is kept; set epochs mean no early stopping unless asked for.
    kept = recipe.choose(n, batch_size=8, epochs=3, warmup_steps=0, stem='patch')
    assert (kept.batch_size, kept.epochs, kept.warmup_steps, kept.stem, kept.patience) == (8, 3, 0, 'patch', 0)
    tuned = recipe.choose(n, from_scratch=False)
    assert tuned.stem is None and tuned.lr == recipe.LR_INIT < r.lr == recipe.LR_SCRATCH


TINY = {
    'model': small_config().to_dict(),
    'data': {'dataset': 'tensors', 'train_size': 40, 'val_size': 32},
    'augment': {'policy': 'none'}, 'lr': 3e-3, 'device': 'cpu',
}


def _yaml(tmp_path, name, **over):
    data = {**TINY, **over}
    data['model'] = {**data['model'], 'encoders': {m: {**e, 'input_size': list(e['input_size'])}
                                                   for m, e in data['model']['encoders'].items()}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_recipe_run_prints_its_choices_keeps_the_best_epoch_and_init_refits_the_head(tmp_path, capsys):
    cfg = Stage1Config.from_yaml(_yaml(tmp_path, 'a.yaml', epochs=3, early_stop_patience=1))
    path = train_stage1(cfg, tmp_path / 'scratch', progress=False)
    out = capsys.readouterr().out
    assert 'recipe for 40 training samples, 20 steps/epoch: batch_size=2' in out
    assert 'stem=conv (from scratch' in out
    import csv
    rows = list(csv.DictReader(open(tmp_path / 'scratch' / 'metrics.csv')))
    scores = [recipe.val_score(r['val_acc'], r['val_acc_quarter']) for r in rows]
    best = int(np.argmax(scores))       # first best epoch
    model, meta = load_checkpoint(path)
    kept, _ = load_checkpoint(tmp_path / 'scratch' / 'best.pt')
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), kept.state_dict().values()))
    assert f'weights of epoch {best + 1}' in out
    assert len(rows) == 3 or len(rows) - 1 - best >= 1     # stopped early only after `patience` epochs
    assert meta['train_config']['batch_size'] == 2 and model.cfg.encoders['rgb'].stem == 'conv'

    # The same data with 2 classes (another task) from that model: copied encoders, new 2-way head.
    from admn_ros.datasets.folder import write_folder
    from admn_ros.datasets.registry import load_dataset
    for split in ('train', 'val', 'test'):
        arrays = load_dataset('tensors', split, size=32).arrays
        arrays['label'] = (arrays['label'] >= 2).astype(np.int64)
        write_folder(tmp_path / 'two', split, arrays, ['dark', 'bright'])
    cfg2 = Stage1Config.from_yaml(_yaml(tmp_path, 'b.yaml', epochs=1, batch_size=8, freeze_blocks=1,
                                        init=str(path),
                                        data={'dataset': f'folder:{tmp_path / "two"}'}))
    fine = train_stage1(cfg2, tmp_path / 'fine', progress=False)
    out = capsys.readouterr().out
    assert 'encoder:rgb (' in out and 'fresh: head: new classes' in out and 'frozen' in out
    assert 'stem=as configured' in out           # the init model's stems, not the recipe's
    tuned, meta2 = load_checkpoint(fine)
    assert tuned.cfg.num_classes == 2 and tuned.cfg.encoders['rgb'].stem == 'conv'
    # Frozen block 0 is exactly the source's; block 3 learned.
    src = model.encoders['depth']
    assert torch.equal(tuned.encoders['depth'].blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert not torch.equal(tuned.encoders['depth'].blocks[3].attn.qkv.weight, src.blocks[3].attn.qkv.weight)

    # Without --init, a class-count mismatch is refused: resuming the 4-class run on 2 classes ...
    cfg3 = Stage1Config.from_yaml(_yaml(tmp_path, 'c.yaml', epochs=5, early_stop_patience=1,
                                        data={'dataset': f'folder:{tmp_path / "two"}'}))
    with pytest.raises(CheckpointError, match='has 4 classes, the dataset 2.*--init'):
        train_stage1(cfg3, tmp_path / 'scratch', resume=True, progress=False)
    # ... and evaluating it on them.
    from admn_ros.quality_estimators.evaluate import evaluate
    with pytest.raises(ValueError, match='predicts 4 classes but dataset'):
        evaluate(path, f'folder:{tmp_path / "two"}', [1.0], ['full'], device='cpu')


def test_resize_on_load_gives_the_same_model_inputs_as_resizing_later(tmp_path):
    from admn_ros.datasets.folder import load_folder, write_folder
    from admn_ros.datasets.preprocess import Preprocessor
    rng = np.random.default_rng(0)
    n = 5
    batch = {'rgb': rng.integers(0, 256, (n, 480, 640, 3), dtype=np.uint8),
             'depth': rng.uniform(0.3, 6.0, (n, 480, 640)).astype(np.float32),
             'label': np.arange(n) % 2}
    batch['depth'][:, ::7, ::5] = np.nan
    write_folder(tmp_path, 'train', batch, ['a', 'b'], depth_format='npy')
    full, _ = load_folder(tmp_path, 'train')
    small, _ = load_folder(tmp_path, 'train', image_size=64)
    assert small['rgb'].shape == (n, 64, 64, 3) and small['depth'].shape == (n, 64, 64)
    assert full['rgb'].shape == (n, 480, 640, 3)
    pre = Preprocessor()
    a, b = pre(full), pre(small)
    for m in ('rgb', 'depth'):
        assert torch.equal(a[m], b[m]), m
    # The registry passes it through for folder datasets; a smaller image is left as it is.
    from admn_ros.datasets.registry import load_dataset
    ds = load_dataset(f'folder:{tmp_path}', 'train', image_size=64)
    assert ds.arrays['rgb'].shape[1:3] == (64, 64)
    assert load_dataset(f'folder:{tmp_path}', 'train', image_size=1024).arrays['rgb'].shape[1:3] == (480, 640)
