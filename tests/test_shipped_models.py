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
