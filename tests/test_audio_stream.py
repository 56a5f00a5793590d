"""AudioDataStamped through admn_fusion's intake, in the format its AudioInfo names: a 44.1 kHz
stereo stream split mid-frame comes out as the offline bag reader and a whole-signal soxr
resample give it, with continuous stamps that RollingAudio joins into full clips; buffers without
a usable AudioInfo are refused and counted; 16 kHz mono S16LE decodes exactly as before.

audio_common_msgs is not built everywhere, so the messages are the rosbags-flavour classes the
bag tools use (the same field names as the rclpy ones).
"""
from types import SimpleNamespace

import numpy as np
import pytest
import soxr

from admn_ros import wire
from admn_ros.datasets.bags import read_streams
from admn_ros.runtime.audio_stream import AudioStreamDecoder
from admn_ros.runtime.intake import Intake
from admn_ros.runtime.rolling_audio import RollingAudio
from admn_ros.wire import topics as T
from admn_ros.datasets.ros_messages.typestore import bag_messages
from tests.test_bags import write_raw_bag

BAG = bag_messages()
START = 1_700_000_000_000_000_000
MIC_RATE = 44100
SECONDS = 2.0
CLIP = 8000                      # RollingAudio window: 0.5 s at 16 kHz


def info(channels=2, rate=MIC_RATE, fmt='S16LE', coding='wave'):
    return wire.audio_info_msg(SimpleNamespace(channels=channels, sample_rate=rate,
                                               sample_format=fmt, coding_format=coding,
                                               bitrate=0), BAG)


def stamped(payload: bytes, stamp_ns: int):
    audio = BAG.cls(T.AUDIO_DATA_TYPE)(data=np.frombuffer(payload, np.uint8))
    return BAG.cls(T.AUDIO_STAMPED_TYPE)(header=wire.header(stamp_ns, 'mic', BAG), audio=audio)


def stereo_stream(seconds=SECONDS, rate=MIC_RATE):
    """float [2, T] (different tones left and right, plus noise) and its S16LE interleaved bytes."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(0).normal(0, 0.05, (2, len(t)))
    wave = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1250 * t)]) + noise
    pcm = wire.pcm16(np.clip(wave, -1, 1))
    return pcm.astype(np.float32) / 32768.0, np.ascontiguousarray(pcm.T).tobytes()


def odd_buffers(payload: bytes, frame_bytes=4, frames=1024, rate=MIC_RATE, clock=lambda t: t):
    """~``frames``-frame buffers cut at odd byte offsets (every one ends mid-frame), each stamped
    at its first byte's (fractional) frame as the offline reader expects; ``clock`` maps the
    sample-clock time (ns after START) to the header clock."""
    step = frames * frame_bytes
    cuts = [0] + [k * step + (1, 7, 3, 5, 9)[k % 5] for k in range(1, len(payload) // step)]
    cuts.append(len(payload))
    assert all(c % 2 for c in cuts[1:-1])
    return [(START + int(round(clock(a / frame_bytes * 1e9 / rate))), payload[a:b])
            for a, b in zip(cuts[:-1], cuts[1:])]


def live(buffers, info_msg=None, clip=CLIP):
    """Feed ``buffers`` through an audio-only Intake; (decoder chunks, queued frames, rejects)."""
    chunks, rejects = [], []
    intake = Intake(('audio',), clip, queue_depth=100_000,
                    on_reject=lambda m, reason: rejects.append(reason))
    push = intake.audio_stream.push

    def spy(*args, **kwargs):
        out = push(*args, **kwargs)
        if out is not None:
            chunks.append(out)
        return out
    intake.audio_stream.push = spy
    if info_msg is not None:
        intake.set_audio_info(info_msg)
    for stamp, payload in buffers:
        intake.accept('audio', stamped(payload, stamp))
    frames = []
    while len(intake.queue):
        frames.append(intake.queue.get(timeout=0))
    return chunks, frames, rejects, intake


@pytest.fixture(scope='module')
def mic():
    wave, payload = stereo_stream()
    mono = wave.mean(axis=0).astype(np.float32)
    return SimpleNamespace(wave=wave, payload=payload, whole=soxr.resample(mono, MIC_RATE, 16000),
                           buffers=odd_buffers(payload))


def test_44k_stereo_split_mid_frame_matches_offline_reader_and_whole_resample(mic, tmp_path):
    chunks, frames, rejects, _ = live(mic.buffers, info())
    assert rejects == []
    out = np.concatenate([w for _, w in chunks])
    # Only the resampler's delay is still inside at the end: a few hundred samples, not more.
    assert len(mic.whole) - 800 < len(out) < len(mic.whole)
    np.testing.assert_allclose(out, mic.whole[:len(out)], atol=1e-6)

    items = [(T.AUDIO_INFO_TOPIC, T.AUDIO_INFO_TYPE, START, info())]
    items += [(T.AUDIO_STAMPED_TOPIC, T.AUDIO_STAMPED_TYPE, t, stamped(p, t))
              for t, p in mic.buffers]
    offline = read_streams(write_raw_bag(tmp_path / 'mic', items)).streams['audio']
    assert len(offline) == 1 and offline[0][1] == START     # one continuous clip
    np.testing.assert_allclose(out, offline[0][2][:len(out)], atol=1e-6)
    # The former fixed decode (16 kHz mono S16LE) is nothing like it: the tolerance tells them apart.
    former = np.frombuffer(mic.payload, '<i2')[:len(out)] / 32768.0
    assert np.max(np.abs(former - out)) > 0.1


def test_chunk_stamps_are_capture_times_and_rolling_audio_gives_full_clips(mic):
    chunks, frames, _, _ = live(mic.buffers, info())
    first = 0
    for stamp, wave in chunks:   # capture time of the chunk's first 16 kHz sample, to the ns
        assert abs(stamp - (START + first * 1e9 / 16000)) <= 1, first
        first += len(wave)
    # Consecutive chunks join within RollingAudio's default tolerance (2 ms), by far.
    ends = [s + round(len(w) * 1e9 / 16000) for s, w in chunks]
    assert max(abs(s - e) for (s, _), e in zip(chunks[1:], ends[:-1])) <= 2
    assert len(frames) == len(chunks)
    done = 0
    for (stamp, wave), frame in zip(chunks, frames):
        done += len(wave)
        assert frame.stamp_ns == stamp
        if done >= CLIP:   # never split: every window is a full clip ending with its chunk
            np.testing.assert_array_equal(frame.data['audio'], mic.whole[done - CLIP:done])
    assert done > 3 * CLIP


def test_stamps_follow_a_drifting_jittery_header_clock(mic):
    """Header stamps 500 ppm off the sound card's clock, +-0.3 ms jitter: still one run of full
    clips, and each chunk is stamped on the header clock (not on the sample count)."""
    jitter = np.random.default_rng(3).uniform(-3e5, 3e5, 1000)
    buffers = odd_buffers(mic.payload, clock=lambda t: t * 1.0005 + jitter[int(t // 2.3e7)])
    chunks, frames, rejects, _ = live(buffers, info())
    assert rejects == [] and len(frames) == len(chunks)
    first = 0
    for (stamp, wave), frame in zip(chunks, frames):
        assert abs(stamp - (START + first * 1e9 / 16000 * 1.0005)) < 3.5e5   # jitter, no drift
        first += len(wave)
        if first >= CLIP:
            assert len(frame.data['audio']) == CLIP
    assert first * 1e9 / 16000 * 5e-4 > 9e5   # the drift by the end is far beyond that bound
    np.testing.assert_allclose(np.concatenate([w for _, w in chunks]), mic.whole[:first],
                               atol=1e-6)


def test_gap_starts_a_new_run_stamped_at_its_buffer():
    decoder = AudioStreamDecoder()
    decoder.set_info(info(channels=1, rate=16000))
    pcm = np.arange(-800, 800, dtype='<i2').tobytes()
    assert decoder.push(START, pcm[:1001])[0] == START
    after_gap = START + 10**9
    stamp, wave = decoder.push(after_gap, pcm[1001:])   # the odd byte left over is dropped
    assert stamp == after_gap and len(wave) == (len(pcm) - 1002) // 2


def test_no_or_unusable_audio_info_is_refused_and_counted(mic):
    buffers = mic.buffers[:5]
    _, frames, rejects, intake = live(buffers)
    assert frames == [] and len(rejects) == 5
    assert rejects[0] == ('no AudioInfo on audio/audio_info yet: sample format, rate and '
                          'channels unknown')
    assert intake.counters.snapshot()['audio']['rejected'] == 5
    assert intake.counters.last_reject == f'audio: {rejects[0]}'

    for bad, why in [(info(coding='mp3'), 'not raw PCM'), (info(fmt='S24_3LE'), 'sample_format'),
                     (info(channels=0), 'channels')]:
        _, frames, rejects, intake = live(buffers, bad)
        assert frames == [] and len(rejects) == 5 and intake.counters.total_rejected() == 5
        assert rejects[0].startswith('unusable AudioInfo on audio/audio_info: ') and why in rejects[0]

    # A usable AudioInfo after a bad one, then the same one again (latched topics re-send it):
    # decoding starts, and the repeat does not restart the stream.
    _, _, _, intake = live([], info(coding='mp3'))
    intake.set_audio_info(info())
    for stamp, payload in buffers:
        intake.accept('audio', stamped(payload, stamp))
        intake.set_audio_info(info())
    assert intake.counters.total_rejected() == 0 and len(intake.queue) >= 2
    while len(intake.queue) > 1:
        intake.queue.get(timeout=0)
    assert len(intake.queue.get(timeout=0).data['audio']) > 1000   # one run: the window grew

    intake.reset()   # activation: the AudioInfo is learned again from the new subscription
    intake.accept('audio', stamped(mic.buffers[5][1], mic.buffers[5][0]))
    assert intake.counters.total_rejected() == 1


def test_16k_mono_s16le_decodes_exactly_as_before():
    """The stream sensor_source publishes (wire.audio_stamped_msg, AUDIO_INFO): the chunks are
    bit-identical to the fixed S16LE-mono decode that was the only one, stamps unchanged."""
    rng = np.random.default_rng(4)
    msgs = [wire.audio_stamped_msg(rng.uniform(-1, 1, 1600).astype(np.float32),
                                   START + k * 100_000_000, flavour=BAG) for k in range(12)]
    chunks, frames, rejects, _ = live([(wire.header_stamp_ns(m), bytes(m.audio.data))
                                       for m in msgs], wire.audio_info_msg(flavour=BAG), clip=4000)
    before = RollingAudio(4000)
    assert rejects == [] and len(chunks) == len(frames) == len(msgs)
    for msg, (stamp, wave), frame in zip(msgs, chunks, frames):
        old = wire.audio_common_to_array(msg, wire.AUDIO_INFO)[0]   # the former decode
        assert stamp == wire.header_stamp_ns(msg) and wave.dtype == np.float32
        assert np.array_equal(wave, old)
        assert np.array_equal(frame.data['audio'], before.push(stamp, old))


def test_stateless_decoder_refuses_audio_data_stamped():
    msg = wire.audio_stamped_msg(np.zeros(160, np.float32), START, flavour=BAG)
    with pytest.raises(wire.RejectedInput, match='AudioInfo'):
        wire.decode_audio(msg)
