"""The trained defaults shipped in the package: present, intact, small, and found first."""
import numpy as np
import pytest
import torch

from admn_ros.quality_estimators import defaults
from tests.fixtures_models import make_random_checkpoint

DATASETS = ('synthetic', 'avdigits')


@pytest.mark.parametrize('dataset', DATASETS)
def test_shipped_default_is_listed_intact_small_and_loads(dataset):
    from admn_ros.quality_estimators.train_controller import load_controller
    path = defaults.shipped_checkpoint(dataset)
    sums = defaults.read_checksums()
    assert path.name in sums, f'{path.name} missing from {defaults.CHECKSUMS}'
    assert defaults.file_sha256(path) == sums[path.name]
    assert path.stat().st_size <= 10 * 2 ** 20
    model, ctrl, meta = load_controller(path)
    assert ctrl is not None and meta['stage'] == 'controller' and meta['dataset'] == dataset
    assert all(p.dtype == torch.float32 for p in model.parameters())   # half on disk only


def test_the_shipped_default_comes_first_and_the_cache_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv('ADMN_CACHE_DIR', str(tmp_path))
    monkeypatch.delenv(defaults.PREFERENCE_ENV, raising=False)
    assert defaults.default_checkpoint('synthetic') == defaults.shipped_checkpoint('synthetic')
    cached = make_random_checkpoint(tmp_path / 'models' / 'synthetic' / 'controller.pt', controller=True)
    assert defaults.default_checkpoint('synthetic') == defaults.shipped_checkpoint('synthetic')
    monkeypatch.setenv(defaults.PREFERENCE_ENV, 'cache')
    assert defaults.default_checkpoint('synthetic') == cached
    monkeypatch.setenv(defaults.PREFERENCE_ENV, 'newest')
    with pytest.raises(ValueError, match=defaults.PREFERENCE_ENV):
        defaults.default_checkpoint('synthetic')


def test_ship_halves_the_weights_records_the_checksum_and_keeps_the_predictions(tmp_path, monkeypatch):
    from admn_ros.quality_estimators.train_controller import load_controller
    monkeypatch.setattr(defaults, 'MODELS_DIR', tmp_path / 'models')
    monkeypatch.setattr(defaults, 'CHECKSUMS', tmp_path / 'models' / 'SHA256SUMS')
    source = make_random_checkpoint(tmp_path / 'full.pt', controller=True)
    shipped = defaults.ship('toy', source)
    assert shipped == tmp_path / 'models' / 'toy.pt'
    assert defaults.read_checksums() == {'toy.pt': defaults.file_sha256(shipped)}
    assert shipped.stat().st_size < 0.6 * source.stat().st_size
    full, full_ctrl, _ = load_controller(source)
    half, half_ctrl, meta = load_controller(shipped)
    assert meta['stage'] == 'controller' and half_ctrl is not None
    x = {m: torch.randn(4, 3 if m == 'rgb' else 1, 64, 64) for m in full.modalities}
    keep = {m: torch.ones(4, full.depth, dtype=torch.bool) for m in full.modalities}
    with torch.no_grad():
        assert np.allclose(full(x, keep).numpy(), half(x, keep).numpy(), atol=2e-2)
