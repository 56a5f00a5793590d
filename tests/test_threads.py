"""The thread rule (admn_ros.fusion.threads): documented counts for given core sets, overrides."""
import os
import subprocess
import sys

import pytest

from admn_ros.fusion.threads import apply_threads, choose_threads, thread_summary

NO_ENV = {}


@pytest.mark.parametrize('cores,sharers,workload,intra', [
    (1, 1, 'latency', 1), (2, 1, 'latency', 1), (3, 1, 'latency', 1),      # share < 4: one thread
    (4, 1, 'latency', 2), (8, 1, 'latency', 4), (64, 1, 'latency', 4),     # share // 2, at most 4
    (16, 2, 'latency', 4), (16, 4, 'latency', 2), (16, 8, 'latency', 1),   # fair share first
    (2, 1, 'throughput', 1), (4, 1, 'throughput', 3), (16, 1, 'throughput', 15),
    (16, 2, 'throughput', 7), (8, 4, 'throughput', 1),
])
def test_rule_counts(cores, sharers, workload, intra):
    plan = choose_threads(workload, cores=cores, sharers=sharers, env=NO_ENV)
    assert (plan.intra_op, plan.inter_op, plan.blas, plan.source) == (intra, 1, 1, 'rule')


def test_overrides_and_environment():
    assert choose_threads(override=3, cores=2, env={'OMP_NUM_THREADS': '2'}).intra_op == 3
    plan = choose_threads(cores=16, env={'OMP_NUM_THREADS': '2'})
    assert (plan.intra_op, plan.source) == (2, 'env')
    plan = choose_threads(cores=16, env={'ADMN_THREADS': '5', 'OMP_NUM_THREADS': '2'})
    assert (plan.intra_op, plan.source) == (5, 'override')
    assert choose_threads(override=0, cores=16, env=NO_ENV).source == 'rule'
    # Sharers from the environment: ADMN_MODEL_PROCESSES, else torchrun's ranks on this machine.
    assert choose_threads('throughput', cores=16, env={'LOCAL_WORLD_SIZE': '4'}).intra_op == 3
    assert choose_threads(cores=16, env={'ADMN_MODEL_PROCESSES': '8',
                                         'LOCAL_WORLD_SIZE': '1'}).intra_op == 1


@pytest.mark.parametrize('kwargs,env', [
    ({'override': -1}, NO_ENV), ({'workload': 'fast'}, NO_ENV), ({'cores': 0}, NO_ENV),
    ({}, {'ADMN_MODEL_PROCESSES': 'two'}), ({}, {'ADMN_MODEL_PROCESSES': '0'}),
    ({}, {'ADMN_THREADS': '-2'}),
])
def test_bad_settings_are_refused(kwargs, env):
    with pytest.raises(ValueError):
        choose_threads(env=env, **kwargs)


def test_rule_reads_the_affinity():
    """The default core count is the process's affinity, not the machine's: pinned to one core,
    the rule gives one thread whatever the machine has."""
    code = ('import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); '
            'from admn_ros.fusion.threads import available_cores, choose_threads; '
            'print(available_cores(), choose_threads("throughput", env={}).intra_op)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['1', '1']


@pytest.mark.slow
def test_apply_sets_torch_and_the_native_pools():
    """In a fresh process (so torch's inter-op pool is still unsized): torch, OpenBLAS (numpy's,
    via threadpoolctl) and OpenCV all get the planned counts."""
    code = ('import numpy, json; from admn_ros.fusion.threads import apply_threads, choose_threads; '
            'print(json.dumps(apply_threads(choose_threads(override=2, env={}))))')
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'ADMN_THREADS')}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         env=env)
    import json
    applied = json.loads(out.stdout)
    assert (applied['torch_intra_op'], applied['torch_inter_op']) == (2, 1)
    pools = applied['native_pools']
    assert pools['opencv'] == 1
    blas = [n for name, n in pools.items() if 'openblas' in name]
    assert blas and all(n == 1 for n in blas)
    assert '2 intra-op / 1 inter-op / 1 BLAS (override' in thread_summary(applied)


def test_apply_in_this_process_keeps_the_intra_count():
    import torch
    before = torch.get_num_threads()
    try:
        applied = apply_threads(choose_threads(override=1, env=NO_ENV))
        assert torch.get_num_threads() == applied['torch_intra_op'] == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_cli_threads_reach_the_latency_bench(tmp_path, monkeypatch):
    """``admn bench latency --threads 2``: the override is in force and reported, with the
    layer-0-only latency and the fixed-cost breakdown."""
    import json

    import torch

    from admn_ros.cli import main
    from tests.fixtures_models import make_random_checkpoint
    monkeypatch.delenv('ADMN_THREADS', raising=False)   # main() sets it; restored afterwards
    checkpoint = make_random_checkpoint(tmp_path / 'model.pt')
    out = tmp_path / 'latency.json'
    before = torch.get_num_threads()
    try:
        assert main(['bench', 'latency', '--checkpoint', str(checkpoint), '--json', str(out),
                     '--runs', '3', '--threads', '2']) == 0
    finally:
        torch.set_num_threads(before)
    result = json.loads(out.read_text())
    assert (result['threads']['intra_op'], result['threads']['source']) == (2, 'override')
    assert result['threads']['torch_intra_op'] == 2
    # Reported, not judged: timings on a shared machine belong to the benchmark's table, and a
    # busy moment once made layer 0 twelve times slower than full depth here.
    assert result['layer0_ms'] > 0 and result['targets']['latency_ratio_layer0'] > 0
    fixed = result['fixed_cost_cpu_ms']
    assert min(fixed[k] for k in ('whole_no_block', 'encoders_no_block', 'patch_embed')) > 0
    md = out.with_suffix('.md').read_text()          # the table beside the JSON, from its numbers
    full = result['batch1'][-1]
    assert f"| 1 | {full['layers']} | {full['latency_ms']:.2f} | {full['gflops']:.3f} |" in md
    assert 'override' in md                             # the threads that ran
