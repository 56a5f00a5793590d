"""The trained defaults shipped in the package: present, intact, small, and found first."""
import numpy as np
import pytest
import torch

from admn_ros.quality_estimators import defaults, inference
from admn_ros.quality_estimators.inference import load_controller
from tests.fixtures_models import make_random_checkpoint

DATASETS = ('synthetic', 'avdigits')


@pytest.mark.parametrize('dataset', DATASETS)
def test_shipped_default_is_listed_intact_small_and_loads(dataset):
    path = inference.shipped_checkpoint(dataset)
    sums = defaults.read_checksums()
    assert path.name in sums, f'{path.name} missing from {defaults.checksums_file()}'
    assert defaults.file_sha256(path) == sums[path.name]
    assert path.stat().st_size <= 10 * 2 ** 20
    model, ctrl, meta = load_controller(path)
    assert ctrl is not None and meta['stage'] == 'controller' and meta['dataset'] == dataset
    assert all(p.dtype == torch.float32 for p in model.parameters())   # half on disk only


def test_the_shipped_default_comes_first_and_the_cache_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv('ADMN_CACHE_DIR', str(tmp_path))
    monkeypatch.delenv(inference.PREFERENCE_ENV, raising=False)
    assert inference.default_checkpoint('synthetic') == inference.shipped_checkpoint('synthetic')
    cached = make_random_checkpoint(tmp_path / 'models' / 'synthetic' / 'controller.pt', controller=True)
    assert inference.default_checkpoint('synthetic') == inference.shipped_checkpoint('synthetic')
    monkeypatch.setenv(inference.PREFERENCE_ENV, 'cache')
    assert inference.default_checkpoint('synthetic') == cached
    monkeypatch.setenv(inference.PREFERENCE_ENV, 'newest')
    with pytest.raises(ValueError, match=inference.PREFERENCE_ENV):
        inference.default_checkpoint('synthetic')


def test_ship_halves_the_weights_records_the_checksum_and_keeps_the_predictions(tmp_path):
    source = make_random_checkpoint(tmp_path / 'full.pt', controller=True)
    shipped = defaults.ship('toy', source, models=tmp_path / 'models')
    assert shipped == tmp_path / 'models' / 'toy.pt'
    assert defaults.read_checksums(tmp_path / 'models') == {'toy.pt': defaults.file_sha256(shipped)}
    assert 'toy.pt' not in defaults.read_checksums()          # the package's own list is untouched
    assert shipped.stat().st_size < 0.6 * source.stat().st_size
    full, full_ctrl, _ = load_controller(source)
    half, half_ctrl, meta = load_controller(shipped)
    assert meta['stage'] == 'controller' and half_ctrl is not None
    x = {m: torch.randn(4, 3 if m == 'rgb' else 1, 64, 64) for m in full.modalities}
    keep = {m: torch.ones(4, full.depth, dtype=torch.bool) for m in full.modalities}
    with torch.no_grad():
        assert np.allclose(full(x, keep).numpy(), half(x, keep).numpy(), atol=2e-2)


@pytest.mark.slow
def test_train_defaults_runs_both_stages_from_the_shipped_configs(tmp_path):
    """`admn train defaults` end to end (the shipped configs, shrunk to a few hundred samples)."""
    from admn_ros.quality_estimators.defaults import train_defaults
    from admn_ros.quality_estimators.inference import load_model

    def shrink(s1, c):
        s1.data.train_size, s1.data.val_size, s1.epochs = 200, 100, 1
        c.data.train_size, c.epochs = 200, 1
    # One epoch may end at chance, which the controller step refuses unless forced.
    path = train_defaults('synthetic', device='cpu', progress=False, out=tmp_path, shrink=shrink, force=True)
    assert path == tmp_path / 'controller.pt'
    loaded = load_model(path, 'cpu')
    assert loaded.controller is not None and loaded.meta.get('dataset') == 'synthetic'


def _admn_layers(dataset: str, corrupted, budget: float, size: int = 128):
    """Mean layers per modality the shipped ``admn`` gives the first ``size`` test samples of
    ``dataset`` under the corruptions ``corrupted`` (``(modality, type, severity)``)."""
    from admn_ros.datasets.conditions import Condition, apply_condition
    from admn_ros.datasets.registry import load_dataset
    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.quality_estimators.evaluate import evaluate_policy
    loaded = inference.load_model(inference.shipped_checkpoint(dataset), 'cpu')
    test = apply_condition(load_dataset(dataset, 'test', size=size).arrays, Condition('c', tuple(corrupted)))
    policy, _ = loaded.policy('admn')
    return evaluate_policy(loaded.model, loaded.preprocessor, policy, test, Budget(budget), loaded.cost)['layers']


def test_shipped_synthetic_controller_takes_layers_from_both_destroyed_sensors():
    """Depth blocked and microphone muted at once: each gets at most half its clean layers (or its
    first only); and with the camera dark instead of the depth, the muted microphone still gets
    its first layer only (trained one sensor at a time, it got 5 of 11: "camera bad -> audio")."""
    clean = _admn_layers('synthetic', (), 0.33)
    both = _admn_layers('synthetic', [('depth', 'blocked', 1.0), ('audio', 'muted', 1.0)], 0.33)
    for m in ('depth', 'audio'):
        assert both[m] <= max(1.0, clean[m] / 2) + 0.05, (m, clean, both)
    dark = _admn_layers('synthetic', [('rgb', 'low_light', 1.0), ('audio', 'muted', 1.0)], 0.33)
    assert dark['audio'] <= 1.05, dark


@pytest.mark.parametrize('budget', [0.25, 0.33])
def test_shipped_avdigits_controller_gives_muted_speech_its_first_layer_only(budget):
    from tests.fixtures_models import avdigits_available
    if not avdigits_available():
        pytest.skip('AV-digits data not available')
    assert _admn_layers('avdigits', [('audio', 'muted', 1.0)], budget)['audio'] <= 1.05
