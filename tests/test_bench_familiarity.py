"""The familiarity benchmark's density: typical on the data it was fitted on, far on inputs from
another source."""
import numpy as np

from admn_ros.benchmarks.familiarity import TokenDensity, replaced, table, telephone
from admn_ros.datasets.registry import load_dataset
from admn_ros.datasets.sample import SAMPLE_RATE
from admn_ros.quality_estimators.inference import load_model, shipped_checkpoint


def test_token_density_is_typical_on_its_world_and_far_on_another_camera():
    loaded = load_model(shipped_checkpoint('synthetic'), 'cpu')
    density = TokenDensity(loaded, load_dataset('synthetic', 'train', size=128).arrays)
    test = load_dataset('synthetic', 'test', size=64).arrays
    same = density.distances(test)
    assert all(np.median(d) < 1.0 for d in same.values())
    # Another camera: white-noise pixels instead of the rendered scene; the other sensors unchanged.
    noise = np.random.default_rng(0).integers(0, 256, test['rgb'].shape, dtype=np.uint8)
    other = density.distances(replaced(test, 'rgb', noise))
    assert np.median(other['rgb']) > 3 * np.median(same['rgb'])
    np.testing.assert_array_equal(other['depth'], same['depth'])


def test_telephone_band_removes_what_lies_outside_300_to_3400_hz():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low, mid = np.sin(2 * np.pi * 60 * t), np.sin(2 * np.pi * 1000 * t)
    out = telephone(np.stack([low, mid]).astype(np.float32))
    assert np.std(out[0, 4000:]) < 0.05 * np.std(low) and np.std(out[1, 4000:]) > 0.8 * np.std(mid)


def test_table_has_a_row_per_input_set_and_a_dash_for_a_missing_sensor():
    cell = {'median': 0.3, 'p10': 0.1, 'p90': 0.6}
    text = table({'datasets': {'avdigits': {'test speaker': {'rgb': cell, 'audio': cell}}}})
    assert text.splitlines()[-1] == '| avdigits | test speaker | 0.30 (0.10-0.60) | - | 0.30 (0.10-0.60) |'
