"""Learned controller: strict straight-through selection, budget conditioning, and learning to
move layers to the informative modality on a toy task."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from admn_ros.fusion.config import EncoderConfig, ModelConfig
from admn_ros.fusion.model import ADMNModel
from admn_ros.quality_estimators.controller import (AllocationController, ControllerConfig, controller_cost_flops,
                                           relaxed_k_hot, straight_through_mask)
from tests.fixtures_models import tiny_stage1  # noqa: F401

MODS = ('rgb', 'audio')
DEPTH = 4


def ctrl_config(depth=DEPTH, **kw):
    kw = {'num_types': {'rgb': 3, 'audio': 3}, **kw}
    return ControllerConfig(modalities=MODS, in_chans={'rgb': 3, 'audio': 1}, view_size=16, depth=depth,
                            embed_dim=32, transformer_depth=1, heads=2, **kw)


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


def test_scorer_gives_the_same_scores_with_the_model_inputs():
    from admn_ros.datasets.preprocess import PreprocessConfig, Preprocessor
    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.quality_estimators.controller import ControllerScorer
    torch.manual_seed(0)
    pre = Preprocessor(PreprocessConfig(controller_size=16))
    scorer = ControllerScorer(AllocationController(ctrl_config()), pre, MODS)
    rng = np.random.default_rng(0)
    raw = {'rgb': rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8),
           'audio': rng.uniform(-0.5, 0.5, (3, 16000)).astype(np.float32)}
    alone = scorer.scores(raw, Budget(0.5), MODS)
    reused = scorer.scores(raw, Budget(0.5), MODS, inputs=pre(raw))
    assert alone.shape == (3, 2, DEPTH) and np.array_equal(alone, reused)


def test_a_sensor_the_corruption_heads_read_as_destroyed_keeps_only_its_first_layer():
    """``starve``: each modality judged on its own by the corruption heads; a starve type at the
    severity threshold leaves that modality its always-on layer, whatever the allocation head says."""
    from admn_ros.datasets.corruptions import ctype_index
    from admn_ros.datasets.preprocess import PreprocessConfig, Preprocessor
    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.quality_estimators.controller import ControllerScorer
    from admn_ros.quality_estimators.policies import make_policy
    torch.manual_seed(0)
    pre = Preprocessor(PreprocessConfig(controller_size=16))
    rng = np.random.default_rng(0)
    raw = {'rgb': rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8),
           'audio': rng.uniform(-0.5, 0.5, (4, 16000)).astype(np.float32)}

    def layers(starve, severity_bias, types):
        ctrl = AllocationController(ctrl_config(depth=6, starve=starve, num_types={'rgb': 7, 'audio': 7}))
        with torch.no_grad():
            ctrl.severity_head[-1].bias.copy_(torch.tensor(severity_bias))
            for m, t in types.items():   # the type heads read every sample as ``t``
                ctrl.type_heads[m].bias.fill_(-50.0)
                ctrl.type_heads[m].bias[ctype_index(m, t)] = 50.0
        policy = make_policy('admn', modalities=MODS, depth=6, controller=ControllerScorer(ctrl, pre, MODS))
        keep = policy.allocate(raw, Budget(0.5), MODS)
        return {m: keep[m].sum(1).tolist() for m in MODS}

    plain = layers({}, [50.0, 50.0], {'rgb': 'low_light', 'audio': 'muted'})
    assert plain['rgb'] != [1] * 4 or plain['audio'] != [1] * 4   # the heads alone change nothing
    starve = {'rgb': ('low_light',), 'audio': ('muted', 'dropout')}
    one = layers(starve, [50.0, -50.0], {'rgb': 'low_light', 'audio': 'muted'})   # audio mild
    assert one == {'rgb': [1] * 4, 'audio': [5] * 4}
    noise = layers(starve, [50.0, 50.0], {'rgb': 'gaussian_noise', 'audio': 'dropout'})  # not a starve type
    assert noise == {'rgb': [5] * 4, 'audio': [1] * 4}
    both = layers(starve, [50.0, 50.0], {'rgb': 'low_light', 'audio': 'muted'})
    assert both == plain   # every present sensor starved: the budget still goes by the learned ranking
    with pytest.raises(ValueError, match='sparkle'):
        ctrl_config(starve={'rgb': ('sparkle',)}).check()


def test_controller_cost_is_tiny_compared_with_the_model():
    from admn_ros.fusion.flops import CostModel
    cost = CostModel.from_config(ModelConfig())
    full = cost.total_flops({m: np.ones(12) for m in cost.modalities})[0]
    assert controller_cost_flops(ControllerConfig()) <= 0.02 * full


def test_samples_with_nothing_to_choose_get_a_finite_mask():
    """Depth 1, or a sample with no modality present, leaves the relaxation nothing to choose from."""
    for relaxation in ('gumbel_st', 'subset_st'):
        cfg = ControllerConfig(relaxation=relaxation)
        logits = torch.randn(3, 2, 4, requires_grad=True)
        present = torch.ones(3, 2, dtype=torch.bool)
        present[1] = False
        mask = straight_through_mask(logits, np.ones(2), 4.0, present, cfg, training=True)
        assert torch.isfinite(mask).all() and mask.detach()[1].sum() == 0
        (mask * torch.randn_like(mask)).sum().backward()
        assert torch.isfinite(logits.grad).all() and logits.grad[1].abs().sum() == 0
        assert logits.grad[0].abs().sum() > 0
        shallow = torch.randn(3, 2, 1, requires_grad=True)
        mask = straight_through_mask(shallow, np.ones(2), 2.0, torch.ones(3, 2, dtype=torch.bool), cfg, True)
        assert torch.equal(mask.detach(), torch.ones(3, 2, 1))


# ---- learning on a toy task -------------------------------------------------------------------
# Two modalities carry the same class pattern; in every sample one of them is replaced by loud noise.
# The frozen model is depth 3, so a budget of 4 of 6 layers leaves 2 free layers after the forced
# layer 0s, and giving both to the clean modality runs it at the full depth it was trained at.
TOY_DEPTH = 3
TOY_BUDGET = 4.0  # layers, of 2 * TOY_DEPTH
TOY_SIZE = 16


@pytest.fixture(scope='module')
def one_thread():
    # These tensors are tiny: extra intra-op threads only add synchronisation, which costs far more
    # than the work itself when the cores are shared with other processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_batch(n, rng):
    """Inputs, labels and which modality is noise (0: rgb, 1: audio) for ``n`` samples.

    The class pattern is the same in both modalities (rgb repeats it over its 3 channels, so neither
    modality is easier) and the within-class noise is strong, so the loss is not saturated and each
    layer of the clean modality still matters.
    """
    patterns = np.random.default_rng(123).normal(size=(4, 2, TOY_SIZE, TOY_SIZE)).astype(np.float32)
    y = rng.integers(0, 4, n)
    noisy = rng.integers(0, 2, n)
    rgb = np.repeat((patterns[y, 0] + 1.5 * rng.normal(size=(n, TOY_SIZE, TOY_SIZE)))[:, None], 3, 1)
    audio = (patterns[y, 1] + 1.5 * rng.normal(size=(n, TOY_SIZE, TOY_SIZE)))[:, None]
    rgb[noisy == 0] = 3 * rng.normal(size=(int((noisy == 0).sum()), 3, TOY_SIZE, TOY_SIZE))
    audio[noisy == 1] = 3 * rng.normal(size=(int((noisy == 1).sum()), 1, TOY_SIZE, TOY_SIZE))
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return {'rgb': t(rgb), 'audio': t(audio)}, torch.as_tensor(y), noisy


def count_keep(n, rgb_layers, audio_layers):
    """Bool masks keeping the first ``k`` layers of each modality."""
    keep = {m: torch.zeros(n, TOY_DEPTH, dtype=torch.bool) for m in MODS}
    keep['rgb'][:, :rgb_layers] = True
    keep['audio'][:, :audio_layers] = True
    return keep


@pytest.fixture(scope='module')
def toy_model(one_thread):
    """A frozen model for which only layers of the clean modality lower the loss.

    The clean modality always runs at full depth in training, so dropping any of its layers hurts;
    the noise modality runs a random subset of layers, so the model learns to ignore it at any depth
    (trained at full depth only, a truncated noise modality would be out of distribution and giving
    it layers would help as much as giving them to the clean one).
    """
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    enc = dict(input_size=(TOY_SIZE, TOY_SIZE), patch_size=8, dim=32, depth=TOY_DEPTH, heads=2)
    model = ADMNModel(ModelConfig(encoders={'rgb': EncoderConfig(3, **enc), 'audio': EncoderConfig(1, **enc)},
                                  adapter_hidden=32, fusion_dim=32, fusion_depth=1, fusion_heads=2, num_classes=4))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(60):
        x, y, noisy = toy_batch(64, rng)
        random_layers = torch.rand(64, TOY_DEPTH) < 0.5
        random_layers[:, 0] = True
        rgb_is_noise = torch.as_tensor(noisy == 0)[:, None]
        keep = {'rgb': torch.where(rgb_is_noise, random_layers, True),
                'audio': torch.where(rgb_is_noise, True, random_layers)}
        loss = F.cross_entropy(model(x, keep), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def clean_share_of_free_layers(ctrl, rng, n=256):
    """Per noise case, the mean fraction of the free layers given to the clean modality.

    Returns ``(when rgb is noise, when audio is noise)``; a constant allocation cannot score above
    0.5 in both, whatever it prefers.
    """
    x, _, noisy = toy_batch(n, rng)
    with torch.no_grad():
        logits, _, _ = ctrl(x, torch.full((n,), TOY_BUDGET / (2 * TOY_DEPTH)))
    mask = straight_through_mask(logits, np.ones(2), TOY_BUDGET, torch.ones(n, 2, dtype=torch.bool), ctrl.cfg, False)
    free = mask.sum(-1).numpy() - 1  # layer 0 of each modality is forced
    n_free = TOY_BUDGET - 2
    assert (free.sum(1) == n_free).all()
    return free[noisy == 0, 1].mean() / n_free, free[noisy == 1, 0].mean() / n_free


@pytest.mark.slow
def test_toy_model_rewards_layers_of_the_clean_modality_only(toy_model):
    """Precondition of the learning test: at 4 layers, every free layer moved from the noise modality
    to the clean one lowers the loss."""
    x, y, noisy = toy_batch(512, np.random.default_rng(1))
    with torch.no_grad():
        loss = {counts: F.cross_entropy(toy_model(x, count_keep(512, *counts)), y, reduction='none')
                for counts in [(1, 3), (2, 2), (3, 1)]}
    for case, to_clean, to_noise in ((0, (1, 3), (3, 1)), (1, (3, 1), (1, 3))):  # (rgb, audio) layers
        at = noisy == case
        clean, even, noise = (loss[c][at].mean().item() for c in (to_clean, (2, 2), to_noise))
        assert clean < even < noise, (case, clean, even, noise)


@pytest.mark.slow
@pytest.mark.parametrize('relaxation', ['gumbel_st', 'subset_st'])
def test_training_moves_layers_to_the_clean_modality(toy_model, relaxation):
    """Trained through the straight-through mask and the model's blend path on the task loss alone,
    the controller learns, per sample, to give the free layers to the modality that is not noise."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ctrl = AllocationController(ctrl_config(relaxation=relaxation, depth=TOY_DEPTH))
    # ADMN's learning rate (and train_controller's default). At 1e-2 the controller's CLS feature
    # collapses to an input-independent vector (its spread over a batch fell from 0.43 to 0.004 in 80
    # steps), after which only a constant allocation is possible.
    copt = torch.optim.Adam(ctrl.parameters(), 1e-3)
    fraction = torch.full((64,), TOY_BUDGET / (2 * TOY_DEPTH))
    present = torch.ones(64, 2, dtype=torch.bool)
    before = clean_share_of_free_layers(ctrl, rng)
    for _ in range(150):
        x, y, _ = toy_batch(64, rng)
        logits, _, _ = ctrl(x, fraction)
        mask = straight_through_mask(logits, np.ones(2), TOY_BUDGET, present, ctrl.cfg, True)
        loss = F.cross_entropy(toy_model(x, {'rgb': mask[:, 0], 'audio': mask[:, 1]}, mode='blend'), y)
        copt.zero_grad()
        loss.backward()
        copt.step()
    after = clean_share_of_free_layers(ctrl, rng)
    assert min(before) < 0.8 and min(after) > 0.8, (before, after)


def train_on_whole_allocations(toy_model, loss_fn, cfg):
    """(clean share before, after) 150 steps of a whole-allocation loss on the toy task."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ctrl = AllocationController(ctrl_config(depth=TOY_DEPTH))
    copt = torch.optim.Adam(ctrl.parameters(), 1e-3)
    fraction = torch.full((64,), TOY_BUDGET / (2 * TOY_DEPTH))
    before = clean_share_of_free_layers(ctrl, rng)
    for _ in range(150):
        x, y, _ = toy_batch(64, rng)
        logits, _, _ = ctrl(x, fraction)
        loss = loss_fn(logits, toy_model, x, y, TOY_BUDGET, np.ones(2), cfg, rng)
        copt.zero_grad()
        loss.backward()
        copt.step()
    return before, clean_share_of_free_layers(ctrl, rng)


@pytest.mark.slow
def test_candidate_loss_moves_layers_to_the_clean_modality(toy_model):
    """The same learning task through ``allocation_loss: candidates``: whole allocations scored by
    the frozen model, the controller's logits fitted to the loss-weighted mix of them."""
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig, candidate_loss
    cfg = ControllerTrainConfig(allocation_loss='candidates', candidates=6)
    before, after = train_on_whole_allocations(toy_model, candidate_loss, cfg)
    assert min(before) < 0.8 and min(after) > 0.8, (before, after)


@pytest.mark.slow
def test_split_loss_moves_layer_counts_away_from_the_noise_modality(toy_model):
    """``allocation_loss: splits``: whole count splits ranked by what they cost the frozen model.
    Half the samples have rgb as pure noise, half audio; on exactly those samples the trained
    controller's counts leave the noise modality."""
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig, split_loss
    cfg = ControllerTrainConfig(allocation_loss='splits', candidates=6, candidate_temperature=0.25)
    before, after = train_on_whole_allocations(toy_model, split_loss, cfg)
    assert min(before) < 0.8 and min(after) > 0.8, (before, after)


@settings(max_examples=60, deadline=None)
@given(fraction=st.floats(0.05, 1.0), costs=st.lists(st.floats(0.2, 3.0), min_size=2, max_size=3),
       depth=st.integers(2, 12), count=st.integers(1, 20), seed=st.integers(0, 2 ** 16))
def test_split_candidates_are_distinct_strict_and_start_with_the_even_split(fraction, costs, depth, count,
                                                                            seed):
    from admn_ros.quality_estimators.policies import split_counts
    from admn_ros.quality_estimators.train_controller import split_candidates
    costs = np.asarray(costs)
    budget = fraction * depth * costs.sum()
    if costs.sum() > budget:
        return  # not every layer 0 fits: no split to rank
    splits = split_candidates(budget, costs, depth, count, np.random.default_rng(seed))
    assert 1 <= len(splits) <= count
    assert len({tuple(s) for s in splits}) == len(splits)
    assert ((splits >= 1) & (splits <= depth)).all()
    assert (splits @ costs <= budget * (1 + 1e-9)).all()
    even = split_counts(np.array([budget]), costs, np.ones((1, len(costs))), np.ones((1, len(costs)), bool),
                        depth)[0]
    assert np.array_equal(splits[0], even)


@settings(max_examples=60, deadline=None)
@given(budget=st.floats(0.0, 40.0), costs=st.lists(st.floats(0.2, 3.0), min_size=1, max_size=3),
       depth=st.integers(1, 12), seed=st.integers(0, 2 ** 16))
def test_candidate_allocations_are_strict_and_keep_layer_0(budget, costs, depth, seed):
    from admn_ros.quality_estimators.train_controller import candidate_masks
    costs = np.asarray(costs)
    budget = max(budget, float(costs.sum()))   # the always-on layer 0s must fit (as in training)
    masks = candidate_masks(budget, costs, depth, 5, np.random.default_rng(seed))
    assert masks.shape == (5, len(costs), depth) and masks[:, :, 0].all()
    spent = (masks.sum(-1) * costs).sum(-1)
    assert (spent <= budget * (1 + 1e-9)).all()
    # The budget is filled: no modality short of full depth could still afford one more layer.
    room = budget - spent
    for c in range(5):
        short = masks[c].sum(-1) < depth
        assert not (short & (costs <= room[c] - 1e-9 * budget)).any(), (masks[c].sum(-1), room[c])


@pytest.mark.slow
@pytest.mark.parametrize('allocation_loss', ['straight_through', 'candidates', 'splits'])
def test_train_controller_logs_resumes_and_writes_a_loadable_checkpoint(tiny_stage1, tmp_path,
                                                                        monkeypatch,
                                                                        allocation_loss):
    from admn_ros.fusion.checkpoint import CheckpointError
    from admn_ros.fusion.training import AugmentConfig, DataConfig
    from admn_ros.quality_estimators.inference import load_controller
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig, train_controller
    cfg = ControllerTrainConfig(
        data=DataConfig(dataset='avdigits', train_split='val', train_size=64),
        augment=AugmentConfig(policy='independent', start_epoch=0), epochs=2, warmup_epochs=1,
        batch_size=32, allocation_loss=allocation_loss, candidates=3, device='cpu')
    out = train_controller(cfg, tiny_stage1, tmp_path, progress=False)
    rows = (tmp_path / 'metrics.csv').read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith('epoch,loss,train_acc')
    assert rows[1].split(',')[2] == 'nan' and rows[2].split(',')[2] != 'nan'  # warm-up: no task loss
    model, ctrl, meta = load_controller(out)
    assert ctrl is not None and meta['controller_train_config']['allocation_loss'] == allocation_loss
    cfg.epochs = 3    # resume from last.pt: only the third epoch runs
    train_controller(cfg, tiny_stage1, tmp_path, resume=True, progress=False)
    rows = (tmp_path / 'metrics.csv').read_text().strip().splitlines()
    assert [r.split(',')[0] for r in rows[1:]] == ['1', '2', '3']
    # A run interrupted after epoch 2 and resumed lands where an uninterrupted one does (the
    # Gumbel noise stream included).
    import admn_ros.quality_estimators.train_controller as tc
    real_save, saved = tc.save_checkpoint, []

    def save_then_stop(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        saved.append(path)
        if len(saved) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(tc, 'save_checkpoint', save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_controller(cfg, tiny_stage1, tmp_path / 'interrupted', progress=False)
    monkeypatch.undo()
    resumed = train_controller(cfg, tiny_stage1, tmp_path / 'interrupted', resume=True,
                               progress=False)
    straight = train_controller(cfg, tiny_stage1, tmp_path / 'straight', progress=False)
    a, b = load_controller(resumed)[1].state_dict(), load_controller(straight)[1].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished run is not continued on top of another backbone.
    from tests.fixtures_models import make_random_checkpoint
    other = make_random_checkpoint(tmp_path / 'other_stage1.pt')
    with pytest.raises(CheckpointError, match='another stage-1 model'):
        train_controller(cfg, other, tmp_path, resume=True, progress=False)
    # A run made with another config is not continued (a new default config over an old cache).
    cfg.epochs, cfg.lr = 4, 5e-4
    with pytest.raises(CheckpointError, match='lr differ'):
        train_controller(cfg, tiny_stage1, tmp_path, resume=True, progress=False)


@pytest.mark.slow
def test_train_controller_without_corruption_labels_skips_the_warm_up_steps(tiny_stage1, tmp_path):
    # augment.policy none: the warm-up epoch has no corruption labels to learn from; it must
    # leave the controller untouched rather than fail on a loss without a gradient.
    from admn_ros.fusion.checkpoint import read_checkpoint
    from admn_ros.fusion.training import AugmentConfig, DataConfig
    from admn_ros.quality_estimators.inference import load_controller
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig, train_controller
    cfg = ControllerTrainConfig(
        data=DataConfig(dataset='avdigits', train_split='val', train_size=64),
        augment=AugmentConfig(policy='none'), epochs=1, warmup_epochs=1, batch_size=32,
        device='cpu')
    out = train_controller(cfg, tiny_stage1, tmp_path, progress=False)
    assert load_controller(out)[1] is not None
    rows = (tmp_path / 'metrics.csv').read_text().strip().splitlines()
    assert len(rows) == 2 and float(rows[1].split(',')[1]) == 0.0
    last = read_checkpoint(tmp_path / 'last.pt')['extra']
    assert last['optimizer']['state'] == {}          # not one optimiser step was taken


@pytest.mark.slow
def test_a_controller_file_retrains_on_the_stage1_model_it_embeds(tiny_stage1, tmp_path):
    """`--stage1 shipped.pt`: a controller checkpoint serves as the stage-1 model it holds (how a
    shipped default's controller is retrained); the new file keeps those weights and only the new
    controller and its config."""
    from admn_ros.fusion.checkpoint import CheckpointError, state_digest
    from admn_ros.fusion.training import AugmentConfig, DataConfig
    from admn_ros.quality_estimators.inference import load_controller
    from admn_ros.quality_estimators.train_controller import ControllerTrainConfig, train_controller
    cfg = ControllerTrainConfig(
        data=DataConfig(dataset='avdigits', train_split='val', train_size=32),
        augment=AugmentConfig(policy='up_to_two', start_epoch=0), epochs=1, warmup_epochs=1,
        batch_size=32, device='cpu')
    first = train_controller(cfg, tiny_stage1, tmp_path / 'first', progress=False)
    cfg.augment.p_clean = 0.1
    again = train_controller(cfg, first, tmp_path / 'again', progress=False)
    (m1, _, meta1), (m2, ctrl2, meta2) = load_controller(first), load_controller(again)
    assert state_digest(m1) == state_digest(m2) and ctrl2 is not None and meta2['stage'] == 'controller'
    assert meta2['controller_train_config']['augment']['p_clean'] == 0.1
    assert meta1['controller_train_config']['augment']['p_clean'] == 0.4
    assert not all(torch.equal(v, ctrl2.state_dict()[k]) for k, v in load_controller(first)[1].state_dict().items())
    # init_controller starts from the file's controller: with nothing to learn (a warm-up epoch
    # without corruption labels takes no step) it is that controller exactly.
    cfg.init_controller, cfg.augment = True, AugmentConfig(policy='none')
    same = load_controller(train_controller(cfg, first, tmp_path / 'same', progress=False))[1]
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in load_controller(first)[1].state_dict().items())
    with pytest.raises(CheckpointError, match='init_controller needs a controller'):
        train_controller(cfg, tiny_stage1, tmp_path / 'refused', progress=False)
