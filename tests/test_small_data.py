"""The small-data path never silently loses: the linear baseline every stage-1 run fits (on the
run's own splits) and `admn eval`'s `linear` row; the chance guard (early stopping waits, the run
says so, the controller refuses); the freeze/lr search; `admn data check`; `--seed`; preview's
folder."""
import json
import shutil

import numpy as np
import pytest
import yaml

from admn_ros.cli import main as admn
from admn_ros.datasets.folder import write_folder
from admn_ros.datasets.registry import load_dataset
from admn_ros.fusion import recipe
from admn_ros.fusion.checkpoint import read_checkpoint, save_untrained
from admn_ros.fusion.config import ModelConfig

MODEL = {'encoders': {m: {'in_chans': c, 'input_size': [64, 64], 'patch_size': 16, 'dim': 32, 'depth': 4,
                          'heads': 2} for m, c in (('rgb', 3), ('depth', 1), ('audio', 1))},
         'adapter_hidden': 32, 'fusion_dim': 32, 'fusion_depth': 1, 'fusion_heads': 2}


def stage1_yaml(tmp_path, dataset, **overrides):
    cfg = {'model': MODEL, 'data': {'dataset': dataset, 'train_size': 96, 'val_size': 48},
           'augment': {'policy': 'none'}, 'batch_size': 16, 'lr': 3e-3, 'warmup_steps': 2,
           'stem': 'patch', 'device': 'cpu', **overrides}
    path = tmp_path / 'stage1.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return path


def tensors_folder(root, sizes=None, shuffle=False):
    """The 'tensors' dataset written as a folder (labels permuted per split with ``shuffle``)."""
    for split, n in (sizes or {'train': 96, 'val': 48, 'test': 32}).items():
        data = load_dataset('tensors', split, size=n)
        arrays = dict(data.arrays)
        if shuffle:
            arrays['label'] = np.random.default_rng(7).permutation(arrays['label'])
        write_folder(root, split, arrays, data.class_names, depth_format='png')
    return root


# ------------------------------------------------------------------------------- linear baseline

def test_the_linear_baseline_is_fitted_on_the_runs_own_split_and_scored_by_admn_eval(tmp_path, capsys):
    from admn_ros.datasets.preprocess import PreprocessConfig, Preprocessor
    from admn_ros.fusion.linear_baseline import LinearBaseline, fit_linear_baseline
    from admn_ros.quality_estimators.evaluate import evaluate, evaluate_conditions
    out = tmp_path / 'run'
    assert admn(['train', 'stage1', '--config', str(stage1_yaml(tmp_path, 'tensors', epochs=2)),
                 '--out', str(out), '--no-progress', '--seed', '3']) == 0
    printed = capsys.readouterr().out
    payload = read_checkpoint(out / 'model.pt')
    meta = payload['extra']
    assert meta['train_config']['seed'] == 3 and meta['train_config']['data']['seed'] == 3   # --seed
    stored = LinearBaseline.from_state(meta['linear_baseline'])
    # The same fit on the splits the model trained and validated on (seed 3's subsets).
    pre = Preprocessor(PreprocessConfig(**meta['preprocess']))
    train = load_dataset('tensors', 'train', seed=3, size=96)
    val = load_dataset('tensors', 'val', seed=3, size=48)
    again = fit_linear_baseline(train.arrays, val.arrays, pre, seed=3)
    np.testing.assert_allclose(stored.coef, again.coef, rtol=1e-4, atol=1e-5)
    assert stored.train_samples == 96 and stored.val_acc == again.val_acc
    # Another split gives another fit: the comparison above could fail.
    other = fit_linear_baseline(load_dataset('tensors', 'train', seed=4, size=96).arrays, val.arrays, pre)
    assert not np.allclose(other.coef, stored.coef, atol=1e-5)
    scores = json.loads((out / 'baseline.json').read_text())
    assert scores['linear_val_acc'] == round(again.val_acc, 5) == meta['validation']['linear_val_acc']
    assert scores['model_val_acc'] is not None and scores['left_chance']
    assert f'linear baseline {again.val_acc:.3f}' in printed
    # admn eval's 'linear' row: the stored fit on the same test samples, every condition.
    test = load_dataset('tensors', 'test', seed=0).arrays
    report = evaluate(out / 'model.pt', 'tensors', [0.5], ['linear', 'full'], clean=True, device='cpu')
    linear = next(r for r in report['results'] if r['policy'] == 'linear')
    assert linear['metric'] == round(stored.accuracy(test, pre), 5) and linear['layers'] == {}
    by_condition = evaluate_conditions(out / 'model.pt', 'tensors', [0.5], ['linear', 'naive'], 'single',
                                       device='cpu')
    rows = [r for r in by_condition['results'] if r['policy'] == 'linear']
    assert len(rows) == len(by_condition['conditions']) > 1
    assert len({r['metric'] for r in rows}) > 1          # it sees each condition's data
    # A checkpoint without a fitted baseline is refused with the reason.
    bare = save_untrained(tmp_path / 'bare.pt', ModelConfig.from_dict({**MODEL, 'num_classes': 4}),
                          dataset='tensors', class_names=[f'class{i}' for i in range(4)])
    with pytest.raises(ValueError, match='holds no linear baseline'):
        evaluate(bare, 'tensors', [0.5], ['linear'], clean=True, device='cpu')


# ---------------------------------------------------------------------------------- chance guard

def test_early_stopping_waits_while_validation_is_at_chance():
    best = recipe.BestEpoch(path=None, patience=2, chance_bar=0.4)
    save = lambda path: None   # noqa: E731
    best.update(0, 0.3, save, val_acc=0.3)
    for epoch in (1, 2, 3):
        best.update(epoch, 0.2, save, val_acc=0.2)
    assert best.patience_out(3) and not best.should_stop(3)       # at chance: keep going
    best.update(4, 0.5, save, val_acc=0.5)
    for epoch in (5, 6):
        best.update(epoch, 0.45, save, val_acc=0.45)
    assert best.should_stop(6)                                     # left chance: patience rules
    chance, bar = recipe.chance_bar(np.array([0, 1, 2, 3] * 12))
    assert chance == 0.25 and 0.25 < bar < 0.45


@pytest.mark.parametrize('shuffled', [True, False], ids=['label-shuffled', 'learnable'])
def test_the_chance_guard_fires_on_a_label_shuffled_set_only(tmp_path, capsys, shuffled):
    data = tensors_folder(tmp_path / 'data', shuffle=shuffled)
    cfg = stage1_yaml(tmp_path, f'folder:{data}', epochs=8, early_stop_patience=1,
                      data={'dataset': f'folder:{data}'})
    out = tmp_path / 'run'
    assert admn(['train', 'stage1', '--config', str(cfg), '--out', str(out), '--no-progress']) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    scores = json.loads((out / 'baseline.json').read_text())
    epochs_run = len((out / 'metrics.csv').read_text().strip().splitlines()) - 1
    controller = ['train', 'controller', '--stage1', str(out / 'model.pt'), '--out', str(tmp_path / 'ctrl'),
                  '--epochs', '1', '--no-progress']
    if shuffled:
        assert not scores['left_chance'] and epochs_run == 8     # patience 1 never ended it
        assert any(line.startswith('not stopping early') for line in printed)
        assert printed[-1].startswith('WARNING: stage 1 ended at chance')   # the last line says so
        assert admn(controller) == 2                                          # refused ...
        assert 'ended at chance' in capsys.readouterr().err
        (tmp_path / 'ctrl.yaml').write_text(yaml.safe_dump(
            {'data': {'dataset': f'folder:{data}', 'train_size': 32}, 'batch_size': 16, 'device': 'cpu'}))
        assert admn(controller + ['--config', str(tmp_path / 'ctrl.yaml'), '--force']) == 0   # ... unless forced
        capsys.readouterr()
        assert admn(['eval', '--checkpoint', str(tmp_path / 'ctrl' / 'controller.pt'), '--clean',
                     '--budgets', '1.0', '--policies', 'full,linear', '--device', 'cpu']) == 0
        assert 'stage 1 ended at chance' in capsys.readouterr().out.splitlines()[0]   # eval says so first
    else:
        assert scores['left_chance'] and scores['verdict'] is None
        assert not any('ended at chance' in line for line in printed)


# ------------------------------------------------------------------------------- the search

def test_small_data_search_chooses_freeze_and_lr_on_validation_and_records_it(tmp_path, capsys):
    init = save_untrained(tmp_path / 'init.pt', ModelConfig.from_dict({**MODEL, 'num_classes': 4}),
                          dataset='tensors', class_names=[f'class{i}' for i in range(4)])
    cfg = stage1_yaml(tmp_path, 'tensors', epochs=2, data={'dataset': 'tensors', 'train_size': 48,
                                                           'val_size': 32})
    raw = yaml.safe_load(cfg.read_text())
    del raw['lr']
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / 'run'
    assert admn(['train', 'stage1', '--config', str(cfg), '--init', str(init), '--out', str(out),
                 '--no-progress']) == 0
    printed = capsys.readouterr().out
    found = json.loads((out / 'search.json').read_text())
    tried = found['candidates']
    assert {(t['freeze_blocks'], t['lr']) for t in tried} == {(f, lr) for f in (0, 1, 2) for lr in (3e-4, 1e-3)}
    best = max(t['val_score'] for t in tried)
    chosen = found['chosen']
    assert next(t for t in tried if (t['freeze_blocks'], t['lr']) == (chosen['freeze_blocks'], chosen['lr'])
                )['val_score'] == best
    assert 'small-data search chose freeze_blocks=' in printed and 'best validation score' in printed
    train_config = read_checkpoint(out / 'model.pt')['extra']['train_config']
    assert (train_config['freeze_blocks'], train_config['lr']) == (chosen['freeze_blocks'], chosen['lr'])
    # Off by flag: the recipe's values, no search.
    assert admn(['train', 'stage1', '--config', str(cfg), '--init', str(init), '--out', str(tmp_path / 'off'),
                 '--no-progress', '--no-search']) == 0
    assert not (tmp_path / 'off' / 'search.json').exists()
    train_config = read_checkpoint(tmp_path / 'off' / 'model.pt')['extra']['train_config']
    assert (train_config['freeze_blocks'], train_config['lr']) == (0, recipe.LR_INIT)
    # At 1000 samples and more there is nothing to search.
    assert recipe.search_plan(recipe.SEARCH_BELOW, from_scratch=False, freeze_blocks=None, lr=None,
                              epochs=40, depth=12) == ((), 0)


# ------------------------------------------------------------------------------- data check

def _break(root, how):
    """Make one inconsistency in the consistent folder ``root``; returns the reason to expect."""
    import cv2
    first = sorted((root / 'train').iterdir())[0]
    if how == 'unreadable':
        (first / 'rgb.png').write_bytes(b'not a png')
        return 'unreadable record'
    if how == 'modalities_in_split':
        (first / 'audio.wav').unlink()
        return 'records hold different modalities'
    if how == 'modalities_across_splits':
        for record in (root / 'val').iterdir():
            (record / 'audio.wav').unlink()
        return 'splits hold different modalities'
    if how == 'partly_labelled':
        (first / 'label.txt').unlink()
        return 'label all records or none'
    if how == 'class_without_training':
        for record in (root / 'train').iterdir():
            if (record / 'label.txt').read_text().strip() == 'class3':
                (record / 'label.txt').write_text('class0\n')
        return 'classes without any training sample: class3'
    if how == 'one_class':
        for record in (root / 'train').iterdir():
            (record / 'label.txt').write_text('class1\n')
        return 'one class only'
    if how == 'aspect':
        cv2.imwrite(str(first / 'rgb.png'), np.zeros((32, 64, 3), np.uint8))
        return 'aspect ratios'
    if how == 'depth_mm_in_npy':
        for record in (root / 'train').iterdir():
            depth = cv2.imread(str(record / 'depth.png'), cv2.IMREAD_UNCHANGED).astype(np.float32)
            (record / 'depth.png').unlink()
            np.save(record / 'depth.npy', depth)   # millimetres where metres belong
        return 'depth.npy holds metres'
    if how == 'duplicate':
        shutil.copytree(first, root / 'test' / 'copied')
        return 'byte-identical'
    raise AssertionError(how)


INCONSISTENCIES = ('unreadable', 'modalities_in_split', 'modalities_across_splits', 'partly_labelled',
                   'class_without_training', 'one_class', 'aspect', 'depth_mm_in_npy', 'duplicate')


@pytest.fixture(scope='module')
def consistent_folder(tmp_path_factory):
    return tensors_folder(tmp_path_factory.mktemp('check') / 'data',
                          sizes={'train': 16, 'val': 8, 'test': 8})


def test_data_check_summarises_a_consistent_folder(consistent_folder, capsys):
    assert admn(['data', 'check', f'folder:{consistent_folder}']) == 0
    out = capsys.readouterr().out
    for text in ('train: 16 records, 16 labelled', 'classes: class0 4', 'modalities: rgb+depth+audio (16)',
                 'rgb sizes (h x w): 64x64 (16)', 'audio: 16000 Hz (16)', '% of pixels read',
                 'condition tags: none', 'consistent'):
        assert text in out, text


@pytest.mark.parametrize('how', INCONSISTENCIES)
def test_data_check_refuses_each_inconsistency_with_its_reason(consistent_folder, tmp_path, capsys, how):
    root = tmp_path / 'data'
    shutil.copytree(consistent_folder, root)
    reason = _break(root, how)
    assert admn(['data', 'check', str(root)]) == 1
    refused = [line for line in capsys.readouterr().out.splitlines() if line.startswith('REFUSED: ')]
    assert refused and any(reason in line for line in refused), refused


# ------------------------------------------------------------------------------- preview folder

def test_preview_writes_into_a_folder_and_refuses_a_file_name(tmp_path, capsys):
    assert admn(['data', 'preview', '--dataset', 'tensors', '--n', '2', '--out-dir', str(tmp_path / 'x.png')]) == 2
    assert 'names a file' in capsys.readouterr().err and not (tmp_path / 'x.png').exists()
    assert admn(['data', 'preview', '--dataset', 'tensors', '--n', '2', '--out-dir', str(tmp_path / 'p')]) == 0
    assert sorted(p.name for p in (tmp_path / 'p').iterdir()) == ['tensors_clean.png', 'tensors_corrupted.png']
    assert admn(['data', 'preview', '--dataset', 'tensors', '--n', '2', '--out', str(tmp_path / 'old')]) == 0
    assert 'note: --out is now --out-dir' in capsys.readouterr().out and (tmp_path / 'old').is_dir()


def test_data_check_of_a_bag_imports_it_first(tmp_path, capsys):
    bag = tmp_path / 'bag'
    assert admn(['bag', 'record', '--dataset', 'synthetic', '--split', 'train', '--duration', '12',
                 '--rate', '2', '--out', str(bag)]) == 0
    capsys.readouterr()
    assert admn(['data', 'check', str(bag), '--splits', 'train=0.6,val=0.2,test=0.2']) == 0
    out = capsys.readouterr().out
    assert 'samples (train ' in out and 'modalities: rgb+depth+audio' in out and out.rstrip().endswith('consistent')
    # Without --splits every sample lands in train: said, not refused.
    assert admn(['data', 'check', str(bag)]) == 0
    assert 'note: no test split' in capsys.readouterr().out
