"""The batch-1 speed-ups leave the model's outputs unchanged (within float tolerance)."""
import pytest
import torch

from admn_ros.fusion.config import EncoderConfig, ModelConfig
from admn_ros.fusion.model import ADMNModel


def small_model(seed=0):
    torch.manual_seed(seed)
    enc = dict(input_size=(16, 16), patch_size=8, dim=32, depth=3, heads=2)
    cfg = ModelConfig(encoders={'rgb': EncoderConfig(in_chans=3, **enc),
                                'depth': EncoderConfig(in_chans=1, **enc)},
                      fusion_dim=32, adapter_hidden=64, fusion_heads=2, num_classes=5)
    model = ADMNModel(cfg).eval()
    # Trained-looking weights: the residual branches start near zero, which would hide a wrong path.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def inputs(batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {'rgb': torch.randn(batch, 3, 16, 16, generator=g),
            'depth': torch.randn(batch, 1, 16, 16, generator=g)}


@pytest.mark.parametrize('keep_spec', ['layer0', 'full', 'mixed'])
@pytest.mark.parametrize('batch', [1, 4])
def test_unmasked_fusion_matches_the_masked_path(keep_spec, batch):
    """Inference with every modality run takes the mask-free fusion path; training-mode autograd
    takes the masked one. Same logits."""
    model = small_model()
    x = inputs(batch)
    keep = {m: torch.zeros(batch, 3, dtype=torch.bool) for m in model.modalities}
    for m, k in keep.items():
        k[:, 0] = True
        if keep_spec == 'full':
            k[:] = True
        elif keep_spec == 'mixed':
            k[::2, 2] = True
    with torch.inference_mode():
        fast = model(x, keep)
    with torch.enable_grad():
        masked = model(x, keep)
    assert torch.allclose(fast, masked.detach(), atol=1e-5, rtol=1e-5)


def test_a_modality_with_no_layer_still_leaves_fusion():
    """A token with no layer run is masked out on both paths (the fast path is not taken)."""
    model = small_model()
    x = inputs(2)
    keep = {'rgb': torch.tensor([[True, False, True], [False, False, False]]),
            'depth': torch.tensor([[True, True, False], [True, False, False]])}
    with torch.inference_mode():
        out = model(x, keep)
        alone = model({'depth': x['depth'][1:]}, {'depth': keep['depth'][1:]})
    with torch.enable_grad():
        masked = model(x, keep).detach()
    assert torch.allclose(out, masked, atol=1e-5)
    assert torch.allclose(out[1:], alone, atol=1e-5)   # sample 1: as if rgb were absent


def test_thread_count_does_not_change_outputs():
    model = small_model()
    x = inputs(3)
    before = torch.get_num_threads()
    try:
        with torch.inference_mode():
            torch.set_num_threads(1)
            one = model(x)
            torch.set_num_threads(2)
            two = model(x)
    finally:
        torch.set_num_threads(before)
    assert torch.allclose(one, two, atol=1e-5)
