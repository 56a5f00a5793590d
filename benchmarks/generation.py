"""Generation speed of the embedded synthetic world (target: >= 500 samples/s on 2 cores).

    admn bench generation [--samples 512] [--workers 1 2] [--json generation.json]
    python -m admn_ros.benchmarks.generation [--samples N] [--workers W ...] [--json OUT]

* ``throughput``: samples/s of ``datasets.synthetic.generate`` per thread count (median and best
  of ``--repeats`` runs after a warm-up of the same size), and CPU ms per sample (process time
  over all threads, which a busy machine inflates far less than wall time).
* ``stages``: wall ms per sample, single-threaded, of scene sampling (scene and sound
  parameters), rendering (mesh, ray casting, shading), sound synthesis, and the rest (noise draws,
  bookkeeping).

The CPU count and load average are recorded with the result: on a shared machine samples/s
depends on them as much as on the code.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from typing import Dict, Iterator, List, Optional, Sequence

from admn_ros.benchmarks.report import write_result
from admn_ros.datasets import synthetic

TARGET_SAMPLES_PER_S = 500.0   # at the default config on 2 cores (docs/model.md)
# Stage name -> the stage functions generate() calls through admn_ros.datasets.synthetic's names
# (wrapping them there times them).
STAGES = {'scene sampling': ('sample_scenes', 'sample_sounds'), 'rendering': ('render',),
          'sound': ('synthesise',)}


def machine() -> dict:
    """CPUs this process may use and the 1 / 5 / 15 minute load averages, right now."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return {'cpu_count': os.cpu_count(), 'usable_cpus': usable,
            'load_average': [round(x, 2) for x in os.getloadavg()]}


def throughput(samples: int, workers: int, repeats: int, seed: int = 0) -> dict:
    """samples/s (median, best) and CPU ms per sample of ``generate(samples, workers=workers)``."""
    synthetic.generate(samples, seed=seed, workers=workers)      # warm-up: imports, allocator, caches
    rates, cpu_ms = [], []
    for r in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        synthetic.generate(samples, seed=seed + 1 + r, workers=workers)
        cpu_ms.append(1000 * (time.process_time() - cpu) / samples)
        rates.append(samples / (time.perf_counter() - wall))
    return {'workers': workers, 'samples_per_s': round(statistics.median(rates), 1),
            'best_samples_per_s': round(max(rates), 1), 'cpu_ms_per_sample': round(statistics.median(cpu_ms), 3)}


@contextlib.contextmanager
def _stage_clock(seconds: Dict[str, float]) -> Iterator[None]:
    """Time the generator's stage functions (wrapped in place, restored on exit) into ``seconds``."""
    originals = {}
    for stage, names in STAGES.items():
        for name in names:
            originals[name] = fn = getattr(synthetic, name)

            def timed(*args, _fn=fn, _stage=stage, **kwargs):
                start = time.perf_counter()
                try:
                    return _fn(*args, **kwargs)
                finally:
                    seconds[_stage] += time.perf_counter() - start
            setattr(synthetic, name, timed)
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(synthetic, name, fn)


def stage_breakdown(samples: int, seed: int = 0, warm: bool = True) -> Dict[str, float]:
    """Wall ms per sample of each stage in one single-threaded run (after a warm-up unless
    ``warm=False``: the process has generated already)."""
    if warm:
        synthetic.generate(samples, seed=seed, workers=1)
    seconds = {stage: 0.0 for stage in STAGES}
    with _stage_clock(seconds):
        start = time.perf_counter()
        synthetic.generate(samples, seed=seed + 1, workers=1)
        total = time.perf_counter() - start
    seconds['other'] = total - sum(seconds.values())
    seconds['total'] = total
    return {stage: round(1000 * s / samples, 3) for stage, s in seconds.items()}


def run(samples: int = 512, workers: Sequence[int] = (1, 2), repeats: int = 3) -> dict:
    if samples < 1 or repeats < 1 or any(w < 1 for w in workers):
        raise ValueError(f'samples, repeats and workers must be >= 1, got {samples}, {repeats}, {list(workers)}')
    cfg = synthetic.SyntheticConfig()
    before = machine()
    rows = [throughput(samples, w, repeats) for w in workers]
    stages = stage_breakdown(samples, warm=False)   # throughput() warmed this process up
    after = machine()
    best = max(r['samples_per_s'] for r in rows)
    return {
        'config': {'samples': samples, 'repeats': repeats, 'image_size': cfg.image_size,
                   'audio_length': cfg.audio_length, 'generator_version': synthetic.GENERATOR_VERSION},
        'machine': {'cpu_count': before['cpu_count'], 'usable_cpus': before['usable_cpus'],
                    'load_average_before': before['load_average'], 'load_average_after': after['load_average']},
        'throughput': rows,
        'stages_ms_per_sample': stages,
        'target': {'samples_per_s': TARGET_SAMPLES_PER_S, 'best_median_samples_per_s': best,
                   'met': best >= TARGET_SAMPLES_PER_S},
    }


def generation_table(result: dict) -> str:
    """Machine, samples/s per thread count, ms per stage and the target, as markdown."""
    m, t = result['machine'], result['target']
    lines = [f"{m['usable_cpus']} usable CPUs ({m['cpu_count']} online); load average "
             f"{'/'.join(map(str, m['load_average_before']))} before, "
             f"{'/'.join(map(str, m['load_average_after']))} after", '',
             '| workers | samples/s (median) | samples/s (best) | CPU ms/sample |', '|---|---|---|---|']
    lines += [f"| {r['workers']} | {r['samples_per_s']:.1f} | {r['best_samples_per_s']:.1f} "
              f"| {r['cpu_ms_per_sample']:.3f} |" for r in result['throughput']]
    lines += ['', '| stage (1 worker) | ms/sample |', '|---|---|']
    lines += [f'| {stage} | {ms:.3f} |' for stage, ms in result['stages_ms_per_sample'].items()]
    lines += ['', f"target >= {t['samples_per_s']:.0f} samples/s: {'met' if t['met'] else 'NOT met'} "
                  f"(best median {t['best_median_samples_per_s']:.1f})"]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='admn bench generation', description=__doc__.splitlines()[0])
    p.add_argument('--samples', type=int, default=512, help='samples per timed run (default 512)')
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2], help='thread counts to time (default 1 2)')
    p.add_argument('--repeats', type=int, default=3, help='timed runs per thread count (default 3)')
    p.add_argument('--json', help='also write the result here (and a .md table beside it)')
    args = p.parse_args(argv)
    result = run(args.samples, args.workers, args.repeats)
    table = generation_table(result)
    if args.json:
        write_result(result, args.json, table)
    print(json.dumps(result, indent=2))
    print(table)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
