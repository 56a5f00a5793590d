"""Learned controller: strict straight-through selection, budget conditioning, and learning to
move layers to the informative modality on a toy task."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusion.config import EncoderConfig, ModelConfig
from fusion.model import ADMNModel
from quality_estimators.controller import (AllocationController, ControllerConfig, controller_cost_flops,
                                           relaxed_k_hot, straight_through_mask)

MODS = ('rgb', 'audio')
DEPTH = 4


def ctrl_config(**kw):
    return ControllerConfig(modalities=MODS, in_chans={'rgb': 3, 'audio': 1}, view_size=16, depth=DEPTH,
                            embed_dim=32, transformer_depth=1, heads=2, num_types={'rgb': 3, 'audio': 3}, **kw)


@pytest.mark.parametrize('relaxation', ['gumbel_st', 'subset_st'])
def test_forward_is_exactly_the_strict_selection_and_gradients_flow(relaxation):
    torch.manual_seed(0)
    logits = torch.randn(16, 3, 6, requires_grad=True)
    costs = np.array([1.0, 2.5, 0.7])
    budget = np.random.default_rng(0).uniform(4.2, 15, 16)  # always affords every layer 0 (4.2)
    present = torch.ones(16, 3, dtype=torch.bool)
    present[3, 1] = False
    cfg = ControllerConfig(relaxation=relaxation)
    mask = straight_through_mask(logits, costs, budget, present, cfg, training=True)
    assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}  # exactly K-hot in the forward pass
    spent = (mask.detach().numpy().sum(-1) * costs).sum(-1)
    assert (spent <= budget + 1e-9).all()
    assert (mask.detach()[:, :, 0][present] == 1).all() and mask.detach()[3, 1].sum() == 0
    (mask * torch.randn_like(mask)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert logits.grad[:, :, 0].abs().sum() == 0  # layer 0 is forced, not chosen


def test_relaxed_k_hot_sums_to_k():
    y = torch.randn(5, 10)
    k = torch.tensor([0, 1, 3, 5, 9])
    out = relaxed_k_hot(y, k, tau=0.5)
    torch.testing.assert_close(out.sum(1), k.float(), rtol=1e-4, atol=1e-4)
    assert (out >= 0).all()
    top = y.argmax(1)
    assert (out[2:].argmax(1) == top[2:]).all()  # the best entry is the most selected


def test_one_controller_serves_every_budget():
    torch.manual_seed(0)
    ctrl = AllocationController(ctrl_config()).eval()
    # Give the allocation head a non-trivial budget dependence (as training would).
    torch.nn.init.normal_(ctrl.allocation_head[-1].weight, std=0.5)
    views = {'rgb': torch.randn(4, 3, 16, 16), 'audio': torch.randn(4, 1, 16, 16)}
    present = torch.ones(4, 2, dtype=torch.bool)
    masks = {}
    for fraction in (0.25, 0.5, 1.0):
        logits, severity, types = ctrl(views, torch.full((4,), fraction))
        masks[fraction] = straight_through_mask(logits, np.ones(2), fraction * 2 * DEPTH, present, ctrl.cfg, False)
        assert (masks[fraction].sum((1, 2)) == round(fraction * 2 * DEPTH)).all()
        assert severity.shape == (4, 2) and ((severity >= 0) & (severity <= 1)).all()
    with torch.no_grad():
        a, _, _ = ctrl(views, torch.full((4,), 0.25))
        b, _, _ = ctrl(views, torch.full((4,), 1.0))
    assert not torch.allclose(a, b)  # the budget is an input


def test_controller_cost_is_tiny_compared_with_the_model():
    from fusion.flops import CostModel
    cost = CostModel.from_config(ModelConfig())
    full = cost.total_flops({m: np.ones(12) for m in cost.modalities})[0]
    assert controller_cost_flops(ControllerConfig()) <= 0.02 * full


def toy_batch(n, rng):
    """Class = a pattern present in both modalities; per sample one modality is replaced by loud noise."""
    protos = np.random.default_rng(123).normal(size=(4, 2, 16, 16)).astype(np.float32)
    y = rng.integers(0, 4, n)
    noisy = rng.integers(0, 2, n)  # 0: rgb is noise, 1: audio is noise
    rgb = np.repeat(protos[y, 0][:, None], 3, 1) + 0.5 * rng.normal(size=(n, 3, 16, 16))
    audio = protos[y, 1][:, None] + 0.5 * rng.normal(size=(n, 1, 16, 16))
    rgb[noisy == 0] = 3 * rng.normal(size=(int((noisy == 0).sum()), 3, 16, 16))
    audio[noisy == 1] = 3 * rng.normal(size=(int((noisy == 1).sum()), 1, 16, 16))
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return {'rgb': t(rgb), 'audio': t(audio)}, torch.as_tensor(y), noisy


@pytest.mark.slow
def test_training_moves_layers_to_the_clean_modality():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    enc = dict(input_size=(16, 16), patch_size=4, dim=32, depth=DEPTH, heads=2)
    model = ADMNModel(ModelConfig(encoders={'rgb': EncoderConfig(3, **enc), 'audio': EncoderConfig(1, **enc)},
                                  adapter_hidden=32, fusion_dim=32, fusion_depth=1, fusion_heads=2, num_classes=4))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    # Trained at full depth (no LayerDrop) so that every kept layer of the clean modality clearly lowers
    # the loss: on this easy task a LayerDrop model is already good with one layer, leaving nothing to learn.
    for step in range(100):
        x, y, _ = toy_batch(64, rng)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)

    ctrl = AllocationController(ctrl_config())
    copt = torch.optim.Adam(ctrl.parameters(), 1e-2)
    present = torch.ones(64, 2, dtype=torch.bool)
    budget = 0.5 * 2 * DEPTH  # 4 layers: layer 0 of each + 2 to choose

    def clean_share(n_batches=4):
        shares = []
        for _ in range(n_batches):
            x, y, noisy = toy_batch(64, rng)
            with torch.no_grad():
                logits, _, _ = ctrl(x, torch.full((64,), 0.5))
                mask = straight_through_mask(logits, np.ones(2), budget, present, ctrl.cfg, False)
            per_mod = mask.sum(-1).numpy()
            clean = np.where(noisy == 0, per_mod[:, 1], per_mod[:, 0])
            shares.append(clean.mean() / per_mod.sum(1).mean())
        return float(np.mean(shares))

    before = clean_share()
    for step in range(80):
        x, y, _ = toy_batch(64, rng)
        logits, _, _ = ctrl(x, torch.full((64,), 0.5))
        mask = straight_through_mask(logits, np.ones(2), budget, present, ctrl.cfg, True)
        loss = F.cross_entropy(model(x, {'rgb': mask[:, 0], 'audio': mask[:, 1]}), y)
        copt.zero_grad()
        loss.backward()
        copt.step()
    after = clean_share()
    assert after > before + 0.1 and after > 0.7, (before, after)
