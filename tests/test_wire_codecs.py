"""admn_ros.wire's image / audio codecs: round trips for every encoding, padding, endianness and bad input."""
from types import SimpleNamespace

import numpy as np
import pytest

from admn_ros.datasets.ros_messages.audio_codec import (PcmReassembler, audio_common_to_array, audio_from_image,
                                       audio_to_image_fields, pcm16)
from admn_ros.datasets.ros_messages.header import header_stamp_ns, split_stamp
from admn_ros.datasets.ros_messages.image_codec import depth_to_mm, image_fields, image_to_array

RNG = np.random.default_rng(7)


def as_msg(fields, **override):
    return SimpleNamespace(**{**fields, **override})


def padded(arr_bytes_rows: np.ndarray, pad: int) -> bytes:
    """Append ``pad`` junk bytes to every row of a [H, row_bytes] uint8 array."""
    junk = np.full((arr_bytes_rows.shape[0], pad), 0xAB, np.uint8)
    return np.concatenate([arr_bytes_rows, junk], axis=1).tobytes()


def test_rgb8_round_trip_and_bgr8_swaps_channels():
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    f = image_fields(rgb, 'rgb8')
    assert (f['height'], f['width'], f['step'], f['is_bigendian']) == (5, 7, 21, 0)
    assert isinstance(f['data'], bytes)
    np.testing.assert_array_equal(image_to_array(as_msg(f)), rgb)

    g = image_fields(rgb, 'bgr8')
    wire = np.frombuffer(g['data'], np.uint8).reshape(5, 7, 3)
    np.testing.assert_array_equal(wire, rgb[..., ::-1])         # BGR on the wire
    np.testing.assert_array_equal(image_to_array(as_msg(g)), rgb)


def test_rgba_and_bgra_drop_alpha():
    rgba = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    msg = SimpleNamespace(height=3, width=4, encoding='rgba8', is_bigendian=0, step=16,
                          data=rgba.tobytes())
    np.testing.assert_array_equal(image_to_array(msg), rgba[..., :3])
    msg.encoding = 'bgra8'
    np.testing.assert_array_equal(image_to_array(msg), rgba[..., 2::-1])


@pytest.mark.parametrize('encoding,dtype', [('mono8', np.uint8), ('mono16', np.uint16),
                                            ('16SC1', np.int16)])
def test_integer_single_channel_round_trip(encoding, dtype):
    info = np.iinfo(dtype)
    arr = RNG.integers(info.min, info.max, (4, 6), dtype=dtype, endpoint=True)
    out = image_to_array(as_msg(image_fields(arr, encoding)))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, arr)


def test_32fc1_round_trip_keeps_nan():
    arr = RNG.normal(size=(4, 5)).astype(np.float32)
    arr[1, 2] = np.nan
    out = image_to_array(as_msg(image_fields(arr, '32FC1')))
    np.testing.assert_array_equal(out, arr)                      # NaN compares equal here


def test_16uc1_depth_metres_mm_rep118():
    depth = RNG.uniform(0.2, 9.0, (6, 8)).astype(np.float32)
    depth[0, 0] = np.nan
    depth[0, 1] = np.inf
    f = image_fields(depth, '16UC1')
    raw = np.frombuffer(f['data'], '<u2').reshape(6, 8)
    assert raw[0, 0] == 0 and raw[0, 1] == 0                     # invalid -> 0 mm
    out = image_to_array(as_msg(f))
    assert out.dtype == np.float32
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 1])
    valid = np.isfinite(depth)
    assert np.max(np.abs(out[valid] - depth[valid])) <= 0.0005 + 1e-6
    # raw millimetres pass straight through
    mm = np.array([[0, 1, 65535]], np.uint16)
    np.testing.assert_array_equal(np.frombuffer(image_fields(mm, '16UC1')['data'], '<u2'),
                                  mm.ravel())


def test_depth_to_mm_rejects_unrepresentable_depth():
    with pytest.raises(ValueError, match='negative'):
        depth_to_mm(np.array([[-0.1]]))
    with pytest.raises(ValueError, match='65.535'):
        depth_to_mm(np.array([[70.0]]))


@pytest.mark.parametrize('encoding,dtype', [('rgb8', np.uint8), ('mono16', np.uint16),
                                            ('16UC1', np.uint16), ('16SC1', np.int16),
                                            ('32FC1', np.float32)])
def test_padded_step_and_big_endian(encoding, dtype):
    h, w = 3, 5
    ch = 3 if encoding == 'rgb8' else 1
    shape = (h, w, ch) if ch == 3 else (h, w)
    if dtype == np.float32:
        arr = RNG.normal(size=shape).astype(dtype)
    else:
        arr = RNG.integers(1, 200, shape).astype(dtype)
    big = arr.astype(np.dtype(dtype).newbyteorder('>'))
    rows = np.frombuffer(big.tobytes(), np.uint8).reshape(h, -1)
    pad = 6
    msg = SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=1,
                          step=rows.shape[1] + pad, data=padded(rows, pad))
    out = image_to_array(msg)
    expected = arr.astype(np.float32) * 0.001 if encoding == '16UC1' else arr
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)
    assert out.dtype.isnative


def test_decoder_accepts_numpy_list_and_array_module_buffers():
    import array
    arr = RNG.integers(0, 256, (2, 3), dtype=np.uint8)
    f = image_fields(arr, 'mono8')
    for data in (np.frombuffer(f['data'], np.uint8), list(f['data']),
                 array.array('B', f['data'])):
        np.testing.assert_array_equal(image_to_array(as_msg(f, data=data)), arr)


def test_bad_messages_raise_clear_errors():
    f = image_fields(np.zeros((4, 4), np.uint8), 'mono8')
    with pytest.raises(ValueError, match='expected height 4 x step 4'):
        image_to_array(as_msg(f, data=f['data'][:-1]))
    with pytest.raises(ValueError, match='step 3'):
        image_to_array(as_msg(f, step=3))
    with pytest.raises(ValueError, match='unsupported image encoding'):
        image_to_array(as_msg(f, encoding='yuv422'))
    with pytest.raises(ValueError, match='uint8'):
        image_fields(np.zeros((2, 2, 3), np.float32), 'rgb8')
    with pytest.raises(ValueError, match='int16'):
        image_fields(np.zeros((2, 2), np.int32), '16SC1')


def test_audio_image_round_trip_16sc1_and_32fc1():
    wave = RNG.uniform(-1, 1, (2, 400)).astype(np.float32)
    wave[0, 0], wave[1, 0] = 1.0, -1.0
    f = audio_to_image_fields(wave)
    assert (f['encoding'], f['height'], f['width']) == ('16SC1', 2, 400)   # row per channel
    out = audio_from_image(as_msg(f))
    assert out.shape == (2, 400) and out.dtype == np.float32
    assert np.max(np.abs(out - wave)) <= 1 / 32768 + 1e-9
    assert out[1, 0] == -1.0
    mono = audio_from_image(as_msg(audio_to_image_fields(wave[0], '32FC1')))
    np.testing.assert_array_equal(mono, wave[:1])


def test_audio_outside_unit_range_is_rejected():
    with pytest.raises(ValueError, match='outside'):
        audio_to_image_fields(np.array([0.5, 1.5], np.float32))
    with pytest.raises(ValueError, match='NaN'):
        audio_to_image_fields(np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match='16SC1 or 32FC1'):
        audio_from_image(as_msg(image_fields(np.zeros((1, 4), np.uint8), 'mono8')))


def test_pcm16_quantises_saturates_and_matches_the_message_path():
    wave = np.array([[-1.0, -0.5, 0.0, 0.25, 1.0]], np.float32)
    pcm = pcm16(wave)
    assert pcm.dtype == np.int16 and pcm.tolist() == [[-32768, -16384, 0, 8192, 32767]]
    # Quantising first (as sources do when they open) sends the same bytes as sending floats.
    assert audio_to_image_fields(pcm)['data'] == audio_to_image_fields(wave)['data']
    with pytest.raises(ValueError, match='must be float'):
        pcm16(np.array([1, 2], np.int32))


def info(fmt='S16LE', channels=1, rate=16000, coding='wave'):
    return SimpleNamespace(channels=channels, sample_rate=rate, sample_format=fmt, bitrate=0,
                           coding_format=coding)


@pytest.mark.parametrize('fmt,dtype,scale,offset', [
    ('S16LE', '<i2', 32768, 0), ('S16BE', '>i2', 32768, 0), ('S32LE', '<i4', 2 ** 31, 0),
    ('F32LE', '<f4', 1, 0), ('F32BE', '>f4', 1, 0), ('U8', 'u1', 128, 128), ('S8', 'i1', 128, 0)])
def test_audio_common_formats_deinterleave(fmt, dtype, scale, offset):
    frames = RNG.uniform(-0.9, 0.9, (50, 2))
    raw = np.round(frames * scale + offset) if dtype[-2] != 'f' else frames
    payload = raw.astype(dtype).tobytes()
    msg = SimpleNamespace(header=None, audio=SimpleNamespace(data=np.frombuffer(payload, np.uint8)))
    out = audio_common_to_array(msg, info(fmt, channels=2))
    assert out.shape == (2, 50)
    np.testing.assert_allclose(out, ((raw - offset) / scale).T, atol=1e-7)


def test_audio_common_odd_bytes_and_reassembly():
    samples = RNG.integers(-32768, 32767, 300).astype('<i2')
    payload = samples.tobytes()
    with pytest.raises(ValueError, match='PcmReassembler'):
        audio_common_to_array(SimpleNamespace(data=payload[:101]), info())
    re = PcmReassembler(info())
    cuts = [0, 1, 2, 77, 301, 302, 599, 600]
    parts = [re.push(payload[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    assert re.pending_bytes == 0
    np.testing.assert_array_equal(np.concatenate(parts, axis=1)[0], samples / 32768.0)


def test_audio_common_rejects_unknown_formats():
    data = SimpleNamespace(data=b'\x00\x00')
    with pytest.raises(ValueError, match='not raw PCM'):
        audio_common_to_array(data, info(coding='MP3'))
    with pytest.raises(ValueError, match='sample_format'):
        audio_common_to_array(data, info(fmt='S24_3LE'))


def test_stamps():
    assert split_stamp(3_000_000_123) == (3, 123)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=3, nanosec=123))
    assert header_stamp_ns(SimpleNamespace(header=header)) == 3_000_000_123
    with pytest.raises(ValueError, match='header'):
        header_stamp_ns(SimpleNamespace(data=b''))


def test_real_message_classes_rosbags_and_rclpy():
    depth = RNG.uniform(0.5, 3, (4, 6)).astype(np.float32)
    from admn_ros.datasets.ros_messages.typestore import make_typestore
    store = make_typestore()
    f = image_fields(depth, '32FC1')
    Image = store.types['sensor_msgs/msg/Image']
    Header = store.types['std_msgs/msg/Header']
    Time = store.types['builtin_interfaces/msg/Time']
    msg = Image(header=Header(stamp=Time(sec=1, nanosec=2), frame_id='cam'),
                **{**f, 'data': np.frombuffer(f['data'], np.uint8)})
    raw = store.serialize_cdr(msg, 'sensor_msgs/msg/Image')
    back = store.deserialize_cdr(raw, 'sensor_msgs/msg/Image')
    np.testing.assert_array_equal(image_to_array(back), depth)

    sensor_msgs = pytest.importorskip('sensor_msgs.msg')
    serialization = pytest.importorskip('rclpy.serialization')
    ros_msg = serialization.deserialize_message(bytes(raw), sensor_msgs.Image)
    np.testing.assert_array_equal(image_to_array(ros_msg), depth)   # data is array.array here
    built = sensor_msgs.Image(**image_fields(depth, '16UC1'))
    assert np.nanmax(np.abs(image_to_array(built) - depth)) <= 0.0005 + 1e-6
