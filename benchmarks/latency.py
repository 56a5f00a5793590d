"""Latency and throughput of the adaptive-depth model against the layer budget.

    admn bench latency [--checkpoint model.pt] --json latency.json

* ``batch1``: median batch-1 latency and analytic GFLOPs at budget fractions of the total layers,
  layers spread evenly over modalities (and evenly spaced within each).
* ``layer0_ms``: batch-1 latency when each modality runs only its layer 0 (the smallest allocation
  any policy makes): the model's fixed cost plus three blocks.
* ``fixed_cost_cpu_ms``: where the batch-1 time goes when no block runs, part by part (patch
  embeddings, the rest of the encoders without blocks, adapters, fusion, head; and one encoder block
  for scale), as the median *CPU* time of this thread: unlike wall time it does not count the
  moments the process waits for a core, so it stays comparable on a shared machine.
* ``batched``: samples/s at batch 32 when every sample has its own random allocation ("mixed")
  versus one shared allocation with the same mean depth ("uniform").

Targets (ratios, so a noisy shared machine still gives a meaningful answer): latency at 0.25 is at
most 0.35x latency at 1.0; mixed throughput is at least 0.8x uniform. ``--threads N`` overrides
the thread rule (:mod:`admn_ros.fusion.threads`); ``threads`` in the JSON says what ran.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List, Optional

import torch

from admn_ros.benchmarks.report import write_result
from admn_ros.fusion.checkpoint import load_checkpoint
from admn_ros.fusion.config import ModelConfig
from admn_ros.fusion.flops import CostModel
from admn_ros.fusion.layerdrop import evenly_spaced_mask
from admn_ros.fusion.model import ADMNModel
from admn_ros.fusion.threads import apply_threads, choose_threads, thread_summary

BUDGETS = (0.25, 0.33, 0.5, 0.75, 1.0)


def even_allocation(modalities, depth: int, fraction: float) -> Dict[str, torch.Tensor]:
    """Split ``floor(fraction * total layers)`` evenly over modalities, evenly spaced in each
    (floor: a budget is a strict upper bound, as everywhere else)."""
    total = int(fraction * depth * len(modalities) + 1e-9)
    counts = [total // len(modalities) + (i < total % len(modalities)) for i in range(len(modalities))]
    return {m: evenly_spaced_mask(k, depth) for m, k in zip(modalities, counts)}


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


def _median_cpu_ms(fn, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return 1000 * statistics.median(times)


@torch.inference_mode()
def fixed_cost(model: ADMNModel, runs: int = 100) -> Dict[str, float]:
    """Median CPU ms of each part of the no-block batch-1 forward (see the module docstring)."""
    cfg = model.cfg
    x = random_inputs(cfg, 1, torch.Generator().manual_seed(0))
    none = {m: torch.zeros(1, cfg.depth, dtype=torch.bool) for m in cfg.modalities}
    cls = {m: model.encoders[m](x[m], none[m]) for m in cfg.modalities}
    parts = [model.modality_token(m, x[m], none[m]) for m in cfg.modalities]
    feature = model.fuse(parts, 1)
    tokens = model.encoders[cfg.modalities[0]].patch_embed(x[cfg.modalities[0]])
    tokens = torch.cat([tokens[:, :1], tokens], 1)   # CLS + patches: a block's input shape
    out = {
        'patch_embed': _median_cpu_ms(lambda: [model.encoders[m].patch_embed(x[m])
                                               for m in cfg.modalities], runs),
        'encoders_no_block': _median_cpu_ms(lambda: [model.encoders[m](x[m], none[m])
                                                     for m in cfg.modalities], runs),
        'adapters': _median_cpu_ms(lambda: [model.adapters[m](cls[m]) for m in cfg.modalities], runs),
        'fusion': _median_cpu_ms(lambda: model.fuse(parts, 1), runs),
        'head': _median_cpu_ms(lambda: model.head(feature), runs),
        'whole_no_block': _median_cpu_ms(lambda: model(x, none), runs),
        'one_encoder_block': _median_cpu_ms(
            lambda: model.encoders[cfg.modalities[0]].blocks[0](tokens), runs),
    }
    return {k: round(v, 3) for k, v in out.items()}


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
    layer0 = {m: torch.zeros(1, depth, dtype=torch.bool) for m in mods}
    for k in layer0.values():
        k[0, 0] = True
    layer0_ms = _median_ms(lambda: model(x1, layer0), runs)
    fixed = fixed_cost(model, max(runs, 100))
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
        'layer0_ms': round(layer0_ms, 3),
        'fixed_cost_cpu_ms': fixed,
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
            'latency_ratio_layer0': round(result['layer0_ms'] / by_budget[1.0], 3),
            'throughput_ratio_mixed_over_uniform': round(b['mixed_throughput'] / b['uniform_throughput'], 3)}


def latency_table(result: dict) -> str:
    """Batch-1 latency per budget, the fixed cost, batched throughput and the targets, as markdown."""
    b = result['batched']
    lines = ['| budget | layers | batch-1 ms | GFLOPs |', '|---|---|---|---|']
    lines += [f"| {r['budget']:g} | {r['layers']} | {r['latency_ms']:.2f} | {r['gflops']:.3f} |"
              for r in result['batch1']]
    lines += ['', f"layer 0 only: {result['layer0_ms']:.2f} ms", '',
              '| no block run | CPU ms |', '|---|---|']
    lines += [f'| {k} | {v:.3f} |' for k, v in result['fixed_cost_cpu_ms'].items()]
    lines += ['', f"| batch {b['batch']} | samples/s |", '|---|---|',
              f"| mixed allocations | {b['mixed_throughput']:.1f} |",
              f"| uniform allocation | {b['uniform_throughput']:.1f} |",
              '', f"threads: {thread_summary(result['threads'])}", '']
    lines += [f'- {k}: {v}' for k, v in result['targets'].items()]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', help='model.pt (default: the default config, random weights)')
    p.add_argument('--json', required=True, help='write the results here (and a .md table beside it)')
    p.add_argument('--runs', type=int, default=50)
    p.add_argument('--threads', type=int, default=0, help='torch intra-op threads (0 = the rule)')
    args = p.parse_args(argv)
    threads = apply_threads(choose_threads('latency', override=args.threads))
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
    else:
        model = ADMNModel(ModelConfig())
    result = run(model.eval(), runs=args.runs)
    result['threads'] = threads
    result['targets'] = targets(result)
    table = latency_table(result)
    write_result(result, args.json, table)
    print(table)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
