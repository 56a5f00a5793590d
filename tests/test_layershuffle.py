"""LayerShuffle: block orders, position modules, the training option, fault injection, robustness
evaluation; and the encoder's explicit skip/blend mode."""
import csv

import pytest
import torch

from admn_ros.fusion.layerdrop import LayerDropConfig, sample_keep
from admn_ros.fusion.layershuffle import (LayerShuffleConfig, inject_faults, position_loss, robustness,
                                          sample_orders)
from tests.fixtures_models import rgb_audio_inputs, rgb_audio_model

DEPTH = 5


def small_model(seed=0, **enc):
    return rgb_audio_model(DEPTH, 4, seed, **enc)


def inputs(batch=4, seed=0):
    return rgb_audio_inputs(batch, seed)


def test_mode_is_explicit_so_a_float_mask_cannot_silently_run_every_block():
    model, x = small_model(), inputs(2)
    keep = {m: torch.tensor([[True, False, True, False, False]] * 2) for m in model.modalities}
    with pytest.raises(ValueError, match="mode='blend'"):
        model(x, {m: k.float() for m, k in keep.items()})            # skip is the default
    with pytest.raises(ValueError, match='needs a float'):
        model(x, keep, mode='blend')
    with pytest.raises(ValueError, match='mode must be'):
        model(x, keep, mode='soft')
    with torch.no_grad():   # both paths, asked for explicitly, agree on a 0/1 mask
        torch.testing.assert_close(model(x, keep), model(x, {m: k.float() for m, k in keep.items()}, mode='blend'),
                                   rtol=1e-5, atol=1e-5)


def test_order_runs_the_blocks_in_that_order_and_natural_order_is_the_default():
    model, x = small_model(), inputs(3)
    enc = model.encoders['rgb']
    perm = [3, 0, 4, 1, 2]
    calls = []
    hooks = [b.register_forward_hook(lambda mod, i, o, k=k: calls.append(k)) for k, b in enumerate(enc.blocks)]
    with torch.no_grad():
        shuffled = model(x, order={'rgb': torch.tensor(perm)})
        assert calls == perm
        calls.clear()
        keep = {'rgb': torch.tensor([[True, True, False, True, True]] * 3)}
        model(x, keep, order={'rgb': torch.tensor(perm)})
        assert calls == [3, 0, 4, 1]               # keep names blocks: block 2 is skipped wherever it sits
    for h in hooks:
        h.remove()
    with torch.no_grad():
        natural = model(x)
        torch.testing.assert_close(model(x, order={'rgb': torch.arange(DEPTH), 'audio': torch.arange(DEPTH)}),
                                   natural, rtol=0, atol=0)
    assert not torch.allclose(shuffled, natural)
    with pytest.raises(ValueError, match='permutation'):
        model(x, order={'rgb': torch.tensor([0, 0, 1, 2, 3])})


def test_mixed_masks_in_a_random_order_equal_per_sample_runs():
    model, x = small_model(position_embed_dim=4), inputs(6)
    with torch.no_grad():
        for enc in model.encoders.values():
            enc.depth_embed.normal_()
            for proj in enc.position_proj:
                proj.fc.weight.normal_(std=0.1)
    g = torch.Generator().manual_seed(1)
    keep = {m: torch.rand(6, DEPTH, generator=g) > 0.4 for m in model.modalities}
    order = {m: torch.randperm(DEPTH, generator=g) for m in model.modalities}
    with torch.inference_mode():
        batched = model(x, keep, order=order)
        single = torch.cat([model({m: v[i:i + 1] for m, v in x.items()}, {m: k[i:i + 1] for m, k in keep.items()},
                                  order=order) for i in range(6)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_option_off_leaves_the_training_stream_and_natural_order_unchanged():
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ld = LayerDropConfig(warmup_epochs=0)
    assert sample_orders(['rgb'], DEPTH, LayerShuffleConfig(), gen_a) is None
    # Off, the draw consumes nothing: the LayerDrop masks that follow are those of a run without it.
    assert torch.equal(sample_keep(['rgb'], DEPTH, 2, 1.0, ld, gen_a)['rgb'],
                       sample_keep(['rgb'], DEPTH, 2, 1.0, ld, gen_b)['rgb'])
    on = sample_orders(['rgb', 'audio'], DEPTH, LayerShuffleConfig(enabled=True), torch.Generator().manual_seed(0))
    assert sorted(on['rgb'].tolist()) == list(range(DEPTH)) and set(on) == {'rgb', 'audio'}


def test_position_modules_start_as_the_identity_and_the_heads_give_a_loss_in_training():
    plain, with_pos = small_model(seed=3), small_model(seed=3, position_embed_dim=8, position_head=True)
    missing = with_pos.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all('position' in k or 'depth_embed' in k for k in missing)
    x = inputs(2)
    with torch.no_grad():   # zero-initialised projections: a trained model's function is kept
        torch.testing.assert_close(with_pos(x), plain(x), rtol=0, atol=1e-6)
    assert position_loss(with_pos) == 0                     # eval: the heads do not run
    with_pos.train()
    with_pos(x, order={'rgb': torch.randperm(DEPTH), 'audio': torch.randperm(DEPTH)})
    loss = position_loss(with_pos)
    assert torch.isfinite(loss) and loss > 0 and loss.requires_grad


def test_inject_faults_knocks_out_kept_blocks_at_the_rate():
    keep = {'rgb': torch.ones(400, 12, dtype=torch.bool), 'audio': torch.zeros(400, 12, dtype=torch.bool)}
    keep['audio'][:, :6] = True
    out = inject_faults(keep, 0.25, torch.Generator().manual_seed(0))
    assert abs(1 - out['rgb'].float().mean().item() - 0.25) < 0.02
    assert not out['audio'][:, 6:].any()                    # a block that does not run cannot fail
    assert inject_faults(keep, 0.0)['rgb'] is keep['rgb']
    with pytest.raises(ValueError, match='fault rate'):
        inject_faults(keep, 1.5)


@pytest.mark.slow
def test_robustness_modes_on_a_model_trained_with_and_without_shuffling(tmp_path):
    """A real (tiny) run: fine-tuned from a trained model with random orders, the position
    embedding and the position loss. The option trains (the position modules move, the loss
    falls) and natural-order evaluation of the plain model is untouched by the evaluation modes."""
    from admn_ros.datasets.registry import load_dataset
    from admn_ros.fusion.checkpoint import checkpoint_preprocessor, load_checkpoint
    from admn_ros.fusion.stage1 import Stage1Config, accuracy, train_stage1
    from tests.test_stage1 import TINY
    base = train_stage1(Stage1Config.from_yaml(_tiny(tmp_path, epochs=3)), tmp_path / 'base', progress=False)
    cfg = Stage1Config.from_yaml(_tiny(tmp_path, epochs=3, fine_tune_from=str(base),
                                       shuffle={'enabled': True, 'position_embed_dim': 8, 'position_loss': 1.0}))
    shuffled = train_stage1(cfg, tmp_path / 'ls', progress=False)
    model, meta = load_checkpoint(shuffled)
    losses = [float(r['train_loss']) for r in csv.DictReader(open(tmp_path / 'ls' / 'metrics.csv'))]
    assert losses[-1] < losses[0]
    assert model.cfg.encoders['rgb'].position_embed_dim == 8 and model.cfg.encoders['rgb'].position_head
    assert all(e.depth_embed.abs().sum() > 0 for e in model.encoders.values())   # it learned positions
    plain, plain_meta = load_checkpoint(base)
    pre = checkpoint_preprocessor(plain_meta)
    val = load_dataset(TINY['data']['dataset'], 'val', size=64).arrays
    res = robustness(plain, pre, val, orders=2, fault_rate=0.5, modes=('natural', 'shuffled', 'faults'))
    assert res['natural']['mean'] == pytest.approx(accuracy(plain, pre, val))
    assert res['natural']['runs'] == 1 and res['shuffled']['runs'] == 2
    assert robustness(model, pre, val, orders=1, modes=('shuffled',))['shuffled']['mean'] > 0


def _tiny(tmp_path, **overrides):
    import yaml

    from tests.test_stage1 import TINY
    path = tmp_path / f'cfg_{len(list(tmp_path.glob("cfg_*")))}.yaml'
    path.write_text(yaml.safe_dump({**TINY, **overrides}))
    return path
