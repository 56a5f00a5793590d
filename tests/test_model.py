"""Adaptive-depth encoder and fusion model: mask semantics, execution paths, missing modalities."""
import pytest
import torch

from admn_ros.fusion.config import EncoderConfig, ModelConfig
from admn_ros.fusion.model import ADMNModel

DEPTH = 6


def small_config(**kw) -> ModelConfig:
    enc = dict(input_size=(16, 16), patch_size=8, dim=32, depth=DEPTH, heads=2)
    return ModelConfig(encoders={'rgb': EncoderConfig(in_chans=3, **enc), 'depth': EncoderConfig(in_chans=1, **enc),
                                 'audio': EncoderConfig(in_chans=1, **enc)},
                       adapter_hidden=32, fusion_dim=32, fusion_depth=1, fusion_heads=2, num_classes=5, **kw)


def inputs(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'rgb': torch.randn(batch, 3, 16, 16, generator=g), 'depth': torch.randn(batch, 1, 16, 16, generator=g),
            'audio': torch.randn(batch, 1, 16, 16, generator=g)}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ADMNModel(small_config()).eval()


def random_keep(batch, seed, modalities=('rgb', 'depth', 'audio')):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(batch, DEPTH, generator=g) > 0.5 for m in modalities}


def test_dropped_blocks_are_never_called_and_kept_order_is_preserved(model):
    calls = []
    for m, enc in model.encoders.items():
        for i, block in enumerate(enc.blocks):
            block.register_forward_hook(lambda mod, inp, out, m=m, i=i: calls.append((m, i, len(inp[0]))))
    keep = {m: torch.zeros(1, DEPTH, dtype=torch.bool) for m in model.modalities}
    keep['rgb'][0, [0, 2, 5]] = True
    keep['audio'][0, [1, 3]] = True  # depth: zero layers
    with torch.inference_mode():
        model(inputs(1), keep)
    assert [(m, i) for m, i, _ in calls] == [('rgb', 0), ('rgb', 2), ('rgb', 5), ('audio', 1), ('audio', 3)]


def test_mixed_batch_runs_each_block_only_on_rows_that_keep_it(model):
    rows_seen = {}
    for i, block in enumerate(model.encoders['rgb'].blocks):
        block.register_forward_hook(lambda mod, inp, out, i=i: rows_seen.__setitem__(i, len(inp[0])))
    keep = random_keep(8, seed=3)
    with torch.inference_mode():
        model(inputs(8), keep)
    expected = {i: int(keep['rgb'][:, i].sum()) for i in range(DEPTH) if keep['rgb'][:, i].any()}
    assert rows_seen == expected
    assert sum(rows_seen.values()) < 8 * DEPTH  # compute really saved


def test_blend_path_equals_skip_path_for_the_same_mask(model):
    x, keep = inputs(6), random_keep(6, seed=1)
    with torch.no_grad():
        skipped = model(x, keep)
        blended = model(x, {m: k.float() for m, k in keep.items()}, mode='blend')
    torch.testing.assert_close(skipped, blended, rtol=1e-5, atol=1e-5)


def test_blend_path_is_differentiable_in_the_mask(model):
    keep = {m: k.float().requires_grad_() for m, k in random_keep(3, seed=2).items()}
    model(inputs(3), keep, mode='blend').sum().backward()
    assert all(k.grad is not None and k.grad.abs().sum() > 0 for k in keep.values())


def test_batched_mixed_masks_equal_per_sample_inference(model):
    x, keep = inputs(8), random_keep(8, seed=4)
    with torch.inference_mode():
        batched = model(x, keep)
        single = torch.cat([model({m: v[i:i + 1] for m, v in x.items()}, {m: k[i:i + 1] for m, k in keep.items()})
                            for i in range(8)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_full_keep_equals_no_mask(model):
    x = inputs(2)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), model(x, model.full_keep(2)))


def test_absent_modality_and_zero_layers(model):
    x = inputs(3)
    with torch.inference_mode():
        no_depth = model({m: v for m, v in x.items() if m != 'depth'})
        zero = {m: torch.ones(3, DEPTH, dtype=torch.bool) for m in model.modalities}
        zero['depth'][:] = False
        zero_depth = model(x, zero)
        only_rgb = model({'rgb': x['rgb']})
    assert no_depth.shape == (3, 5) and torch.isfinite(no_depth).all() and torch.isfinite(only_rgb).all()
    # Zero layers means no information: the depth token is masked out, exactly as if depth were absent.
    torch.testing.assert_close(no_depth, zero_depth, rtol=1e-5, atol=1e-5)
    # ...and a different depth image then cannot change the output.
    with torch.inference_mode():
        other = model({**x, 'depth': torch.randn(3, 1, 16, 16)}, zero)
    torch.testing.assert_close(other, zero_depth)


def test_every_modality_at_zero_layers_still_gives_finite_output(model):
    keep = {m: torch.zeros(2, DEPTH, dtype=torch.bool) for m in model.modalities}
    with torch.inference_mode():
        assert torch.isfinite(model(inputs(2), keep)).all()


def test_bad_inputs_are_rejected_clearly(model):
    with pytest.raises(ValueError, match='unknown modalities'):
        model({'lidar': torch.zeros(1, 1, 16, 16)})
    with pytest.raises(ValueError, match='expects'):
        model({'rgb': torch.zeros(1, 1, 16, 16)})
    with pytest.raises(ValueError, match='keep must be'):
        model(inputs(2), {'rgb': torch.ones(2, DEPTH + 1, dtype=torch.bool)})


def test_regression_head_is_pluggable():
    model = ADMNModel(small_config(head='regression'))
    out = model(inputs(2))
    assert out.shape == (2, 5)
    loss = model.head.loss(out, torch.zeros(2, 5))
    loss.backward()
    assert loss.item() > 0
