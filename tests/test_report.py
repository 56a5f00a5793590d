"""admn_ros.report: corruption phases, layer shifts and the timeline plot, from per-frame records
(no ROS)."""

import pytest

from admn_ros import report as R

S = 1_000_000_000
CLEAN = {'rgb': ('clean', 0.0), 'depth': ('clean', 0.0), 'audio': ('clean', 0.0)}


def frame(i, layers, correct=True, **corrupt):
    """Frame i at 0.2 s spacing with (rgb, depth, audio) layers; ``corrupt`` maps modality ->
    (type, severity)."""
    return R.Frame(10 * S + i * S // 5, dict(zip(('rgb', 'depth', 'audio'), layers)),
                   dict(CLEAN, **corrupt), correct)


def dark_camera_run():
    """4 clean frames, 3 with the camera dark (layers leave rgb), 2 with the microphone noisy too,
    1 clean again, then 1 without a corruption record."""
    frames = [frame(i, (5, 5, 6), correct=i != 0) for i in range(4)]
    frames += [frame(4 + i, (2, 6, 8), correct=i == 0, rgb=('low_light', 1.0)) for i in range(3)]
    frames += [frame(7 + i, (2, 8, 6), rgb=('low_light', 1.0), audio=('white_noise', 0.8))
               for i in range(2)]
    frames += [frame(9, (5, 5, 6))]
    return frames + [R.Frame(12 * S, {'rgb': 4, 'depth': 4, 'audio': 4}, None, None)]


def test_severities_round_to_the_step_and_never_to_clean():
    assert R.quantise(0.05, 0.25) == 0.25 and R.quantise(0.0, 0.25) == 0.0
    assert R.quantise(0.62, 0.25) == 0.5 and R.quantise(0.8, 0.25) == 0.75
    assert R.quantise(1.0, 0.25) == 1.0 and R.fmt_severity(1.0) == '1.0'
    assert R.state_label(()) == 'clean' and R.state_label(None) == 'unknown'
    assert R.state_label((('rgb', 'low_light', 1.0), ('audio', 'white_noise', 0.75))) == \
        'rgb low_light 1.0, audio white_noise 0.75'


def test_nearest_matches_exactly_or_within_the_tolerance():
    keys = [10, 20, 30]
    assert R.nearest(keys, 20) == 20 and R.nearest(keys, 21) is None
    assert R.nearest(keys, 24, tolerance_ns=5) == 20 and R.nearest(keys, 26, tolerance_ns=5) == 30
    assert R.nearest(keys, 40, tolerance_ns=5) is None and R.nearest([], 1, 5) is None


def test_phases_are_maximal_runs_of_one_corruption_state():
    a = R.analyse(dark_camera_run())
    phases = a['phases']
    assert [p['label'] for p in phases] == [
        'clean', 'rgb low_light 1.0', 'rgb low_light 1.0, audio white_noise 0.75', 'clean',
        'unknown']
    assert [(p['first_frame'], p['last_frame'], p['frames']) for p in phases] == [
        (0, 3, 4), (4, 6, 3), (7, 8, 2), (9, 9, 1), (10, 10, 1)]
    assert phases[1]['t_start_s'] == pytest.approx(0.8) and phases[1]['t_end_s'] == \
        pytest.approx(1.2)
    assert phases[0]['accuracy'] == pytest.approx(0.75) and phases[0]['scored'] == 4
    assert phases[1]['accuracy'] == pytest.approx(1 / 3)
    assert phases[4]['accuracy'] is None and phases[4]['scored'] == 0
    assert phases[1]['mean_layers'] == {'rgb': 2, 'depth': 6, 'audio': 8}
    assert phases[2]['degraded'] == {
        'rgb': {'type': 'low_light', 'severity': 1.0, 'mean_severity': 1.0},
        'audio': {'type': 'white_noise', 'severity': 0.75, 'mean_severity': 0.8}}
    # The clean baseline pools every all-clean frame (both clean phases), not the unknown one.
    assert a['clean_layers'] == {'rgb': 5, 'depth': 5, 'audio': 6}
    assert phases[1]['layers_vs_clean'] == pytest.approx({'rgb': -0.6, 'depth': 0.2,
                                                          'audio': 2 / 6})
    assert a['frames_with_corruption'] == 10


def test_sentences_say_what_happened_in_each_phase():
    phases = R.analyse(dark_camera_run())['phases']
    assert phases[0]['sentence'] == ('While every sensor was clean (frames 0-3, 0.0-0.6 s): '
                                     'rgb 5.0, depth 5.0, audio 6.0 layers; accuracy 0.75 '
                                     '(4 scored).')
    assert phases[1]['sentence'] == (
        'While rgb was degraded (low_light 1.0, frames 4-6, 0.8-1.2 s): rgb got 2.0 layers '
        'against 5.0 when clean (-60%); depth 6.0 (+20%), audio 8.0 (+33%). '
        'Accuracy 0.33 (3 scored).')
    assert phases[2]['sentence'].startswith(
        'While rgb and audio were degraded (rgb low_light 1.0, audio white_noise 0.75; '
        'frames 7-8, 1.4-1.6 s): rgb got 2.0 layers against 5.0 when clean (-60%), audio 6.0 '
        'against 6.0 (+0%); depth 8.0 (+60%).')
    assert phases[3]['sentence'].startswith('While every sensor was clean (frame 9, 1.8 s)')
    assert phases[4]['sentence'].startswith('With no corruption record (frame 10, 2.0 s)')
    assert phases[4]['sentence'].endswith('no prediction scored.')


def test_shift_ratio_compares_degraded_with_all_clean_frames():
    shift = R.analyse(dark_camera_run())['shift']
    assert list(shift) == ['rgb', 'audio']
    rgb = shift['rgb']
    assert rgb['degraded_frames'] == 5 and rgb['clean_frames'] == 5
    assert rgb['mean_layers_degraded'] == 2 and rgb['mean_layers_clean'] == 5
    assert rgb['ratio'] == pytest.approx(0.4) and rgb['shifted'] is True
    # Where the layers went meanwhile: depth (6,6,6,8,8) and audio (8,8,8,6,6) against 5 and 6.
    assert rgb['others_change'] == pytest.approx({'depth': 1.8, 'audio': 1.2})
    assert rgb['verdict'].startswith('layers left the degraded rgb: yes, ratio 0.40 '
                                     '(target <= 0.5)')
    audio = shift['audio']
    assert audio['ratio'] == pytest.approx(1.0) and audio['shifted'] is False
    assert audio['verdict'].startswith('layers left the degraded audio: no, ratio 1.00')


def test_shift_cannot_tell_without_baseline_or_strong_degradation():
    mild = [frame(0, (5, 5, 6)), frame(1, (5, 5, 6), audio=('white_noise', 0.3))]
    audio = R.analyse(mild)['shift']['audio']
    assert audio['ratio'] is None and audio['shifted'] is None
    assert 'never reached severity 0.5' in audio['verdict']
    # With a lower threshold the same frames are judged.
    assert R.analyse(mild, min_severity=0.25)['shift']['audio']['ratio'] == pytest.approx(1.0)
    never_clean = [frame(i, (2, 5, 6), rgb=('low_light', 1.0)) for i in range(3)]
    a = R.analyse(never_clean)
    assert a['clean_layers'] == {} and a['shift']['rgb']['ratio'] is None
    assert 'no frame had every sensor clean' in a['shift']['rgb']['verdict']
    assert 'no all-clean frame to compare with' in a['phases'][0]['sentence']


def test_corruption_of_a_sensor_the_model_lacks_is_ignored():
    # The injector reports depth holes, but the frames have no depth layers (sensor absent).
    frames = [R.Frame(i * S, {'rgb': 4, 'audio': 4}, dict(CLEAN, depth=('holes', 0.5)))
              for i in range(3)]
    a = R.analyse(frames)
    assert [p['label'] for p in a['phases']] == ['clean'] and a['shift'] == {}


def test_a_ramp_makes_a_few_phases_not_one_per_frame():
    frames = [frame(i, (5, 5, 6 - 4 * i / 20), audio=('white_noise', i / 20)) for i in range(21)]
    labels = [p['label'] for p in R.analyse(frames)['phases']]
    assert labels == ['clean'] + [f'audio white_noise {s}' for s in ('0.25', '0.5', '0.75', '1.0')]
    assert len(R.analyse(frames, severity_step=0.5)['phases']) == 3


def test_without_corruption_records_there_are_no_phases():
    frames = [R.Frame(i * S, {'rgb': 4}, None, True) for i in range(3)]
    a = R.analyse(frames)
    assert a['phases'] == [] and a['shift'] == {} and a['frames_with_corruption'] == 0
    assert 'cannot be split into phases' in '\n'.join(R.markdown(a))
    assert R.analyse([])['phases'] == []


def test_markdown_and_timeline_plot(tmp_path):
    frames = dark_camera_run()
    a = R.analyse(frames)
    report = tmp_path / 'runs' / 'ros_report.json'
    plot = R.timeline_path(report)
    assert plot == tmp_path / 'runs' / 'ros_report_timeline.png'
    md = '\n'.join(R.markdown(a, plot.name))
    assert '| 1 | rgb low_light 1.0 | 4-6 (3) | 0.8-1.2 | 0.333 | 2.00 | 6.00 | 8.00 |' in md
    assert '- layers left the degraded rgb: yes, ratio 0.40' in md
    assert '![layers and corruption over time](ros_report_timeline.png)' in md
    assert R.plot_timeline(frames, a, plot) == plot
    assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and plot.stat().st_size > 10_000
    assert R.plot_timeline([], a, tmp_path / 'none.png') is None
    assert not (tmp_path / 'none.png').exists()
