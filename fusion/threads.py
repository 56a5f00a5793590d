"""How many threads torch and the native pools (OpenBLAS, OpenMP, OpenCV) use: one documented rule.

Torch starts one intra-op thread per core it sees, and numpy's OpenBLAS and OpenCV do the same.
For this model that is the wrong default: its ops are small (65 tokens of width 128 at batch 1), so
a second thread saves little, and every op becomes a fork/join that waits for the slowest thread.
When another process holds a core, that thread is descheduled and the op waits a whole scheduler
slice: on the 2-core development machine two torch threads were never faster than one at batch 1,
and on a busy machine they turned a 20 ms frame into p95 above a second (docs/results.md). The rule:

    cores   = len(os.sched_getaffinity(0))        the cores this process may run on
    sharers = model processes that share them      (ADMN_MODEL_PROCESSES, LOCAL_WORLD_SIZE, else 1)
    share   = max(1, cores // sharers)             this process's fair share
    intra   = 1                        if share < 4   (fork/join costs more than it saves)
              min(MAX_LATENCY, share // 2)  'latency' work: batch-1 inference in the nodes, benches
              share - 1                     'throughput' work: training and evaluation batches
                                            (one core left for data preparation and the OS)
    inter   = 1                        the model has no independent branches for a second pool
    blas    = 1                        numpy/OpenCV calls in preprocessing are small; a BLAS pool
                                       next to a busy process stalls like torch's (measured: 14 ms p99)

An explicit count wins (the node's ``threads`` parameter; ``--threads N`` of the ``admn`` commands,
which sets ``ADMN_THREADS`` for the process); else a set ``OMP_NUM_THREADS`` is taken as the user's
choice for intra-op threads; else the rule.
:func:`apply_threads` sets torch, the OpenMP and BLAS pools already loaded (threadpoolctl, when
installed) and OpenCV, and returns what is now in force, for ``/diagnostics`` and the benchmarks.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional

WORKLOADS = ('latency', 'throughput')
MAX_LATENCY = 4          # batch-1 ops of this model stop gaining from more threads well before this
MIN_SHARE_FOR_THREADS = 4
SHARERS_ENV = 'ADMN_MODEL_PROCESSES'
THREADS_ENV = 'ADMN_THREADS'


@dataclass(frozen=True)
class ThreadPlan:
    """What the rule chose (or what was asked for) and from what."""

    intra_op: int
    inter_op: int
    blas: int
    cores: int
    sharers: int
    workload: str
    source: str       # 'rule', 'override' (--threads / parameter) or 'env' (OMP_NUM_THREADS)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def sharers_from_env(env: Mapping[str, str]) -> int:
    """Model processes on these cores: ``ADMN_MODEL_PROCESSES``, else torchrun's
    ``LOCAL_WORLD_SIZE`` (ranks on this machine), else 1."""
    for key in (SHARERS_ENV, 'LOCAL_WORLD_SIZE'):
        value = env.get(key, '').strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                raise ValueError(f'{key} must be a whole number of processes, got {value!r}') from None
            if n < 1:
                raise ValueError(f'{key} must be >= 1, got {n}')
            return n
    return 1


def choose_threads(workload: str = 'latency', *, override: Optional[int] = None,
                   cores: Optional[int] = None, sharers: Optional[int] = None,
                   env: Optional[Mapping[str, str]] = None) -> ThreadPlan:
    """The thread counts for this process (module docstring). ``override`` > 0 wins, then
    ``ADMN_THREADS``, then ``OMP_NUM_THREADS``; 0 or None means "choose"; ``cores`` / ``sharers``
    default to the affinity and the environment."""
    if workload not in WORKLOADS:
        raise ValueError(f'workload must be one of {WORKLOADS}, got {workload!r}')
    env = os.environ if env is None else env
    cores = available_cores() if cores is None else int(cores)
    sharers = sharers_from_env(env) if sharers is None else int(sharers)
    if cores < 1 or sharers < 1:
        raise ValueError(f'cores and sharers must be >= 1, got {cores} and {sharers}')
    if override is not None and int(override) < 0:
        raise ValueError(f'threads must be >= 0 (0 = choose by the rule), got {override}')
    if not override and env.get(THREADS_ENV, '').strip():
        value = env[THREADS_ENV].strip()
        if not value.isdigit():
            raise ValueError(f'{THREADS_ENV} must be a whole number >= 0, got {value!r}')
        override = int(value)
    plan = dict(inter_op=1, blas=1, cores=cores, sharers=sharers, workload=workload)
    if override:
        return ThreadPlan(intra_op=int(override), source='override', **plan)
    omp = env.get('OMP_NUM_THREADS', '').strip()
    if omp.isdigit() and int(omp) > 0:
        return ThreadPlan(intra_op=int(omp), source='env', **plan)
    share = max(1, cores // sharers)
    if share < MIN_SHARE_FOR_THREADS:
        intra = 1
    elif workload == 'latency':
        intra = min(MAX_LATENCY, share // 2)
    else:
        intra = share - 1
    return ThreadPlan(intra_op=intra, source='rule', **plan)


def apply_threads(plan: ThreadPlan) -> Dict[str, Any]:
    """Put ``plan`` in force in this process; returns the plan plus the counts now in effect.

    Torch's inter-op pool can only be sized before its first use; when it is too late the count
    in force is reported as it is. Libraries loaded after this call start with their own default,
    so processes call it once their heavy imports are done (the nodes: after loading the model).
    """
    import torch
    limited = limit_native_pools(plan.blas, openmp=plan.intra_op)
    torch.set_num_threads(plan.intra_op)   # after threadpoolctl: torch's own OpenMP pool
    if torch.get_num_interop_threads() != plan.inter_op:
        try:
            torch.set_num_interop_threads(plan.inter_op)
        except RuntimeError:   # the pool already ran something; keep what it has
            pass
    return {**plan.as_dict(), 'torch_intra_op': torch.get_num_threads(),
            'torch_inter_op': torch.get_num_interop_threads(), 'native_pools': limited}


def limit_native_pools(blas: int = 1, openmp: Optional[int] = None) -> Dict[str, int]:
    """Limit the BLAS (and OpenMP) pools of the libraries loaded so far, and OpenCV's.

    Returns ``{library prefix or 'opencv': threads}`` for what was limited. Without threadpoolctl
    only OpenCV is limited (numpy's OpenBLAS then keeps its default)."""
    limited: Dict[str, int] = {}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        limits = {'blas': int(blas)}
        if openmp is not None:
            limits['openmp'] = int(openmp)
        threadpool_limits(limits=limits)   # stays in force: not used as a context manager
        for pool in threadpool_info():
            limited[pool['prefix']] = int(pool['num_threads'])
    try:
        import cv2
    except ImportError:
        return limited
    cv2.setNumThreads(int(blas))
    limited['opencv'] = int(cv2.getNumThreads())
    return limited


def thread_summary(applied: Mapping[str, Any]) -> str:
    """One line for logs and tables: ``1 intra-op / 1 inter-op / 1 BLAS (rule: 2 cores, 1 model process)``."""
    return (f"{applied['intra_op']} intra-op / {applied['inter_op']} inter-op / {applied['blas']} BLAS "
            f"({applied['source']}: {applied['cores']} cores, {applied['sharers']} model "
            f"process{'es' if applied['sharers'] != 1 else ''})")
