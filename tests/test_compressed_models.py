"""Pruned and collapsed checkpoints load wherever a checkpoint does: evaluation and the fusion engine."""
import numpy as np
import pytest

from admn_ros.fusion.collapse import collapse_checkpoint
from admn_ros.fusion.prune import export_pruned
from tests.fixtures_models import make_random_checkpoint, sample_frame


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A pruned (2 of 4 blocks, every other) and a collapsed (last block of each encoder, merged
    without training) version of a tiny model with a controller."""
    d = tmp_path_factory.mktemp('compressed')
    src = make_random_checkpoint(d / 'src.pt', controller=True)
    export_pruned(src, d / 'pruned.pt', 2, 'every_other')
    collapse_checkpoint(src, d / 'collapsed.pt', blocks=1, rounds=1, epochs=0)
    return {'source': src, 'pruned': d / 'pruned.pt', 'collapsed': d / 'collapsed.pt'}


@pytest.mark.parametrize('kind', ['pruned', 'collapsed'])
def test_the_fusion_engine_runs_them_under_a_budget(exported, kind):
    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.runtime.engine import EngineConfig, FusionEngine
    from admn_ros.runtime.frame_queue import Frame
    engine = FusionEngine(EngineConfig(model_path=str(exported[kind]), policy='admn', device='cpu'))
    inf = engine.infer(Frame(stamp_ns=1, frame_id='camera', data=sample_frame(0)), Budget(0.5))
    depth = 2 if kind == 'pruned' else 4
    assert engine.depth == depth and all(len(k) == depth for k in inf.keep.values())
    assert sum(inf.layers.values()) == 3 * depth // 2 and np.isclose(inf.probs.sum(), 1.0)
    expected = engine.cost.total_flops({m: inf.keep[m][None] for m in inf.present})[0] + engine.controller_flops
    assert inf.gflops == pytest.approx(expected / 1e9)
    if kind == 'collapsed':   # the collapsed block is cheaper and the cost model knows it
        assert engine.cost.block_costs['rgb'][3] < engine.cost.block_costs['rgb'][0]


@pytest.mark.parametrize('kind', ['pruned', 'collapsed'])
@pytest.mark.slow
def test_evaluation_scores_them(exported, kind):
    from admn_ros.quality_estimators.evaluate import evaluate
    res = evaluate(str(exported[kind]), None, [0.5, 1.0], ['admn', 'full'], size=24, device='cpu')
    assert len(res['results']) == 4 and all(0 <= r['metric'] <= 1 for r in res['results'])


def test_the_commands_write_what_they_say(exported, tmp_path, capsys):
    import json

    from admn_ros.cli import main
    from admn_ros.fusion.checkpoint import load_checkpoint
    src = str(exported['source'])
    assert main(['prune', '--checkpoint', src, '--keep', '3', '--out', str(tmp_path / 'p.pt')]) == 0
    assert load_checkpoint(tmp_path / 'p.pt')[0].depth == 3
    assert main(['collapse', '--checkpoint', src, '--out', str(tmp_path / 'c.pt'), '--blocks', '2',
                 '--epochs', '0']) == 0
    assert all(e.collapsed_blocks == (2, 3) for e in load_checkpoint(tmp_path / 'c.pt')[0].cfg.encoders.values())
    assert main(['robustness', '--checkpoint', str(tmp_path / 'c.pt'), '--size', '16', '--orders', '2',
                 '--json', str(tmp_path / 'r.json')]) == 0
    res = json.loads((tmp_path / 'r.json').read_text())['accuracy']
    assert set(res) == {'natural', 'shuffled', 'faults', 'shuffled_faults'} and res['shuffled']['runs'] == 2
    md = (tmp_path / 'r.md').read_text(encoding='utf-8')   # the table beside the JSON, from its numbers
    assert f"| shuffled | {res['shuffled']['mean']:.3f} ± {res['shuffled']['std']:.3f} |" in md
    assert main(['prune', '--checkpoint', src, '--keep', '9', '--out', str(tmp_path / 'x.pt')]) == 2
    assert 'keep 9 exceeds the model depth 4' in capsys.readouterr().err   # one line, no traceback
