"""Corruption schedules: timing at, before and after breakpoints; YAML round trip and rejection."""
import math

import numpy as np
import pytest

from admn_ros.datasets.schedules import (CLEAN, ConstantTrack, PeriodicTrack, RampTrack, Schedule,
                                ScriptedTrack, StepTrack, apply_levels, load_schedule,
                                save_schedule)

EPS = 1e-9


def test_untracked_modalities_are_clean_and_constant_holds():
    s = Schedule.constant({'rgb': ('low_light', 0.7)})
    for t in (-5.0, 0.0, 1e6):
        assert s.level_at(t) == {'rgb': ('low_light', 0.7), 'depth': CLEAN, 'audio': CLEAN}


def test_step_switches_exactly_at_t():
    track = StepTrack('audio', 5.0, ('clean', 0.0), ('babble', 0.8))
    assert track.level_at(5.0 - EPS) == CLEAN
    assert track.level_at(5.0) == ('babble', 0.8)
    assert track.level_at(100.0) == ('babble', 0.8)
    down = StepTrack('rgb', 2.0, ('gaussian_blur', 0.5), ('low_light', 0.3))
    assert down.level_at(0.0) == ('gaussian_blur', 0.5)
    assert down.level_at(2.0) == ('low_light', 0.3)


def test_ramp_is_linear_inside_and_held_outside():
    track = RampTrack('rgb', 'gaussian_noise', t0=2.0, t1=6.0, s0=0.2, s1=1.0)
    assert track.level_at(0.0) == ('gaussian_noise', 0.2)
    assert track.level_at(2.0) == ('gaussian_noise', 0.2)
    assert track.level_at(3.0)[1] == pytest.approx(0.4)
    assert track.level_at(5.0)[1] == pytest.approx(0.8)
    assert track.level_at(6.0) == ('gaussian_noise', 1.0)
    assert track.level_at(60.0) == ('gaussian_noise', 1.0)
    up_from_zero = RampTrack('depth', 'holes', t0=0.0, t1=1.0, s0=0.0, s1=0.5)
    assert up_from_zero.level_at(0.0) == CLEAN  # severity 0 reads as clean
    assert up_from_zero.level_at(0.5) == ('holes', pytest.approx(0.25))
    falling = RampTrack('audio', 'white_noise', t0=0.0, t1=10.0, s0=1.0, s1=0.0)
    assert falling.level_at(2.5)[1] == pytest.approx(0.75)
    assert falling.level_at(10.0) == CLEAN


def test_square_wave_period_duty_and_phase():
    track = PeriodicTrack('audio', 'pink_noise', low=0.1, high=0.9, period=4.0)
    assert [track.level_at(t)[1] for t in (0.0, 1.9, 2.0, 3.9, 4.0, 6.0)] == \
        [0.1, 0.1, 0.9, 0.9, 0.1, 0.9]
    assert track.level_at(-1.0)[1] == 0.9  # periodic backwards too
    short_high = PeriodicTrack('audio', 'pink_noise', 0.0, 1.0, period=10.0, duty=0.2, phase=1.0)
    assert short_high.level_at(8.9) == CLEAN
    assert short_high.level_at(9.0) == ('pink_noise', 1.0)
    assert short_high.level_at(11.0) == CLEAN


def test_sine_wave_hits_low_high_and_midpoint():
    track = PeriodicTrack('rgb', 'motion_blur', low=0.2, high=0.6, period=2.0, shape='sine')
    assert track.level_at(0.0)[1] == pytest.approx(0.2)
    assert track.level_at(0.5)[1] == pytest.approx(0.4)
    assert track.level_at(1.0)[1] == pytest.approx(0.6)
    assert track.level_at(2.0)[1] == pytest.approx(0.2)
    values = [track.level_at(0.1 * i)[1] for i in range(11)]
    assert all(a < b for a, b in zip(values, values[1:]))  # rising over the first half


def test_scripted_is_piecewise_constant():
    s = Schedule.scripted([(1.0, 'rgb', 'occlusion', 0.5),
                           (1.0, 'audio', 'muted', 1.0),
                           (3.0, 'rgb', 'clean', 0.0),
                           (4.0, 'rgb', 'gaussian_blur', 0.25)])
    assert s.level_at(1.0 - EPS) == {'rgb': CLEAN, 'depth': CLEAN, 'audio': CLEAN}
    assert s.level_at(1.0) == {'rgb': ('occlusion', 0.5), 'depth': CLEAN, 'audio': ('muted', 1.0)}
    assert s.level_at(2.999)['rgb'] == ('occlusion', 0.5)
    assert s.level_at(3.0)['rgb'] == CLEAN
    assert s.level_at(4.0)['rgb'] == ('gaussian_blur', 0.25)
    assert s.level_at(1e9) == {'rgb': ('gaussian_blur', 0.25), 'depth': CLEAN,
                               'audio': ('muted', 1.0)}
    assert s.breakpoints() == [1.0, 3.0, 4.0]


def mixed_schedule():
    return Schedule({
        'rgb': RampTrack('rgb', 'gaussian_noise', 2.0, 10.0, 0.0, 1.0),
        'depth': StepTrack('depth', 5.0, ('clean', 0.0), ('holes', 0.6)),
        'audio': ScriptedTrack('audio', ((0.5, 'babble', 0.3), (7.0, 'dropout', 0.9))),
    })


def test_yaml_round_trip(tmp_path):
    for schedule in (mixed_schedule(),
                     Schedule({'audio': PeriodicTrack('audio', 'white_noise', 0.1, 0.7, 3.0,
                                                      shape='sine', phase=0.5)}),
                     Schedule.constant({'depth': ('blocked', 1.0)}), Schedule()):
        path = tmp_path / 'schedule.yaml'
        save_schedule(schedule, path)
        loaded = load_schedule(path)
        assert loaded == schedule
        for t in (-1.0, 0.0, 0.5, 2.0, 4.99, 5.0, 6.0, 7.0, 10.0, 20.0):
            assert loaded.level_at(t) == schedule.level_at(t)


def test_yaml_written_by_hand(tmp_path):
    path = tmp_path / 'hand.yaml'
    path.write_text(
        'tracks:\n'
        '  rgb: {kind: periodic, ctype: low_light, low: 0.0, high: 0.8, period: 4.0}\n'
        '  depth: {kind: step, t: 5, before: [clean, 0], after: {ctype: holes, severity: 0.6}}\n'
        'events:\n'
        '  - [0.0, audio, white_noise, 0.5]\n'
        '  - {t: 3.0, modality: audio, ctype: muted, severity: 1.0}\n')
    s = load_schedule(path)
    assert s.level_at(1.0) == {'rgb': CLEAN, 'depth': CLEAN, 'audio': ('white_noise', 0.5)}
    assert s.level_at(6.0) == {'rgb': ('low_light', 0.8), 'depth': ('holes', 0.6),
                               'audio': ('muted', 1.0)}


BAD_YAML = {
    'unknown modality': 'tracks:\n  lidar: {kind: constant, ctype: holes, severity: 0.5}\n',
    'unknown depth corruption': 'tracks:\n  depth: {kind: constant, ctype: fog, severity: 0.5}\n',
    'in \\[0, 1\\]': 'tracks:\n  rgb: {kind: constant, ctype: low_light, severity: 1.5}\n',
    'must be a number': 'tracks:\n  rgb: {kind: constant, ctype: low_light, severity: high}\n',
    'strictly increase': 'tracks:\n  rgb: {kind: scripted, events: [[2, occlusion, 0.5], '
                         '[1, occlusion, 0.2]]}\n',
    'must not decrease': 'events:\n  - [2.0, rgb, occlusion, 0.5]\n  - [1.0, audio, muted, 1]\n',
    'ramp times must increase': 'tracks:\n  rgb: {kind: ramp, ctype: gaussian_noise, t0: 5, '
                                't1: 1, s0: 0, s1: 1}\n',
    'kind in': 'tracks:\n  rgb: {kind: wobble}\n',
    'lacks': 'tracks:\n  rgb: {kind: ramp, ctype: gaussian_noise, t0: 0, t1: 1}\n',
    'unknown key': 'tracks:\n  rgb: {kind: constant, ctype: low_light, severity: 0.5, '
                   'colour: red}\n',
    'both a track and scripted': 'tracks:\n  rgb: {kind: constant, ctype: low_light, '
                                 'severity: 0.5}\nevents:\n  - [0, rgb, occlusion, 0.5]\n',
    'needs severity 0': 'events:\n  - [0, rgb, clean, 0.5]\n',
    'period must be positive': 'tracks:\n  audio: {kind: periodic, ctype: muted, low: 0, '
                               'high: 1, period: 0}\n',
    'must be a mapping': '- [0, rgb, occlusion, 0.5]\n',
    'finite number': 'events:\n  - [.nan, rgb, occlusion, 0.5]\n',
}


@pytest.mark.parametrize('match', sorted(BAD_YAML))
def test_bad_yaml_rejected_with_a_clear_message(tmp_path, match):
    path = tmp_path / 'bad.yaml'
    path.write_text(BAD_YAML[match])
    with pytest.raises(ValueError, match=match):
        load_schedule(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / 'evil.yaml'
    path.write_text('tracks: !!python/object/apply:os.system ["echo hi"]\n')
    with pytest.raises(Exception) as err:
        load_schedule(path)
    assert 'python/object' in str(err.value)


def test_track_constructors_validate():
    with pytest.raises(ValueError, match='unknown modality'):
        ConstantTrack('lidar', 'holes', 0.5)
    with pytest.raises(ValueError, match='duty'):
        PeriodicTrack('rgb', 'low_light', 0.0, 1.0, 1.0, duty=1.0)
    with pytest.raises(ValueError, match='shape'):
        PeriodicTrack('rgb', 'low_light', 0.0, 1.0, 1.0, shape='triangle')
    with pytest.raises(ValueError, match='finite'):
        StepTrack('rgb', math.inf, CLEAN, ('low_light', 0.5))
    with pytest.raises(ValueError, match='filed under'):
        Schedule({'rgb': ConstantTrack('depth', 'holes', 0.5)})


def test_apply_levels_follows_the_schedule_and_labels_every_present_modality():
    rng = np.random.default_rng(0)
    frame = {'rgb': rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8),
             'audio': (0.1 * rng.standard_normal((1, 800))).astype(np.float32),
             'label': np.array([3])}
    schedule = mixed_schedule()  # its depth track is ignored: the frame has no depth
    with pytest.raises(ValueError, match='babble_bank'):  # a lone frame has no other talkers
        apply_levels(frame, schedule.level_at(1.0), rng)
    bank = (0.1 * rng.standard_normal((2, 500))).astype(np.float32)
    early = apply_levels(frame, schedule.level_at(1.0), rng, babble_bank=bank)
    np.testing.assert_array_equal(early['rgb'], frame['rgb'])
    assert (early['ctype_rgb'][0], early['severity_rgb'][0]) == (0, 0.0)
    assert early['severity_audio'][0] == np.float32(0.3)
    assert not np.array_equal(early['audio'], frame['audio'])
    late = apply_levels(frame, schedule.level_at(8.0), rng)
    assert late['severity_rgb'][0] == np.float32(0.75)
    assert not np.array_equal(late['rgb'], frame['rgb'])
    assert late['severity_audio'][0] == np.float32(0.9)
    assert np.mean(late['audio'] == 0) > 0.5  # dropout 0.9 zeroes most of the clip
    assert 'ctype_depth' not in late
