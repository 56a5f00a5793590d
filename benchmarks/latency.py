"""Latency and throughput of the adaptive-depth model against the layer budget.

    admn bench latency [--checkpoint model.pt] --json latency.json

* ``batch1``: median batch-1 latency and analytic GFLOPs at budget fractions of the total layers,
  layers spread evenly over modalities (and evenly spaced within each).
* ``batched``: samples/s at batch 32 when every sample has its own random allocation ("mixed")
  versus one shared allocation with the same mean depth ("uniform").

Targets (ratios, so a noisy shared machine still gives a meaningful answer): latency at 0.25 is at
most 0.35x latency at 1.0; mixed throughput is at least 0.8x uniform.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Dict, List, Optional

import torch

from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.flops import CostModel
from admn_ros.fusion.layerdrop import evenly_spaced
from admn_ros.fusion.model import ADMNModel

BUDGETS = (0.25, 0.33, 0.5, 0.75, 1.0)


def even_allocation(modalities, depth: int, fraction: float) -> Dict[str, torch.Tensor]:
    """Split ``floor(fraction * total layers)`` evenly over modalities, evenly spaced in each
    (floor: a budget is a strict upper bound, as everywhere else)."""
    total = int(fraction * depth * len(modalities) + 1e-9)
    counts = [total // len(modalities) + (i < total % len(modalities)) for i in range(len(modalities))]
    return {m: evenly_spaced(depth, k) for m, k in zip(modalities, counts)}


def random_inputs(cfg: ModelConfig, batch: int, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    return {m: torch.randn(batch, e.in_chans, *e.input_size, generator=gen) for m, e in cfg.encoders.items()}


def _median_ms(fn, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def mixed_keep(modalities, depth: int, batch: int, mean_layers: int, gen: torch.Generator):
    """Per-sample random allocations: each sample spreads ``mean_layers * M`` layers at random."""
    m_count = len(modalities)
    keep = {m: torch.zeros(batch, depth, dtype=torch.bool) for m in modalities}
    for b in range(batch):
        slots = torch.randperm(m_count * (depth - 1), generator=gen)[:mean_layers * m_count - m_count]
        for i, m in enumerate(modalities):
            keep[m][b, 0] = True  # layer 0 always on, as every policy does
            mine = slots[(slots // (depth - 1)) == i] % (depth - 1) + 1
            keep[m][b, mine] = True
    return keep


@torch.inference_mode()
def run(model: ADMNModel, runs: int = 50, batch: int = 32, batched_runs: int = 10) -> dict:
    cfg = model.cfg
    cost = CostModel.from_config(cfg)
    gen = torch.Generator().manual_seed(0)
    mods, depth = cfg.modalities, cfg.depth
    x1 = random_inputs(cfg, 1, gen)
    rows = []
    for fraction in BUDGETS:
        keep = {m: k.expand(1, depth) for m, k in even_allocation(mods, depth, fraction).items()}
        ms = _median_ms(lambda: model(x1, keep), runs)
        gflops = float(cost.total_flops({m: k.numpy() for m, k in keep.items()})[0]) / 1e9
        rows.append({'budget': fraction, 'layers': int(sum(int(k.sum()) for k in keep.values())),
                     'latency_ms': round(ms, 3), 'gflops': round(gflops, 4)})
    xb = random_inputs(cfg, batch, gen)
    mean_layers = depth // 2
    uniform = {m: k.expand(batch, depth) for m, k in even_allocation(mods, depth, 0.5).items()}
    mixed = mixed_keep(mods, depth, batch, mean_layers, gen)
    uniform_ms = _median_ms(lambda: model(xb, uniform), batched_runs, warmup=2)
    mixed_ms = _median_ms(lambda: model(xb, mixed), batched_runs, warmup=2)
    distinct = {m: int(torch.unique(mixed[m], dim=0).shape[0]) for m in mods}
    return {
        'config': {'modalities': list(mods), 'depth': depth, 'dim': [e.dim for e in cfg.encoders.values()],
                   'threads': torch.get_num_threads()},
        'batch1': rows,
        'batched': {'batch': batch, 'mean_layers_per_modality': mean_layers,
                    'total_layers_mixed': int(sum(int(mixed[m].sum()) for m in mods)),
                    'total_layers_uniform': int(sum(int(uniform[m].sum()) for m in mods)),
                    'distinct_masks_per_modality': distinct,
                    'mixed_throughput': round(batch / (mixed_ms / 1000), 2),
                    'uniform_throughput': round(batch / (uniform_ms / 1000), 2)},
    }


def targets(result: dict) -> dict:
    by_budget = {r['budget']: r['latency_ms'] for r in result['batch1']}
    b = result['batched']
    return {'latency_ratio_0.25': round(by_budget[0.25] / by_budget[1.0], 3),
            'throughput_ratio_mixed_over_uniform': round(b['mixed_throughput'] / b['uniform_throughput'], 3)}


def print_table(result: dict) -> None:
    print(f"{'budget':>7} {'layers':>6} {'latency ms':>11} {'GFLOPs':>8}")
    for r in result['batch1']:
        print(f"{r['budget']:>7} {r['layers']:>6} {r['latency_ms']:>11.2f} {r['gflops']:>8.3f}")
    b = result['batched']
    print(f"batch {b['batch']}: mixed {b['mixed_throughput']:.1f} samples/s, "
          f"uniform {b['uniform_throughput']:.1f} samples/s")
    for k, v in result['targets'].items():
        print(f'{k}: {v}')


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', help='model.pt (default: the default config, random weights)')
    p.add_argument('--json', required=True)
    p.add_argument('--runs', type=int, default=50)
    args = p.parse_args(argv)
    if args.checkpoint:
        from admn_ros.fusion.checkpoint import load_checkpoint
        model, _ = load_checkpoint(args.checkpoint)
    else:
        model = ADMNModel(ModelConfig())
    result = run(model.eval(), runs=args.runs)
    result['targets'] = targets(result)
    with open(args.json, 'w') as f:
        json.dump(result, f, indent=2)
    print_table(result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
