"""`admn bench contention`: the node graph under bounded local load, in the issue's JSON schema."""
import json
import time

import pytest

from admn_ros.benchmarks import contention
from tests.fixtures_models import make_random_checkpoint


def test_summary_counts_late_and_unanswered_frames():
    """Misses = frames over the deadline plus frames the node never answered (gaps in the source's
    stamp sequence at the known rate); only frames stamped inside the window count."""
    period = 50_000_000   # 20 Hz
    stamps = [0, 1, 2, 3, 6, 7, 8, 9, 12]          # 4 and 5 missing, 10 and 11 missing
    timeline = [{'stamp_ns': s * period, 'latency_ms': 50.0 if s == 7 else 20.0,
                 'correct': s % 3 != 0, 'budget': 0.5} for s in stamps]
    timeline.append({'stamp_ns': 99 * period, 'latency_ms': 999.0, 'correct': True, 'budget': 1.0})
    pieces = [{'window': (0, 12 * period), 'timeline': timeline, 'loadavg': [1.0, 1.5]},
              {'window': (98 * period, 100 * period), 'timeline': timeline}]   # a second round
    out = contention.summarise(pieces, 20.0, 40.0, mode='deadline', load_cores=1)
    r, d = out['result'], out['details']
    assert list(r) == list(contention.RESULT_KEYS)
    assert (d['frames'], d['unanswered'], d['late']) == (10, 4, 2)
    assert r['deadline_miss_pct'] == round(100 * 6 / 14, 2)
    assert r['accuracy'] == round(5 / 10, 3) and r['mean_budget'] == 0.55   # 1, 2, 7, 8, 99
    assert d['loadavg_1min'] == [[1.0, 1.5], []]
    assert r['latency_ms_p50'] == 20.0 and r['latency_ms_p99'] > r['latency_ms_p95'] > 20.0


@pytest.mark.slow
def test_load_generators_are_bounded():
    """A busy loop burns a core while it runs and ends by itself at its end time."""
    import psutil
    gen = contention.LoadGenerators(1, time.time() + 4.0, checkpoint='', device='cpu').start()
    try:
        (proc,) = gen.procs
        ps = psutil.Process(proc.pid)
        assert gen.ready.wait(30.0)
        before = ps.cpu_times().user
        time.sleep(0.5)
        assert ps.cpu_times().user - before > 0.05   # spinning (a share of a core on a busy machine)
        proc.join(10.0)
        assert not proc.is_alive()              # stopped at its end time, nobody killed it
    finally:
        gen.stop()
    with pytest.raises(ValueError):
        contention.LoadGenerators(3, time.time(), checkpoint='')


@pytest.mark.ros
@pytest.mark.slow
def test_bench_contention_runs_a_short_case_end_to_end(tmp_path):
    checkpoint = make_random_checkpoint(tmp_path / 'ctrl.pt', controller=True)
    out = tmp_path / 'contention.json'
    assert contention.main(['--json', str(out), '--seconds', '3', '--rounds', '1',
                            '--modes', 'deadline', '--load-cores', '0,2', '--fixed-budgets', '0.5',
                            '--quiet',
                            '--checkpoint', str(checkpoint), '--dataset-size', '8',
                            '--rate', '10', '--deadline-ms', '60']) == 0
    data = json.loads(out.read_text())
    assert data['deadline_ms'] == 60.0
    assert [(r['mode'], r['load_cores']) for r in data['results']] == [('deadline', 0),
                                                                       ('deadline', 2)]
    for r in data['results']:
        assert list(r) == list(contention.RESULT_KEYS)
        assert 0 < r['latency_ms_p50'] <= r['latency_ms_p95'] <= r['latency_ms_p99']
        assert 0.0 <= r['deadline_miss_pct'] <= 100.0
        assert 0.0 <= r['accuracy'] <= 1.0
        assert 0.25 <= r['mean_budget'] <= 1.0       # the deadline rule's bounds
    assert [(f['budget'], f['load_cores'], f['mean_budget']) for f in data['fixed']] == [
        (0.5, 0, 0.5), (0.5, 2, 0.5)]
    assert [d['frames'] for d in data['details']] and all(d['frames'] >= 10 for d in data['details'])
    assert data['machine']['cores'] >= 1 and len(data['machine']['loadavg_at_start']) == 3
    md = out.with_suffix('.md').read_text()          # the table beside the JSON, from its numbers
    r, f = data['results'][1], data['fixed'][0]
    assert (f"| deadline | 2 | {r['latency_ms_p50']:.1f} | {r['latency_ms_p95']:.1f} "
            f"| {r['latency_ms_p99']:.1f} | {r['deadline_miss_pct']:.1f} |") in md
    assert f"| budget 0.5 | 0 | {f['latency_ms_p50']:.1f} |" in md
