"""Folder format: write -> load round trips, WAV resampling, resizing, and rejected records."""
import cv2
import numpy as np
import pytest
import soundfile as sf

from admn_ros.datasets.folder import load_folder, write_folder

CLASSES = ['door', 'voice', 'alarm']


def make_batch(n=4, seed=0, conditions=True):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.2, 6.0, (n, 5, 7)).astype(np.float32)
    depth[:, 1, 2] = np.nan
    batch = {
        'rgb': rng.integers(0, 256, (n, 6, 8, 3), dtype=np.uint8),
        'depth': depth,
        'audio': rng.uniform(-1, 1, (n, 900)).astype(np.float32),
        'label': rng.integers(0, 3, n).astype(np.int64),
    }
    if conditions:
        batch['ctype_rgb'] = np.array([0, 2, 1, 2][:n], np.int64)
        batch['severity_rgb'] = np.array([0.0, 0.5, 0.123456, 1.0][:n], np.float32)
    return batch


def test_round_trip_png_depth(tmp_path):
    batch = make_batch()
    write_folder(tmp_path, 'train', batch, CLASSES)
    got, names = load_folder(tmp_path, 'train')
    assert names == CLASSES
    assert sorted(got) == sorted(batch)
    np.testing.assert_array_equal(got['rgb'], batch['rgb'])
    assert got['depth'].dtype == np.float32
    assert np.array_equal(np.isnan(got['depth']), np.isnan(batch['depth']))
    assert np.nanmax(np.abs(got['depth'] - batch['depth'])) <= 0.001
    assert got['audio'].shape == batch['audio'].shape
    assert np.max(np.abs(got['audio'] - batch['audio'])) <= 1 / 32768 + 1e-7
    np.testing.assert_array_equal(got['label'], batch['label'])
    np.testing.assert_array_equal(got['ctype_rgb'], batch['ctype_rgb'])
    np.testing.assert_array_equal(got['severity_rgb'], batch['severity_rgb'])


def test_round_trip_npy_depth_is_exact_and_subsets_work(tmp_path):
    batch = {k: v for k, v in make_batch(conditions=False).items() if k != 'rgb'}
    write_folder(tmp_path, 'val', batch, CLASSES, depth_format='npy')
    got, _ = load_folder(tmp_path, 'val')
    assert sorted(got) == ['audio', 'depth', 'label']
    np.testing.assert_array_equal(got['depth'], batch['depth'])


def test_stereo_8k_wav_is_mixed_and_resampled(tmp_path):
    (tmp_path / 'classes.txt').write_text('door\nvoice\n')
    rec = tmp_path / 'test' / 'r0'
    rec.mkdir(parents=True)
    t = np.arange(8000) / 8000.0
    stereo = np.stack([0.6 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)], 1)
    sf.write(rec / 'audio.wav', stereo, 8000, subtype='PCM_16')
    (rec / 'label.txt').write_text('voice\n')
    got, _ = load_folder(tmp_path, 'test')
    audio = got['audio'][0]
    assert audio.shape == (16000,) and audio.dtype == np.float32
    t16 = np.arange(16000) / 16000.0
    expected = 0.4 * np.sin(2 * np.pi * 440 * t16)
    assert np.max(np.abs(audio[500:-500] - expected[500:-500])) < 5e-3
    assert got['label'][0] == 1


def write_record(root, split, name, *, rgb=None, depth_png=None, audio=None, label=None,
                 meta=None, files=()):
    rec = root / split / name
    rec.mkdir(parents=True)
    if rgb is not None:
        cv2.imwrite(str(rec / 'rgb.png'), rgb[..., ::-1])
    if depth_png is not None:
        cv2.imwrite(str(rec / 'depth.png'), depth_png)
    if audio is not None:
        sf.write(rec / 'audio.wav', audio, 16000)
    if label is not None:
        (rec / 'label.txt').write_text(f'{label}\n')
    if meta is not None:
        (rec / 'meta.yaml').write_text(meta)
    for fname, content in files:
        (rec / fname).write_bytes(content)
    return rec


def test_sizes_follow_first_record_and_depth_uses_nearest(tmp_path):
    (tmp_path / 'classes.txt').write_text('a\nb\n')
    small = np.full((4, 6, 3), 100, np.uint8)
    big = np.full((8, 12, 3), 200, np.uint8)
    mm = np.array([[0, 1000], [2000, 3000]], np.uint16).repeat(4, 0).repeat(6, 1)  # 8x12
    write_record(tmp_path, 's', 'a', rgb=small, depth_png=mm[::2, ::2], label='a')
    write_record(tmp_path, 's', 'b', rgb=big, depth_png=mm, label=1)
    got, _ = load_folder(tmp_path, 's')
    assert got['rgb'].shape == (2, 4, 6, 3) and got['depth'].shape == (2, 4, 6)
    assert np.all(got['rgb'][1] == 200)
    values = got['depth'][1]
    assert np.isnan(values).sum() == 6                          # the 0 mm quadrant, unblended
    assert set(np.round(values[~np.isnan(values)], 3)) <= {1.0, 2.0, 3.0}
    np.testing.assert_array_equal(got['label'], [0, 1])


def test_meta_yaml_label_and_conditions(tmp_path):
    (tmp_path / 'classes.txt').write_text('a\nb\n')
    audio = np.zeros(100, np.float32)
    write_record(tmp_path, 's', 'r0', audio=audio, label='b',
                 meta='label: 1\nconditions:\n  audio: {type: babble, severity: 0.25}\n')
    write_record(tmp_path, 's', 'r1', audio=np.zeros(300, np.float32), meta='label: a\n')
    write_record(tmp_path, 's', 'r2', audio=audio,
                 meta='label: a\nconditions:\n  audio: {type: babble, severity: 0}\n')
    got, _ = load_folder(tmp_path, 's')
    np.testing.assert_array_equal(got['label'], [1, 0, 0])
    # untagged is clean, and so is any type at severity 0 (as apply_corruption labels it)
    np.testing.assert_array_equal(got['ctype_audio'], [3, 0, 0])
    np.testing.assert_array_equal(got['severity_audio'], np.float32([0.25, 0.0, 0.0]))
    assert got['audio'].shape == (3, 300)                         # padded to the longest
    fixed, _ = load_folder(tmp_path, 's', clip_seconds=0.01)
    assert fixed['audio'].shape == (3, 160)


@pytest.mark.parametrize('case,match', [
    ('modalities', 'modalities'),
    ('both_rgb', 'keep only one'),
    ('unknown_class', 'unknown class'),
    ('index_range', 'out of range'),
    ('no_classes', 'classes.txt'),
    ('bad_condition', 'unknown rgb condition type'),
    ('bad_severity', 'severity'),
    ('partial_labels', 'label all records or none'),
    ('disagree', 'disagree'),
    ('depth_8bit', '16-bit'),
    ('broken_image', 'cannot decode'),
    ('empty', 'no rgb, depth or audio'),
])
def test_bad_records_are_rejected_naming_the_record(tmp_path, case, match):
    if case != 'no_classes':
        (tmp_path / 'classes.txt').write_text('a\nb\n')
    rgb = np.zeros((4, 4, 3), np.uint8)
    audio = np.zeros(50, np.float32)
    write_record(tmp_path, 's', 'r0', rgb=rgb, audio=audio, label='a')
    bad = {
        'modalities': dict(rgb=rgb, label='a'),
        'both_rgb': dict(rgb=rgb, audio=audio, label='a',
                         files=[('rgb.jpg', cv2.imencode('.jpg', rgb)[1].tobytes())]),
        'unknown_class': dict(rgb=rgb, audio=audio, label='zebra'),
        'index_range': dict(rgb=rgb, audio=audio, label='7'),
        'no_classes': dict(rgb=rgb, audio=audio, label='a'),
        'bad_condition': dict(rgb=rgb, audio=audio, label='a',
                              meta='conditions: {rgb: {type: fog, severity: 0.5}}\n'),
        'bad_severity': dict(rgb=rgb, audio=audio, label='a',
                             meta='conditions: {rgb: {type: low_light, severity: 1.5}}\n'),
        'partial_labels': dict(rgb=rgb, audio=audio),
        'disagree': dict(rgb=rgb, audio=audio, label='a', meta='label: b\n'),
        'depth_8bit': dict(rgb=rgb, audio=audio, label='a', depth_png=np.zeros((4, 4), np.uint8)),
        'broken_image': dict(audio=audio, label='a', files=[('rgb.png', b'not a png')]),
        'empty': dict(label='a'),
    }[case]
    write_record(tmp_path, 's', 'r1', **bad)
    with pytest.raises(ValueError, match=match) as err:
        load_folder(tmp_path, 's')
    if case not in ('depth_8bit', 'broken_image'):
        assert 'r1' in str(err.value) or 'r0' in str(err.value)


def test_jpeg_records_load(tmp_path):
    (tmp_path / 'classes.txt').write_text('a\n')
    rec = tmp_path / 's' / 'r0'
    rec.mkdir(parents=True)
    smooth = np.zeros((16, 16, 3), np.uint8)
    smooth[..., 0] = 200                                          # pure red
    cv2.imwrite(str(rec / 'rgb.jpg'), smooth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    (rec / 'label.txt').write_text('0\n')
    got, _ = load_folder(tmp_path, 's')
    assert np.abs(got['rgb'][0].astype(int) - smooth).max() <= 4   # red stays in channel 0


def test_write_guards(tmp_path):
    batch = make_batch(2, conditions=False)
    write_folder(tmp_path, 'train', batch, CLASSES)
    with pytest.raises(FileExistsError):
        write_folder(tmp_path, 'train', batch, CLASSES)
    with pytest.raises(ValueError, match='classes.txt'):
        write_folder(tmp_path, 'val', batch, ['x', 'y', 'z'])
    loud = dict(batch, audio=batch['audio'] * 2)
    with pytest.raises(ValueError, match=r'\[-1, 1\]'):
        write_folder(tmp_path, 'test', loud, CLASSES)
    with pytest.raises(FileNotFoundError):
        load_folder(tmp_path, 'missing')
