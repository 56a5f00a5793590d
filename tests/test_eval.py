"""``admn eval``: the JSON schema the controller issue fixes, the clean/corrupted test sets, the plots."""
import json

import numpy as np
import pytest

from tests.fixtures_models import make_random_checkpoint


@pytest.fixture(scope='module')
def controller_checkpoint(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp('eval') / 'ctrl.pt', controller=True)


def _run(args):
    from admn_ros.cli import main
    return main(['eval', *args])


def test_eval_writes_the_documented_json_table_and_plots(controller_checkpoint, tmp_path, capsys):
    out, plot, alloc = tmp_path / 'r.json', tmp_path / 'r.png', tmp_path / 'a.png'
    assert _run(['--checkpoint', str(controller_checkpoint), '--dataset', 'synthetic', '--size', '24',
                 '--budgets', '0.25,1.0', '--policies', 'admn,naive,full', '--json', str(out),
                 '--plot', str(plot), '--allocation-plot', str(alloc)]) == 0
    report = json.loads(out.read_text())
    assert report['budget_unit'] == 'layers' and report['corruption'] == 'standard'
    assert report['test_size'] == 24
    cells = {(r['policy'], r['budget']): r for r in report['results']}
    assert set(cells) == {(p, b) for p in ('admn', 'naive', 'full') for b in (0.25, 1.0)}
    for r in report['results']:
        assert set(r) >= {'policy', 'budget', 'metric', 'gflops', 'layers'}
        assert 0.0 <= r['metric'] <= 1.0 and r['gflops'] > 0
    # 4 layers per modality: a quarter of 12 layers is 3 in all; full runs all 12 at any budget.
    assert sum(cells[('naive', 0.25)]['layers'].values()) == pytest.approx(3.0)
    assert sum(cells[('full', 0.25)]['layers'].values()) == pytest.approx(12.0)
    assert cells[('naive', 0.25)]['gflops'] < cells[('naive', 1.0)]['gflops']
    # The controller's own cost is counted on top of the same layers.
    assert cells[('admn', 1.0)]['gflops'] > cells[('naive', 1.0)]['gflops']
    for png in (plot, alloc):
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    table = capsys.readouterr().out
    assert 'naive' in table and '0.25' in table


def test_clean_and_corrupted_test_sets_are_the_same_split(tmp_path, monkeypatch):
    from admn_ros.quality_estimators.evaluate import corrupted_test_set
    clean = corrupted_test_set('synthetic', size=32, clean=True)
    mixed = corrupted_test_set('synthetic', size=32)
    np.testing.assert_array_equal(clean['label'], mixed['label'])
    for m in ('rgb', 'depth', 'audio'):
        assert not clean[f'severity_{m}'].any() and not clean[f'ctype_{m}'].any()
    corrupted = np.stack([mixed[f'severity_{m}'] > 0 for m in ('rgb', 'depth', 'audio')])
    assert corrupted.any()
    # Where the mix left a modality clean, its data equals the clean set's.
    row = np.flatnonzero(~corrupted[0])[0]
    np.testing.assert_array_equal(clean['rgb'][row], mixed['rgb'][row])
    # Cached on disk: a second call returns equal arrays.
    again = corrupted_test_set('synthetic', size=32)
    np.testing.assert_array_equal(again['audio'], mixed['audio'])


def test_corrupted_folder_test_set_follows_the_files(tmp_path):
    # Data read from files has no generator version: the cache must notice new contents.
    import shutil

    from admn_ros.datasets.folder import write_folder
    from admn_ros.datasets.registry import load_dataset
    from admn_ros.datasets.sample import take
    from admn_ros.quality_estimators.evaluate import corrupted_test_set
    loaded = load_dataset('tensors', 'test')
    source, names = loaded.arrays, loaded.class_names
    root = tmp_path / 'recordings'
    write_folder(root, 'test', take(source, slice(0, 6)), names)
    first = corrupted_test_set(f'folder:{root}')
    assert len(first['label']) == 6
    shutil.rmtree(root / 'test')
    write_folder(root, 'test', take(source, slice(6, 16)), names)
    second = corrupted_test_set(f'folder:{root}')
    assert len(second['label']) == 10
    np.testing.assert_array_equal(second['label'], source['label'][6:16])
