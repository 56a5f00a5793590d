"""Leave-one-source-out folds (datasets/sources.py) and ``admn eval --folds by-source``."""
import json

import numpy as np
import pytest
import yaml

from admn_ros.cli import main
from admn_ros.datasets import cache as cache_mod
from admn_ros.datasets.registry import load_dataset
from admn_ros.datasets.sources import TENSOR_SOURCES, fold_name, pool_sources, source_folds
from admn_ros.fusion.checkpoint import read_checkpoint
from tests.fixtures_models import avdigits_available, tiny_model_config


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.CACHE_ENV, str(tmp_path / 'cache'))


def _rows(arrays):
    """Each sample's audio as bytes: what identifies a sample across splits."""
    return {a.tobytes() for a in arrays['audio']}


def test_each_source_is_held_out_once_and_never_trained_or_validated_on():
    pooled = pool_sources('tensors')
    folds = source_folds(pooled.sources)
    assert [f.source for f in folds] == list(TENSOR_SOURCES)
    # The test splits partition the samples: every source held out exactly once.
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(len(pooled.sources)))
    for fold in folds:
        trained = np.concatenate([fold.train, fold.val])
        assert fold.source not in set(pooled.sources[trained])
        assert set(pooled.sources[fold.test]) == {fold.source}
        assert len(set(trained) | set(fold.test)) == len(pooled.sources)   # nothing else left out
        assert not set(fold.train) & set(fold.val) and len(fold.val) > 0
        # What the trainers load by the fold's name holds none of the held-out samples.
        name = fold_name(fold.source, 'tensors')
        held_out = _rows(load_dataset(name, 'test').arrays)
        assert held_out == _rows({'audio': pooled.arrays['audio'][fold.test]})
        for split in ('train', 'val'):
            assert not _rows(load_dataset(name, split).arrays) & held_out


@pytest.mark.skipif(not avdigits_available(), reason='AV-digits data (../shared/data) not available')
def test_avdigits_folds_hold_out_whole_speakers():
    from admn_ros.datasets.avdigits import SPEAKER_SPLITS
    pooled = pool_sources('avdigits')
    speakers = sorted(s for group in SPEAKER_SPLITS.values() for s in group)
    assert pooled.names == speakers and len(pooled.sources) == 3000
    for fold in source_folds(pooled.sources):
        assert set(pooled.sources[fold.test]) == {fold.source} and len(fold.test) == 500
        others = set(pooled.sources[fold.train]) | set(pooled.sources[fold.val])
        assert others == set(speakers) - {fold.source}


def test_folder_records_name_their_source(tmp_path):
    from admn_ros.datasets.folder import write_folder
    root = tmp_path / 'robots'
    for split in ('train', 'test'):
        write_folder(root, split, load_dataset('tensors', split, size=12).arrays, ['c0', 'c1', 'c2', 'c3'])
    with pytest.raises(ValueError, match='names no source'):
        load_dataset(f'heldout:robot_0:folder:{root}', 'train')
    for split in ('train', 'test'):
        for i, record in enumerate(sorted((root / split).iterdir())):
            (record / 'meta.yaml').write_text(f'source: robot_{i % 2}\n')
    name = f'heldout:robot_0:folder:{root}'
    pooled = pool_sources(f'folder:{root}')
    assert pooled.names == ['robot_0', 'robot_1'] and len(pooled.sources) == 24
    test = load_dataset(name, 'test')
    assert len(test) == 12 and _rows(test.arrays) == _rows({'audio': pooled.arrays['audio'][pooled.sources == 'robot_0']})
    for split in ('train', 'val'):
        assert not _rows(load_dataset(name, split).arrays) & _rows(test.arrays)


def test_fold_errors_are_one_line():
    with pytest.raises(ValueError, match='names no sources'):
        load_dataset('heldout:x:synthetic', 'train')
    with pytest.raises(ValueError, match="has no source 'z'"):
        load_dataset('heldout:z:tensors', 'train')
    with pytest.raises(ValueError, match='heldout:SOURCE:DATASET'):
        load_dataset('heldout:tensors', 'train')
    with pytest.raises(ValueError, match='at least 2 sources'):
        source_folds(['a', 'a', 'a'])


def _tiny_configs(tmp_path):
    stage1 = {'model': tiny_model_config(num_classes=4),
              'layerdrop': {'max_rate': 0.3, 'warmup_epochs': 0, 'full_drop_prob': 0.0, 'uniform_count': False},
              'augment': {'policy': 'none'}, 'batch_size': 16, 'lr': 0.002, 'weight_decay': 0.0,
              'warmup_steps': 2, 'stem': 'patch', 'search': False}
    controller = {'controller': {'embed_dim': 16, 'transformer_depth': 1, 'heads': 2},
                  'epochs': 1, 'warmup_epochs': 0, 'batch_size': 16}
    paths = []
    for name, cfg in (('stage1', stage1), ('controller', controller)):
        path = tmp_path / f'{name}.yaml'
        path.write_text(yaml.safe_dump(cfg))
        paths.append(str(path))
    return paths


def test_eval_folds_by_source_trains_without_and_scores_on_each_source(tmp_path):
    stage1_yaml, controller_yaml = _tiny_configs(tmp_path)
    out = tmp_path / 'by_source'
    assert main(['eval', '--folds', 'by-source', '--dataset', 'tensors', '--clean',
                 '--stage1-config', stage1_yaml, '--controller-config', controller_yaml,
                 '--epochs', '4', '--controller-epochs', '1', '--budgets', '0.5',
                 '--policies', 'admn,naive', '--device', 'cpu', '--force', '--out', str(out)]) == 0
    report = json.loads((out / 'by_source.json').read_text())
    assert [f['source'] for f in report['folds']] == list(TENSOR_SOURCES)
    table = (out / 'by_source.md').read_text()
    assert table.count('\n| ') == len(TENSOR_SOURCES) + 1   # a row per fold and the mean
    for fold in report['folds']:
        name = fold_name(fold['source'], 'tensors')
        # Both trained stages say which data they saw: the fold, never the whole dataset.
        stage1 = read_checkpoint(out / fold['source'] / 'stage1' / 'model.pt')['extra']
        assert stage1['dataset'] == name and stage1['train_config']['data']['dataset'] == name
        ctrl = read_checkpoint(out / fold['source'] / 'controller' / 'controller.pt')['extra']
        assert ctrl['stage'] == 'controller' and ctrl['controller_train_config']['data']['dataset'] == name
        losses = np.genfromtxt(out / fold['source'] / 'stage1' / 'metrics.csv', delimiter=',',
                               names=True)['train_loss']
        assert losses[-1] < losses[0]   # stage 1 really trained on the fold
        cells = {(r['policy'], r['budget']): r for r in fold['results']}
        assert set(cells) == {('full', 1.0), ('linear', 1.0), ('unimodal:rgb', 1.0), ('unimodal:depth', 1.0),
                              ('unimodal:audio', 1.0), ('admn', 0.5), ('naive', 0.5)}
        assert fold['test_size'] == fold['held_out_samples']
        assert all(0.0 <= r['metric'] <= 1.0 for r in cells.values())
        assert cells[('unimodal:rgb', 1.0)]['layers']['depth'] == 0   # single modality: the others off
        assert sum(cells[('admn', 0.5)]['layers'].values()) <= 0.5 * 3 * 4 + 1e-6   # the strict budget
    assert max(f['results'][0]['metric'] for f in report['folds']) > 0.3   # above chance (0.25) somewhere


def test_eval_folds_refuses_bad_combinations(capsys):
    assert main(['eval', '--folds', 'by-source', '--dataset', 'synthetic', '--no-controller']) == 2
    assert 'names no sources' in capsys.readouterr().err
    assert main(['eval', '--folds', 'by-source', '--dataset', 'tensors', '--conditions', 'single']) == 2
    assert 'do not mix' in capsys.readouterr().err
