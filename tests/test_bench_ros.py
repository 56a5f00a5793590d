"""`admn bench ros`: the three-node graph across processes, measured end to end.

A tiny untrained controller checkpoint keeps start-up short; what is checked is the benchmark's
contract (its JSON keys, every node exiting cleanly) and that its numbers hang together.
"""
import json

import pytest

from admn_ros.benchmarks import ros_graph
from tests.fixtures_models import make_random_checkpoint


@pytest.mark.ros
def test_bench_ros_measures_the_graph_across_processes(tmp_path):
    checkpoint = make_random_checkpoint(tmp_path / 'ctrl.pt', controller=True)
    out = tmp_path / 'ros.json'
    assert ros_graph.main(['--rate', '10', '--seconds', '3', '--json', str(out), '--quiet',
                           '--checkpoint', str(checkpoint), '--dataset-size', '8']) == 0
    r = json.loads(out.read_text())
    assert set(ros_graph.KEYS) <= set(r)
    assert r['policy'] == 'admn' and r['rate_hz'] == 10.0
    assert all(code == 0 for code in r['exit_codes'].values()), r['exit_codes']
    assert r['predictions'] >= 15 and 5.0 < r['received_hz'] < 15.0
    assert r['drops'] <= 1                      # a slow start under a busy test run, at most
    assert r['model_ms_p50'] > 0 and r['policy_ms_p50'] > 0
    # Per frame: latency >= overhead >= intake and preprocessing, so the medians keep that order.
    assert r['latency_ms_p50'] >= r['overhead_ms_p50'] >= r['intake_ms_p50'] > 0
    assert r['overhead_ms_p50'] >= r['preprocess_ms_p50'] > 0
    assert r['overhead_ms_p95'] >= r['overhead_ms_p50']
    md = out.with_suffix('.md').read_text()          # the table beside the JSON, from its numbers
    assert f"| received_hz | {r['received_hz']} |" in md and f"| model_ms_p50 | {r['model_ms_p50']} |" in md
