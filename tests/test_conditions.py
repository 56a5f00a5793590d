"""Evaluation by condition: presets, YAML files, applying a condition, oracle_split on validation
only, recorded tags through evaluation and training augmentation, and the ``admn eval`` CLI."""
import json

import numpy as np
import pytest
import torch

from admn_ros.datasets.conditions import (Condition, apply_condition, load_conditions, preset_conditions,
                                 recorded_conditions, recorded_mask, resolve_conditions)
from admn_ros.datasets.corruptions import CORRUPTION_TYPES, CorruptionSampler, ctype_index
from admn_ros.datasets.registry import load_dataset
from admn_ros.datasets.sample import take
from tests.fixtures_models import make_random_checkpoint

FOUR = [f'class{i}' for i in range(4)]   # the 'tensors' dataset's classes


@pytest.fixture(scope='module')
def tensors_test():
    return load_dataset('tensors', 'test').arrays


@pytest.fixture(scope='module')
def tensors_checkpoint(tmp_path_factory):
    """An untrained 4-class checkpoint made for 'tensors' (with a controller, for admn)."""
    return make_random_checkpoint(tmp_path_factory.mktemp('cond') / 'ctrl.pt', class_names=FOUR,
                                  controller=True, dataset='tensors')


def _tagged(arrays):
    """``arrays`` with recorded tags: the first 8 samples dark (rgb low_light 0.5), the next 8
    with muted audio at 1.0 (the data is not changed: tags are what the loader reports)."""
    n = len(arrays['label'])
    out = dict(arrays)
    out['severity_rgb'] = np.where(np.arange(n) < 8, 0.5, 0.0).astype(np.float32)
    out['ctype_rgb'] = np.where(np.arange(n) < 8, ctype_index('rgb', 'low_light'), 0).astype(np.int64)
    muted = (np.arange(n) >= 8) & (np.arange(n) < 16)
    out['severity_audio'] = np.where(muted, 1.0, 0.0).astype(np.float32)
    out['ctype_audio'] = np.where(muted, ctype_index('audio', 'muted'), 0).astype(np.int64)
    return out


# ------------------------------------------------------------------------------ presets

def test_single_preset_is_clean_plus_every_type_alone_at_two_severities():
    names = [c.name for c in preset_conditions('single', ('rgb', 'depth', 'audio'))]
    expected = ['clean'] + [f'{m}:{t}:{s}' for m in ('rgb', 'depth', 'audio')
                            for t in CORRUPTION_TYPES[m][1:] for s in ('1.0', '0.5')]
    assert names == expected and len(names) == 33
    # Only the dataset's modalities.
    two = preset_conditions('single', ('rgb', 'audio'))
    assert len(two) == 25 and not any('depth' in c.name for c in two)
    low = next(c for c in two if c.name == 'rgb:low_light:0.5')
    assert low.corrupted == (('rgb', 'low_light', 0.5),) and not low.recorded


def test_pairs_preset_is_two_by_two_per_pair_of_modalities():
    names = [c.name for c in preset_conditions('pairs', ('rgb', 'depth', 'audio'))]
    assert names == ['clean',
                     'rgb:low_light:1.0+depth:blocked:1.0', 'rgb:low_light:1.0+depth:gaussian_noise:1.0',
                     'rgb:gaussian_noise:1.0+depth:blocked:1.0', 'rgb:gaussian_noise:1.0+depth:gaussian_noise:1.0',
                     'rgb:low_light:1.0+audio:muted:1.0', 'rgb:low_light:1.0+audio:white_noise:1.0',
                     'rgb:gaussian_noise:1.0+audio:muted:1.0', 'rgb:gaussian_noise:1.0+audio:white_noise:1.0',
                     'depth:blocked:1.0+audio:muted:1.0', 'depth:blocked:1.0+audio:white_noise:1.0',
                     'depth:gaussian_noise:1.0+audio:muted:1.0', 'depth:gaussian_noise:1.0+audio:white_noise:1.0']
    assert [c.name for c in preset_conditions('pairs', ('audio',))] == ['clean']
    with pytest.raises(ValueError, match='unknown condition preset'):
        preset_conditions('triples', ('rgb',))


def test_recorded_preset_groups_samples_by_their_tags(tensors_test):
    tagged = _tagged(tensors_test)
    conds = recorded_conditions(tagged)
    assert [c.name for c in conds] == ['clean', 'audio:muted:1.0', 'rgb:low_light:0.5']
    assert all(c.recorded for c in conds)
    sizes = {c.name: int(recorded_mask(tagged, c).sum()) for c in conds}
    assert sizes == {'clean': len(tagged['label']) - 16, 'audio:muted:1.0': 8, 'rgb:low_light:0.5': 8}
    # Untagged data is one clean group.
    assert [c.name for c in recorded_conditions(tensors_test)] == ['clean']


# ------------------------------------------------------------------------------ YAML files

def test_yaml_file_is_parsed(tmp_path, tensors_test):
    path = tmp_path / 'c.yaml'
    path.write_text('- {name: dark, corrupted: [{modality: rgb, type: low_light, severity: 1.0}]}\n'
                    '- {name: clean, corrupted: []}\n'
                    '- name: both\n'
                    '  corrupted:\n'
                    '    - {modality: depth, type: holes, severity: 0.25}\n'
                    '    - {modality: audio, type: babble, severity: 1}\n')
    conds = load_conditions(path, ('rgb', 'depth', 'audio'))
    assert conds == [Condition('dark', (('rgb', 'low_light', 1.0),)), Condition('clean'),
                     Condition('both', (('depth', 'holes', 0.25), ('audio', 'babble', 1.0)))]
    assert resolve_conditions(str(path), tensors_test) == conds
    assert [c.name for c in resolve_conditions('single', tensors_test)][:2] == ['clean', 'rgb:gaussian_noise:1.0']
    with pytest.raises(ValueError, match='neither a preset'):
        resolve_conditions(str(tmp_path / 'missing.yaml'), tensors_test)


@pytest.mark.parametrize('text,match', [
    ('- {name: a, corrupted: [{modality: lidar, type: gaussian_noise, severity: 1.0}]}', "unknown modality 'lidar'"),
    ('- {name: a, corrupted: [{modality: rgb, type: fog, severity: 1.0}]}', "unknown rgb corruption type 'fog'"),
    ('- {name: a, corrupted: [{modality: rgb, type: clean, severity: 0.0}]}', "unknown rgb corruption type 'clean'"),
    ('- {name: a, corrupted: [{modality: rgb, type: low_light, severity: 1.5}]}', r'severity must be a number in \[0, 1\]'),
    ('- {name: a, corrupted: [{modality: rgb, type: low_light, severity: high}]}', r'severity must be a number in \[0, 1\]'),
    ('- {name: a, corrupted: [{modality: depth, type: holes, severity: 1.0}]}', 'the dataset has no depth'),
    ('- {name: a, corrupted: [{modality: rgb, type: low_light}]}', 'exactly modality, type and severity'),
    ('- {name: a, corrupted: [{modality: rgb, type: low_light, severity: 1}, '
     '{modality: rgb, type: occlusion, severity: 1}]}', 'degrades a modality twice'),
    ('- {corrupted: []}', 'needs a name'),
    ('- {name: a, corrupted: [], colour: red}', 'unknown keys'),
    ('- {name: a}\n- {name: a}', 'repeated: a'),
    ('name: a', 'non-empty list'),
    ('- {name: a, corrupted: [}', 'not valid YAML'),
])
def test_bad_yaml_files_are_refused_in_one_line(tmp_path, text, match):
    path = tmp_path / 'bad.yaml'
    path.write_text(text + '\n')
    with pytest.raises(ValueError, match=match) as err:
        load_conditions(path, ('rgb', 'audio'))
    assert '\n' not in str(err.value) and str(path) in str(err.value)


# ------------------------------------------------------------------------ apply_condition

def test_apply_condition_labels_and_content(tensors_test):
    before = {k: v.copy() for k, v in tensors_test.items()}
    cond = Condition('x', (('rgb', 'gaussian_noise', 1.0), ('audio', 'muted', 0.5)))
    out = apply_condition(tensors_test, cond, seed=3)
    n = len(tensors_test['label'])
    np.testing.assert_array_equal(out['severity_rgb'], np.ones(n, np.float32))
    np.testing.assert_array_equal(out['ctype_rgb'], np.full(n, ctype_index('rgb', 'gaussian_noise')))
    np.testing.assert_array_equal(out['severity_audio'], np.full(n, 0.5, np.float32))
    np.testing.assert_array_equal(out['ctype_audio'], np.full(n, ctype_index('audio', 'muted')))
    # An untouched modality is labelled clean and keeps its data.
    assert not out['severity_depth'].any() and not out['ctype_depth'].any()
    np.testing.assert_array_equal(out['depth'], tensors_test['depth'])
    np.testing.assert_array_equal(out['label'], tensors_test['label'])
    # Content: muting is deterministic, the noise differs from the clean image on every sample.
    np.testing.assert_allclose(out['audio'], tensors_test['audio'] * 0.5, rtol=1e-6)
    assert (out['rgb'] != tensors_test['rgb']).reshape(n, -1).any(1).all()
    # Deterministic by seed; the input is not changed.
    again = apply_condition(tensors_test, cond, seed=3)
    np.testing.assert_array_equal(again['rgb'], out['rgb'])
    assert not np.array_equal(apply_condition(tensors_test, cond, seed=4)['rgb'], out['rgb'])
    for k, v in before.items():
        np.testing.assert_array_equal(tensors_test[k], v)
    clean = apply_condition(tensors_test, Condition('clean'), seed=0)
    for m in ('rgb', 'depth', 'audio'):
        np.testing.assert_array_equal(clean[m], tensors_test[m])
        assert not clean[f'severity_{m}'].any()


def test_apply_condition_on_recorded_data(tensors_test):
    tagged = _tagged(tensors_test)
    dark = next(c for c in recorded_conditions(tagged) if c.name == 'rgb:low_light:0.5')
    subset = apply_condition(tagged, dark, seed=0)
    for key, value in take(tagged, slice(0, 8)).items():   # those samples, unchanged
        np.testing.assert_array_equal(subset[key], value)
    # A synthetic condition on tagged data keeps the other modality's recorded tags.
    out = apply_condition(tagged, Condition('noisy depth', (('depth', 'gaussian_noise', 1.0),)), seed=0)
    np.testing.assert_array_equal(out['severity_rgb'], tagged['severity_rgb'])
    np.testing.assert_array_equal(out['ctype_audio'], tagged['ctype_audio'])
    with pytest.raises(ValueError, match='data lacks'):
        apply_condition({'audio': tensors_test['audio'], 'label': tensors_test['label']},
                        Condition('d', (('rgb', 'low_light', 1.0),)))


# ---------------------------------------------------------------------------- oracle_split

def test_oracle_candidates_fill_the_budget_in_layers_and_flops():
    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.quality_estimators.oracle import candidate_splits, candidates
    mods = ('rgb', 'depth', 'audio')
    splits = candidate_splits(mods, mods, 12, Budget(1 / 3), [5.0, 1.0, 1.0])
    assert len(splits) == 55 and all(sum(s.values()) == 12 and min(s.values()) >= 1 for s in splits)
    # Both realisations, except where they are the same layers (1 and 2 of 12 layers).
    cands = candidates(mods, mods, 12, Budget(1 / 3), [5.0, 1.0, 1.0])
    assert len(cands) == 110 and {c.realisation for c in cands} == {'evenly_spaced', 'naive'}
    assert len(candidates(mods, mods, 12, Budget(1.0), [1.0, 1.0, 1.0])) == 1
    # In FLOPs each layer weighs its cost: within the budget, and no modality could take another layer.
    cost = np.array([4.0, 2.0, 1.0])
    limit = 0.25 * 12 * cost.sum()
    flops = candidate_splits(mods, mods, 12, Budget(0.25, 'flops'), cost)
    assert flops
    for s in flops:
        counts = np.array([s[m] for m in mods])
        assert counts @ cost <= limit
        assert all(c == 12 or counts @ cost + cost[i] > limit for i, c in enumerate(counts))
    # Absent modalities get nothing; their share goes to the present ones.
    assert all(set(s) == {'rgb', 'audio'} for s in candidate_splits(('rgb', 'audio'), mods, 12, Budget(0.25), cost))


def test_fixed_split_policy_runs_exactly_its_layers():
    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.quality_estimators.oracle import Candidate, FixedSplitPolicy
    from admn_ros.quality_estimators.policies import naive_layer_indices
    cand = Candidate((('rgb', 3), ('depth', 1), ('audio', 2)), 'naive')
    policy = FixedSplitPolicy(cand, ('rgb', 'depth', 'audio'), 12)
    keep = policy.allocate({'label': np.zeros(2)}, Budget(0.25), ('rgb', 'depth', 'audio'))
    np.testing.assert_array_equal(np.flatnonzero(keep['rgb'][1]), naive_layer_indices(3, 12))
    assert keep['depth'].sum(1).tolist() == [1, 1] and keep['audio'].sum(1).tolist() == [2, 2]


def test_oracle_split_chooses_on_validation_only(tmp_path, monkeypatch, tensors_test):
    """Validation labels make candidate A perfect and test labels make B perfect: the oracle must
    pick A and score A's test accuracy (had it looked at the test split it would pick B)."""
    from admn_ros.datasets.registry import LoadedDataset
    from admn_ros.fusion.checkpoint import checkpoint_preprocessor, load_checkpoint, save_checkpoint
    from admn_ros.fusion.flops import CostModel
    from admn_ros.quality_estimators import evaluate as ev
    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.quality_estimators.oracle import candidates
    model, meta = load_checkpoint(make_random_checkpoint(tmp_path / 'u.pt', class_names=FOUR, dataset='tensors'))
    torch.manual_seed(0)
    for p in model.parameters():   # large random weights: predictions vary with input and layers
        torch.nn.init.normal_(p, std=0.5)
    checkpoint = save_checkpoint(tmp_path / 'm.pt', model, **meta)
    inputs = checkpoint_preprocessor(meta)(tensors_test)
    n = len(tensors_test['label'])
    preds = {}
    with torch.inference_mode():
        for c in candidates(model.modalities, model.modalities, model.depth, Budget(0.5),
                            CostModel.from_config(model.cfg).layer_costs()):
            keep = {m: torch.as_tensor(v).expand(n, -1) for m, v in c.masks(model.depth).items()}
            preds[c] = model(inputs, keep).argmax(-1).numpy()
    unique = [c for c in preds if sum(np.array_equal(preds[c], p) for p in preds.values()) == 1]
    a = unique[0]
    b = max(preds, key=lambda c: np.sum(preds[c] != preds[a]))
    assert np.any(preds[a] != preds[b])

    def fake_load(name, split, **kwargs):
        labels = {'val': preds[a], 'test': preds[b]}[split]
        return LoadedDataset(name, dict(tensors_test, label=labels.astype(np.int64)), FOUR, ('rgb', 'depth', 'audio'))

    monkeypatch.setattr(ev, 'load_dataset', fake_load)
    report = ev.evaluate_conditions(checkpoint, None, [0.5], ['oracle_split'], [Condition('clean')], device='cpu')
    row, = report['results']
    assert row['split'] == dict(a.split) and row['realisation'] == a.realisation
    assert row['val_metric'] == 1.0 and row['val_size'] == n
    assert row['metric'] == pytest.approx(np.mean(preds[a] == preds[b]), abs=1e-5) and row['metric'] < 1.0
    assert row['layers'] == {m: float(k) for m, k in a.split}


# ------------------------------------------------------------------------- recorded tags

@pytest.mark.slow
def test_recorded_tags_survive_evaluation(tmp_path, tensors_test):
    from admn_ros.datasets.folder import write_folder
    from admn_ros.quality_estimators.evaluate import corrupted_test_set, evaluate_conditions
    root = tmp_path / 'rec'
    tagged = take(_tagged(tensors_test), slice(0, 24))
    write_folder(root, 'test', tagged, FOUR)
    write_folder(root, 'val', take(tagged, slice(0, 16)), FOUR)   # no clean samples
    name = f'folder:{root}'
    checkpoint = make_random_checkpoint(tmp_path / 'f.pt', class_names=FOUR, dataset=name)
    report = evaluate_conditions(checkpoint, None, [0.5], ['naive', 'oracle_split'], 'recorded', device='cpu')
    assert report['dataset'] == name
    rows = {(r['condition'], r['policy']): r for r in report['results']}
    assert {c for c, _ in rows} == {'clean', 'audio:muted:1.0', 'rgb:low_light:0.5'}
    assert rows['clean', 'naive']['samples'] == 8 and rows['audio:muted:1.0', 'naive']['samples'] == 8
    assert rows['rgb:low_light:0.5', 'naive']['corrupted'] == [
        {'modality': 'rgb', 'type': 'low_light', 'severity': 0.5}]
    assert rows['rgb:low_light:0.5', 'oracle_split']['val_size'] == 8
    # Nothing to choose on: the oracle's cell is empty and left out of the summary.
    assert rows['clean', 'oracle_split']['metric'] is None and 'note' in rows['clean', 'oracle_split']
    oracle = next(s for s in report['summary'] if s['policy'] == 'oracle_split')
    assert oracle['single_count'] == 2 and oracle['destroying_count'] == 1   # muted audio at 1.0
    from admn_ros.quality_estimators.condition_report import write_condition_report
    write_condition_report(report, plot=tmp_path / 'a.png', allocation_plot=tmp_path / 'h.png')
    assert (tmp_path / 'h.png').is_file()
    assert all(c['recorded'] for c in report['conditions'])
    # The clean and the standard mixed sets keep the recorded tags and the tagged data.
    clean = corrupted_test_set(name, clean=True)
    mixed = corrupted_test_set(name)
    for batch in (clean, mixed):
        np.testing.assert_array_equal(batch['severity_rgb'][:8], tagged['severity_rgb'][:8])
        np.testing.assert_array_equal(batch['ctype_audio'][8:16], tagged['ctype_audio'][8:16])
    np.testing.assert_array_equal(mixed['rgb'][:8], clean['rgb'][:8])
    np.testing.assert_array_equal(mixed['audio'][8:16], clean['audio'][8:16])


def test_training_augment_keeps_recorded_tags(tensors_test):
    from admn_ros.fusion.training import AugmentConfig, build_augment
    tagged = _tagged(tensors_test)
    augment = build_augment(AugmentConfig(p_clean=0.0))
    out = augment(tagged, np.random.default_rng(0))
    for key in ('rgb', 'severity_rgb', 'ctype_rgb'):
        np.testing.assert_array_equal(out[key][:8], tagged[key][:8])
    for key in ('audio', 'severity_audio', 'ctype_audio'):
        np.testing.assert_array_equal(out[key][8:16], tagged[key][8:16])
    # Untagged (sample, modality) pairs are corrupted as before (p_clean 0: all of them).
    assert (out['severity_rgb'][8:] > 0).all() and (out['severity_depth'] > 0).all()
    # Untagged data gets exactly what the sampler gave before the option existed.
    plain = {k: v for k, v in tensors_test.items()}
    a = CorruptionSampler(keep_recorded=True)(plain, np.random.default_rng(5))
    b = CorruptionSampler(keep_recorded=False)(plain, np.random.default_rng(5))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # Switched off, the sampler overwrites tags as it used to.
    over = build_augment(AugmentConfig(p_clean=0.0, keep_recorded=False))(tagged, np.random.default_rng(0))
    assert not np.array_equal(over['ctype_rgb'][:8], tagged['ctype_rgb'][:8])


# ----------------------------------------------------------------------------------- CLI

def _run(args):
    from admn_ros.cli import main
    return main(['eval', *args])


@pytest.mark.slow
def test_eval_by_condition_cli_writes_json_summary_and_plots(tensors_checkpoint, tmp_path, capsys):
    spec = tmp_path / 'c.yaml'
    spec.write_text('- {name: clean, corrupted: []}\n'
                    '- {name: dark, corrupted: [{modality: rgb, type: low_light, severity: 1.0}]}\n'
                    '- {name: hiss, corrupted: [{modality: audio, type: white_noise, severity: 0.5}]}\n')
    out, plot, heat = tmp_path / 'r.json', tmp_path / 'acc.png', tmp_path / 'heat.png'
    # No --dataset: the checkpoint's own ('tensors').
    assert _run(['--checkpoint', str(tensors_checkpoint), '--conditions', str(spec), '--budgets', '0.5',
                 '--policies', 'admn,naive,oracle_split', '--oracle-val-size', '8', '--device', 'cpu',
                 '--json', str(out), '--plot', str(plot), '--allocation-plot', str(heat)]) == 0
    report = json.loads(out.read_text())
    assert report['dataset'] == 'tensors' and report['budget_unit'] == 'layers' and report['test_size'] == 32
    assert [(r['condition'], r['policy']) for r in report['results']] == [
        (c, p) for c in ('clean', 'dark', 'hiss') for p in ('admn', 'naive', 'oracle_split')]
    for r in report['results']:
        assert set(r) >= {'condition', 'corrupted', 'policy', 'budget', 'metric', 'gflops', 'layers'}
        assert sum(r['layers'].values()) <= 6.0 + 1e-9   # half of 3 x 4 layers
    oracle = [r for r in report['results'] if r['policy'] == 'oracle_split']
    assert all(r['val_size'] == 8 and sum(r['split'].values()) == 6 for r in oracle)
    summary = {s['policy']: s for s in report['summary']}
    naive = {r['condition']: r['metric'] for r in report['results'] if r['policy'] == 'naive'}
    assert summary['naive']['single_count'] == 2 and summary['naive']['destroying_count'] == 1
    assert summary['naive']['single_mean'] == pytest.approx((naive['dark'] + naive['hiss']) / 2, abs=1e-5)
    assert summary['naive']['destroying_mean'] == pytest.approx(naive['dark'])
    for png in (plot, heat):
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    printed = capsys.readouterr().out
    assert 'dark' in printed and 'oracle_split layers' in printed and 'destroying mean' in printed


def test_eval_defaults_to_the_checkpoints_dataset(tensors_checkpoint, tmp_path):
    out = tmp_path / 'r.json'
    assert _run(['--checkpoint', str(tensors_checkpoint), '--budgets', '1.0', '--policies', 'full',
                 '--size', '8', '--device', 'cpu', '--json', str(out)]) == 0
    assert json.loads(out.read_text())['dataset'] == 'tensors'


@pytest.mark.parametrize('extra,match', [
    (['--dataset', 'tensors'], 'predicts 12 classes but dataset .tensors. has 4'),
    (['--dataset', 'tensors', '--conditions', 'single'], 'predicts 12 classes'),
])
def test_eval_refuses_a_checkpoint_with_other_classes(tmp_path, capsys, extra, match):
    import re
    twelve = make_random_checkpoint(tmp_path / 'twelve.pt')
    assert _run(['--checkpoint', str(twelve), '--budgets', '1.0', '--policies', 'full', '--device', 'cpu',
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(match, err) and len(err.splitlines()) == 1


@pytest.mark.parametrize('args,match', [
    (['--policies', 'oracle_split'], 'needs --conditions'),
    (['--conditions', 'single', '--clean'], 'do not mix'),
    (['--conditions', 'nonsense'], 'neither a preset'),
])
def test_eval_refusals(tensors_checkpoint, capsys, args, match):
    assert _run(['--checkpoint', str(tensors_checkpoint), '--budgets', '1.0', '--device', 'cpu', *args]) == 2
    assert match in capsys.readouterr().err


def _row(condition, policy, metric, layers, corrupted=()):
    return {'condition': condition, 'policy': policy, 'budget': 0.33, 'metric': metric, 'gflops': 0.0,
            'layers': layers, 'corrupted': [{'modality': m, 'type': t, 'severity': s} for m, t, s in corrupted]}


def test_quality_awareness_reads_the_shift_and_the_margins_off_a_report():
    from admn_ros.quality_estimators.condition_report import quality_awareness
    dark = [('rgb', 'low_light', 1.0)]
    noisy = [('audio', 'white_noise', 1.0)]
    blur = [('rgb', 'gaussian_blur', 0.5)]   # degraded, not destroyed: no shift asked
    rows = [_row('clean', 'admn', 0.90, {'rgb': 4.0, 'audio': 4.0}),
            _row('dark', 'admn', 0.70, {'rgb': 1.5, 'audio': 6.5}, dark),
            _row('noisy', 'admn', 0.80, {'rgb': 5.0, 'audio': 3.0}, noisy),
            _row('blur', 'admn', 0.85, {'rgb': 4.0, 'audio': 4.0}, blur)]
    for policy, clean, dark_acc, noisy_acc, blur_acc in (('naive', 0.88, 0.60, 0.81, 0.87),
                                                         ('every_other', 0.89, 0.62, 0.76, 0.86),
                                                         ('oracle_split', 0.90, 0.66, 0.80, 0.86)):
        rows += [_row('clean', policy, clean, {}), _row('dark', policy, dark_acc, {}, dark),
                 _row('noisy', policy, noisy_acc, {}, noisy), _row('blur', policy, blur_acc, {}, blur)]
    (row,) = quality_awareness({'results': rows})
    assert [(s['modality'], s['ratio'], s['follows']) for s in row['shift']] == [
        ('rgb', 0.375, True), ('audio', 0.75, False)]
    # admn 0.75 / 0.7833 over (dark, noisy) / all singles; every_other 0.69 and naive 0.705 over
    # the destroying ones; oracle 0.7733 over the singles.
    assert row['destroying_vs_fixed'] == pytest.approx(0.75 - 0.705)
    assert row['single_vs_reference'] == pytest.approx((0.70 + 0.80 + 0.85) / 3 - (0.66 + 0.80 + 0.86) / 3,
                                                       abs=1e-5)
    assert row['clean_vs_fixed'] == pytest.approx(0.90 - 0.89)
    assert row['worst_vs_naive'] == {'difference': pytest.approx(-0.02), 'condition': 'blur'}


def test_quality_awareness_says_increased_for_a_move_toward_the_destroyed_sensor(capsys):
    from admn_ros.quality_estimators.condition_report import print_quality_awareness, quality_awareness
    dark = [('rgb', 'low_light', 1.0)]
    muted = [('audio', 'muted', 1.0)]
    both = dark + muted
    rows = [_row('clean', 'admn', 0.90, {'rgb': 3.8, 'audio': 4.0}),
            _row('dark', 'admn', 0.70, {'rgb': 6.0, 'audio': 2.0}, dark),        # toward the dark camera
            _row('muted', 'admn', 0.80, {'rgb': 4.0, 'audio': 3.0}, muted),      # less, not half
            _row('both', 'admn', 0.50, {'rgb': 1.0, 'audio': 1.0}, both),
            _row('still', 'admn', 0.50, {'rgb': 3.83, 'audio': 4.0}, dark[:1])]   # a hair more: no move
    for policy, accs in (('naive', (0.88, 0.60, 0.70, 0.55, 0.5)), ('every_other', (0.89, 0.62, 0.72, 0.52, 0.5))):
        rows += [_row(c, policy, a, {}, k) for c, a, k in zip(('clean', 'dark', 'muted', 'both', 'still'), accs,
                                                              ((), dark, muted, both, dark))]
    (row,) = quality_awareness({'results': rows})
    assert [(s['condition'], s['modality'], s['move']) for s in row['shift']] == [
        ('dark', 'rgb', 'increased'), ('muted', 'audio', 'not halved'),
        ('both', 'rgb', 'halved'), ('both', 'audio', 'halved'), ('still', 'rgb', 'not halved')]
    assert row['worst_multi_vs_fixed'] == {'difference': pytest.approx(-0.05), 'condition': 'both'}
    print_quality_awareness([row])
    out = capsys.readouterr().out
    assert 'rgb 3.8->6.0 in dark (increased)' in out and 'audio 4.0->3.0 in muted (not halved)' in out
    assert 'rgb 3.8->1.0 in both,' in out and 'worst multi vs fixed -5.0 pts (both)' in out
