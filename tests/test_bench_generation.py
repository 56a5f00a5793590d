"""The generation benchmark: its stage clock must account for the run and leave the generator intact."""
import json

from admn_ros.benchmarks import generation
from admn_ros.datasets import synthetic


def test_stage_breakdown_adds_up_and_restores_the_generator():
    before = {name: getattr(synthetic, name) for names in generation.STAGES.values() for name in names}
    stages = generation.stage_breakdown(64)
    assert set(stages) == {*generation.STAGES, 'other', 'total'}
    assert all(stages[s] > 0 for s in generation.STAGES)
    assert abs(sum(stages[s] for s in (*generation.STAGES, 'other')) - stages['total']) < 0.01
    for name, fn in before.items():
        assert getattr(synthetic, name) is fn


def test_cli_writes_json_with_throughput_per_worker_count(tmp_path, capsys):
    out = tmp_path / 'g.json'
    assert generation.main(['--samples', '64', '--workers', '1', '2', '--repeats', '1', '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r['workers'] for r in result['throughput']] == [1, 2]
    assert all(r['samples_per_s'] > 0 and r['cpu_ms_per_sample'] > 0 for r in result['throughput'])
    best = max(r['samples_per_s'] for r in result['throughput'])
    assert result['target']['met'] == (best >= generation.TARGET_SAMPLES_PER_S)
    md = out.with_suffix('.md').read_text()          # the table beside the JSON, from its numbers
    for r in result['throughput']:
        assert f"| {r['workers']} | {r['samples_per_s']:.1f} | {r['best_samples_per_s']:.1f} |" in md
    assert f"| total | {result['stages_ms_per_sample']['total']:.3f} |" in md
    assert 'samples/s' in capsys.readouterr().out
