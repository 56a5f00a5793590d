"""The analytic cost model matches torch's FLOP counter (MATH attention backend) within 2%."""
import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.flops import CostModel
from admn_ros.fusion.model import ADMNModel


def counted(model, x, keep):
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, keep)
    return counter.get_total_flops()


@pytest.mark.parametrize('layers', [{'rgb': 12, 'depth': 12, 'audio': 12}, {'rgb': 5, 'depth': 0, 'audio': 2},
                                    {'rgb': 1, 'depth': 3}])
@pytest.mark.parametrize('stem', ['patch', 'conv'])
def test_analytic_flops_match_flop_counter(layers, stem):
    cfg = ModelConfig()
    for enc in cfg.encoders.values():
        enc.stem = stem
    model, cost = ADMNModel(cfg).eval(), CostModel.from_config(cfg)
    keep = {}
    for m, k in layers.items():
        keep[m] = torch.zeros(1, cfg.depth, dtype=torch.bool)
        keep[m][0, torch.randperm(cfg.depth)[:k]] = True
    x = {m: torch.randn(1, cfg.encoders[m].in_chans, *cfg.encoders[m].input_size) for m in layers}
    analytic = float(cost.total_flops({m: k.numpy() for m, k in keep.items()})[0])
    assert analytic == pytest.approx(counted(model, x, keep), rel=0.02)


def test_block_cost_is_per_layer_and_per_modality():
    cost = CostModel.from_config(ModelConfig())
    keep = {'rgb': np.array([[1] * 4 + [0] * 8, [1] * 12]), 'audio': np.array([[1] * 2 + [0] * 10, [0] * 12])}
    enc = cost.encoder_flops(keep)
    assert enc[0] == pytest.approx(4 * cost.block_flops['rgb'] + 2 * cost.block_flops['audio'])
    assert enc[1] == pytest.approx(12 * cost.block_flops['rgb'])
    assert cost.full_encoder_flops() == pytest.approx(12 * sum(cost.block_flops.values()))
