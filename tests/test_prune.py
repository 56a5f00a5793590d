"""LayerDrop pruning: the every-other rule, the greedy data-driven choice, the static model equals the
adaptive one under the same keep-mask, and the exported file loads and keeps its controller."""
import pytest
import torch

from admn_ros.fusion.prune import (every_other, export_pruned, greedy_blocks, keep_masks, layerdrop_for_keep,
                                   prune_model)
from tests.fixtures_models import rgb_audio_inputs, rgb_audio_model

DEPTH = 6


def small_model(seed=0, **enc):
    return rgb_audio_model(DEPTH, 5, seed, **enc)


def inputs(batch=4, seed=0):
    return rgb_audio_inputs(batch, seed)


def test_every_other_follows_layerdrop_and_falls_back_to_even_spacing():
    assert every_other(12, 6) == [0, 2, 4, 6, 8, 10]
    assert every_other(16, 8) == [0, 2, 4, 6, 8, 10, 12, 14]          # fairseq's 8-of-16 example
    assert every_other(12, 9) == [0, 1, 2, 4, 5, 6, 8, 9, 10]          # p = 0.25: drop every 4th
    assert every_other(12, 8) == [0, 1, 3, 4, 6, 7, 9, 10]             # p = 1/3 (no float round-off)
    assert every_other(12, 3) == [0, 6, 11]                            # p > 0.5: evenly spaced
    assert every_other(12, 7) == [0, 2, 4, 6, 7, 9, 11]                # p not 1/n: evenly spaced
    assert every_other(12, 12) == list(range(12))
    with pytest.raises(ValueError, match='keep must lie'):
        every_other(12, 0)
    assert layerdrop_for_keep(6, 12).max_rate == pytest.approx(0.5)   # p = 1 - r / N


def test_pruned_model_equals_the_adaptive_model_with_the_same_mask():
    """With LayerShuffle position modules and LayerCollapse blocks too, so their re-indexing counts."""
    model = small_model(position_embed_dim=8, position_head=True, prelu_blocks=(1, 4), collapsed_blocks=(5,))
    with torch.no_grad():   # non-zero position projections and embeddings, so a wrong slot would show
        for enc in model.encoders.values():
            enc.depth_embed.normal_()
            for proj in enc.position_proj:
                proj.fc.weight.normal_(std=0.1)
            for _, b in enumerate(enc.blocks):
                if hasattr(b.mlp, 'slope') and b.mlp.slope is not None:
                    b.mlp.slope.fill_(0.3)
    kept = {'rgb': [0, 1, 4], 'audio': [2, 3, 5]}
    pruned = prune_model(model, kept).eval()
    assert pruned.depth == 3
    assert pruned.cfg.encoders['rgb'].prelu_blocks == (1, 2) and pruned.cfg.encoders['audio'].collapsed_blocks == (2,)
    x = inputs(5)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x, keep_masks(kept, DEPTH, 5)), rtol=0, atol=1e-6)
    # Only the kept blocks remain: parameters fall by exactly the dropped blocks' share.
    dropped = sum(p.numel() for m, blocks in kept.items() for b in set(range(DEPTH)) - set(blocks)
                  for mod in (model.encoders[m].blocks[b], model.encoders[m].position_proj[b],
                              model.encoders[m].position_heads[b]) for p in mod.parameters())
    dropped += sum(model.encoders[m].depth_embed[0].numel() * 3 for m in kept)
    dropped += sum((DEPTH - 3) * (32 + 1) * 3 for m in kept)   # position-head logits of 3 lost positions
    count = lambda mdl: sum(p.numel() for p in mdl.parameters())  # noqa: E731
    assert count(pruned) == count(model) - dropped
    with pytest.raises(ValueError, match='same number of blocks'):
        prune_model(model, {'rgb': [0, 1], 'audio': [0, 1, 2]})


def test_greedy_choice_drops_the_block_that_hurts():
    """Block 2 of rgb is made destructive; the validation labels are what the model says without
    it. Pruning one block of each modality must drop that one."""
    model = small_model(seed=1)
    with torch.no_grad():
        model.encoders['rgb'].blocks[2].mlp[2].weight.mul_(200.0)
        model.head.fc.weight.mul_(30.0)
    xs = [inputs(32, seed=s) for s in range(2)]
    without = {'rgb': [0, 1, 3, 4, 5], 'audio': list(range(DEPTH))}
    with torch.no_grad():
        ys = [model(x, keep_masks(without, DEPTH, 32)).argmax(-1) for x in xs]
    kept = greedy_blocks(model, xs, ys, DEPTH - 1)
    assert kept['rgb'] == [0, 1, 3, 4, 5]
    assert len(kept['audio']) == DEPTH - 1


def test_exported_checkpoint_loads_keeps_its_controller_and_runs_the_admn_policy(tmp_path):
    import numpy as np

    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.quality_estimators.inference import load_model
    from tests.fixtures_models import make_random_checkpoint, sample_frame
    src = make_random_checkpoint(tmp_path / 'src.pt', controller=True)
    info = export_pruned(src, tmp_path / 'pruned.pt', 2, 'every_other')
    assert info['kept'] == {m: [0, 2] for m in ('rgb', 'depth', 'audio')}
    loaded = load_model(tmp_path / 'pruned.pt')
    assert loaded.depth == 2 and loaded.controller is not None
    assert loaded.meta['pruned']['strategy'] == 'every_other'
    policy, _ = loaded.policy('admn')
    frame = sample_frame(0)
    raw = {m: np.asarray(v)[None] for m, v in frame.items() if m in loaded.modalities}
    inputs = loaded.preprocessor(raw)
    keep = policy.allocate(raw, Budget(0.5), tuple(raw), inputs)
    assert all(np.asarray(k).shape == (1, 2) for k in keep.values())
    assert sum(int(np.asarray(k).sum()) for k in keep.values()) == 3     # half of 3 x 2 layers
    # The controller's scores of the kept layers only (0 and 2 of 4) reach the policy.
    scores = loaded.scorer().scores(raw, Budget(0.5), tuple(raw), inputs)
    assert scores.shape == (1, 3, 2)
