"""LayerCollapse: the merged MLP equals the PReLU MLP at slope 1, parameters and FLOPs as predicted,
training pulls the slopes to 1, and ``admn collapse`` writes a model that loads and runs."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from admn_ros.fusion.blocks import Block
from admn_ros.fusion.collapse import (collapse_model, collapsible, count_parameters, mlp_parameters, pull_slopes,
                                      round_targets, slopes)
from admn_ros.fusion.flops import CostModel
from tests.fixtures_models import rgb_audio_inputs, rgb_audio_model

DEPTH, DIM, HIDDEN = 4, 32, 64


def small_model(seed=0, **enc):
    return rgb_audio_model(DEPTH, 4, seed, mlp_ratio=HIDDEN / DIM, **enc)


def inputs(batch=3, seed=0):
    return rgb_audio_inputs(batch, seed)


def test_collapsed_block_equals_the_prelu_block_at_slope_one_with_the_predicted_parameters():
    torch.manual_seed(0)
    block = Block(DIM, 2, HIDDEN / DIM, mlp='prelu').eval()
    for p in block.parameters():   # weights of a trained size, not the near-zero init
        torch.nn.init.normal_(p, std=0.2)
    block.mlp.slope.data.fill_(1.0)
    merged = Block(DIM, 2, HIDDEN / DIM, mlp='linear').eval()
    state = {k: v for k, v in block.state_dict().items() if not k.startswith('mlp.')}
    from admn_ros.fusion.blocks import merge_linear
    linear = merge_linear(block.mlp)
    merged.load_state_dict({**state, 'mlp.weight': linear.weight, 'mlp.bias': linear.bias})
    x = torch.randn(2, 7, DIM)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), block(x), rtol=1e-5, atol=1e-5)
    mlp_count = lambda b: sum(p.numel() for p in b.mlp.parameters())  # noqa: E731
    assert mlp_count(block) == mlp_parameters(DIM, HIDDEN, 'prelu') == DIM * HIDDEN * 2 + HIDDEN + DIM + 1
    assert mlp_count(merged) == mlp_parameters(DIM, HIDDEN, 'linear') == DIM * DIM + DIM


def test_collapsing_a_model_keeps_its_output_and_the_cost_model_knows_the_new_costs():
    model = small_model(prelu_blocks=(2, 3))
    for _, _, alpha in slopes(model):
        alpha.data.fill_(1.0)
    assert collapsible(model) == {'rgb': [2, 3], 'audio': [2, 3]}
    collapsed = collapse_model(model, collapsible(model)).eval()
    assert collapsed.cfg.encoders['rgb'].collapsed_blocks == (2, 3) and not collapsed.cfg.encoders['rgb'].prelu_blocks
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(collapsed(x), model(x), rtol=1e-5, atol=1e-5)
    saved = 4 * (mlp_parameters(DIM, HIDDEN, 'prelu') - mlp_parameters(DIM, HIDDEN, 'linear'))
    assert count_parameters(collapsed) == count_parameters(model) - saved
    # Analytic FLOPs against torch's counter, with some collapsed blocks skipped and some run.
    cost = CostModel.from_config(collapsed.cfg)
    keep = {m: torch.tensor([[True, False, True, True]]) for m in collapsed.modalities}
    x1 = {m: v[:1] for m, v in x.items()}
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        collapsed(x1, keep)
    analytic = float(cost.total_flops({m: k.numpy() for m, k in keep.items()})[0])
    assert analytic == pytest.approx(counter.get_total_flops(), rel=0.02)
    # The budget selector counts every block at the dearest one: a selection never exceeds its budget.
    assert cost.block_flops['rgb'] == CostModel.from_config(model.cfg).block_flops['rgb']
    assert cost.block_costs['rgb'][3] < cost.block_costs['rgb'][0]
    with pytest.raises(ValueError, match='no PReLU slope'):
        collapse_model(model, {'rgb': [0]})


def test_slopes_are_pulled_to_one_and_get_no_weight_decay():
    from admn_ros.fusion.collapse import param_groups
    model = small_model(prelu_blocks=(3,))
    groups = param_groups(model, 0.05)
    assert [len(g['params']) for g in groups][1] == 2 and groups[1]['weight_decay'] == 0.0
    for _ in range(200):
        pull_slopes(model, lr=1e-3, pull=25.0)
    assert all(abs(float(a.detach()) - 1) < 0.01 for _, _, a in slopes(model))
    assert round_targets(4, 2) == [2, 4] and round_targets(3, 5) == [1, 2, 3]


@pytest.mark.slow
def test_collapse_command_fine_tunes_in_rounds_and_writes_a_loadable_model(tmp_path):
    """Real training on the learnable tensors set: two rounds from the last blocks backwards."""
    import yaml

    from admn_ros.fusion.checkpoint import load_checkpoint
    from admn_ros.fusion.collapse import collapse_checkpoint
    from admn_ros.fusion.stage1 import Stage1Config, train_stage1
    from tests.test_stage1 import TINY
    cfg_path = tmp_path / 'cfg.yaml'
    cfg_path.write_text(yaml.safe_dump({**TINY, 'epochs': 2}))
    base = train_stage1(Stage1Config.from_yaml(cfg_path), tmp_path / 'base', progress=False)
    info = collapse_checkpoint(base, tmp_path / 'collapsed.pt', blocks=2, rounds=2, epochs=2, lr=1e-3,
                               pull=300.0, device='cpu', progress=False)
    assert [r['blocks'] for r in info['rounds']] == [1, 2]
    model, meta = load_checkpoint(tmp_path / 'collapsed.pt')
    assert meta['collapse']['collapsed'] == {m: list(e.collapsed_blocks) for m, e in model.cfg.encoders.items()}
    assert all(e.collapsed_blocks == (2, 3) for e in model.cfg.encoders.values()), info
    source, _ = load_checkpoint(base)
    assert count_parameters(model) < count_parameters(source)
    # Without training, --epochs 0 collapses the chosen blocks outright.
    info0 = collapse_checkpoint(base, tmp_path / 'forced.pt', blocks=1, rounds=1, epochs=0)
    assert info0['collapsed'] == {m: [3] for m in ('rgb', 'depth', 'audio')}
