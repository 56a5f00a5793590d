"""admn_ros.runtime without ROS: decoding (admn_ros.wire), rolling audio, sync with quiet
modalities, the frame queue, the worker, and one-frame inference (budget, real skipping, FLOPs,
absent modalities)."""
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from admn_ros.runtime.engine import EngineConfig, FusionEngine, resolve_model_path
from admn_ros.runtime.frame_queue import Frame, FrameQueue
from admn_ros.runtime.modality_sync import ModalitySync
from admn_ros.runtime.rolling_audio import RollingAudio
from admn_ros.runtime.worker import Worker
from admn_ros.wire.sensor_input import RejectedInput, decode_audio, decode_depth, decode_rgb
from admn_ros.datasets.ros_messages.audio_codec import audio_to_image_fields
from admn_ros.datasets.ros_messages.image_codec import image_fields
from admn_ros.quality_estimators.budget import Budget
from tests.fixtures_models import make_random_checkpoint, sample_frame as sample

MODS = ('rgb', 'depth', 'audio')


def image(arr, encoding, **changes):
    fields = image_fields(arr, encoding)
    fields.update(changes)
    return SimpleNamespace(**fields)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    base = tmp_path_factory.mktemp('engine')
    return {'stage1': make_random_checkpoint(base / 'stage1.pt'),
            'controller': make_random_checkpoint(base / 'ctrl.pt', controller=True, seed=1)}


@pytest.fixture(scope='module')
def engine(checkpoints):
    return FusionEngine(EngineConfig(model_path=str(checkpoints['stage1']), policy='naive'))


# --------------------------------------------------------------------------- decoding
def test_decoders_convert_accepted_encodings():
    rgb = sample()['rgb']
    assert np.array_equal(decode_rgb(image(rgb, 'bgr8')), rgb)   # channel order restored
    grey = decode_rgb(image(rgb[..., 0].copy(), 'mono8'))
    assert grey.shape == rgb.shape and np.array_equal(grey[..., 2], rgb[..., 0])
    mm = np.full((16, 16), 1500, np.uint16)
    mm[0, 0] = 0
    depth = decode_depth(image(mm, '16UC1'))
    assert np.isnan(depth[0, 0]) and np.allclose(depth[1:, 1:], 1.5)
    holes = np.full((16, 16), np.nan, np.float32)   # all-invalid depth is a valid reading
    assert np.isnan(decode_depth(image(holes, '32FC1'))).all()
    stereo = np.stack([np.full(100, 0.5), np.full(100, -0.1)]).astype(np.float32)
    mono = decode_audio(SimpleNamespace(**audio_to_image_fields(stereo, '16SC1')))
    assert mono.shape == (100,) and np.allclose(mono, 0.2, atol=1e-4)


def test_depth_keeps_invalid_readings_and_pcm_audio_is_exact():
    depth = np.full((16, 16), 2.0, np.float32)
    depth[0, :3] = (-np.inf, np.inf, np.nan)       # REP 117: too close, too far, no return
    out = decode_depth(image(depth, '32FC1'))
    assert np.array_equal(out, depth, equal_nan=True)
    depth[5, 5] = -0.5                               # one real negative distance among them
    with pytest.raises(RejectedInput, match='negative'):
        decode_depth(image(depth, '32FC1'))
    pcm = np.array([[-32768, -1, 0, 1, 16384, 32767]], np.int16)
    mono = decode_audio(image(pcm, '16SC1'))
    assert mono.dtype == np.float32 and mono.shape == (6,)
    assert np.array_equal(mono, pcm[0].astype(np.float32) / 32768)


@pytest.mark.parametrize('decoder, msg, reason', [
    (decode_rgb, lambda: image(np.zeros((16, 16), np.float32), '32FC1'), 'encoding'),
    (decode_rgb, lambda: image(np.zeros((16, 16, 3), np.uint8), 'rgb8', height=17), 'bytes'),
    (decode_rgb, lambda: image(np.zeros((4, 4, 3), np.uint8), 'rgb8'), 'outside'),
    (decode_depth, lambda: image(np.full((16, 16), -2.0, np.float32), '32FC1'), 'negative'),
    (decode_depth, lambda: image(np.zeros((16, 16, 3), np.uint8), 'rgb8'), 'encoding'),
    (decode_audio, lambda: image(np.full((1, 50), np.nan, np.float32), '32FC1'), 'NaN'),
    (decode_audio, lambda: image(np.full((1, 50), 3.0, np.float32), '32FC1'), 'full scale'),
    (decode_audio, lambda: image(np.zeros((1, 0), np.int16), '16SC1'), 'no samples'),
    (decode_audio, lambda: image(np.zeros((8, 8), np.uint8), 'mono8'), 'encoding'),
])
def test_decoders_reject_bad_input_with_a_reason(decoder, msg, reason):
    with pytest.raises(RejectedInput, match=reason):
        decoder(msg())


# --------------------------------------------------------------------------- audio buffer
def test_rolling_audio_joins_contiguous_chunks_and_restarts_otherwise():
    buf = RollingAudio(clip_samples=1600, gap_tolerance_ns=1_000_000)
    a, b, c, d = (np.full(800, v, np.float32) for v in (0.1, 0.2, 0.3, 0.4))
    assert np.array_equal(buf.push(0, a), a)
    assert np.array_equal(buf.push(50_000_000, b), np.r_[a, b])          # 800 samples = 50 ms
    assert np.array_equal(buf.push(100_000_000, c), np.r_[b, c])         # the newest 1600 kept
    assert np.array_equal(buf.push(160_000_000, d), d)                   # 10 ms gap: new run
    whole = np.full(16000, 0.5, np.float32)                              # a new whole clip
    assert np.array_equal(buf.push(210_000_000, whole), whole[-1600:])
    assert np.array_equal(buf.push(50_000_000, a), a)                    # jump back: new run


# --------------------------------------------------------------------------- queue and worker
def test_frame_queue_keeps_the_latest_or_a_bounded_fifo():
    frames = [Frame(i, '', {}) for i in range(5)]
    latest = FrameQueue(1)
    for f in frames:
        latest.put(f)
    assert latest.get(0).stamp_ns == 4 and latest.dropped == 4 and latest.get(0) is None
    fifo = FrameQueue(3)
    for f in frames:
        fifo.put(f)
    assert [fifo.get(0).stamp_ns for _ in range(3)] == [2, 3, 4] and fifo.dropped == 2
    fifo.close()
    assert fifo.put(frames[0]) is False and fifo.get(1.0) is None   # closed: no wait


def test_worker_survives_a_failing_frame_and_never_blocks_intake():
    queue, done, errors = FrameQueue(100), [], []
    gate = threading.Event()

    def process(frame):
        gate.wait(5)
        if frame.stamp_ns == 1:
            raise RuntimeError('boom')
        done.append(frame.stamp_ns)

    worker = Worker(queue, process, lambda f, e: errors.append((f.stamp_ns, str(e)))).start()
    t0 = time.monotonic()
    for i in range(4):
        assert queue.put(Frame(i, '', {}))   # returns at once although the worker is stuck
    assert time.monotonic() - t0 < 0.5
    gate.set()
    deadline = time.monotonic() + 5
    while len(done) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    assert done == [0, 2, 3] and errors == [(1, 'boom')]


# --------------------------------------------------------------------------- sync
class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_sync_drops_a_quiet_modality_rematches_its_partners_and_takes_it_back():
    clock, frames = FakeClock(), []
    sync = ModalitySync(('audio', 'rgb'), frames.append, queue_size=10, slop_ns=10_000_000,
                        timeout_s=0.5, clock=clock)
    assert sync.modalities == ('rgb', 'audio')          # canonical order
    ms = 1_000_000
    sync.add('rgb', 100 * ms, 'cam', 'r100')
    clock.t = 0.05
    sync.add('audio', 100 * ms, 'mic', 'a100')
    assert [(f.stamp_ns, f.frame_id, f.data) for f in frames] == [
        (100 * ms, 'cam', {'rgb': 'r100', 'audio': 'a100'})]
    # Audio stops; rgb keeps coming and waits for a partner ...
    for k, t in ((200, 0.1), (300, 0.3), (400, 0.5)):
        clock.t = t
        sync.add('rgb', k * ms, 'cam', f'r{k}')
    assert len(frames) == 1 and sync.live == ('rgb', 'audio')
    clock.t = 0.56                                        # audio silent for 0.51 s
    assert sync.check() == ('rgb',) and sync.quiet() == ('audio',)
    # ... and the queued rgb frames go out alone, in order, once audio is dropped.
    assert [(f.stamp_ns, tuple(f.data)) for f in frames[1:]] == [
        (k * ms, ('rgb',)) for k in (200, 300, 400)]
    clock.t = 0.6
    sync.add('rgb', 500 * ms, 'cam', 'r500')
    assert frames[-1].stamp_ns == 500 * ms
    clock.t = 0.7                                         # audio is back
    sync.add('audio', 600 * ms, 'mic', 'a600')
    assert sync.live == ('rgb', 'audio') and len(frames) == 5
    sync.add('rgb', 600 * ms, 'cam', 'r600')
    assert frames[-1].data == {'rgb': 'r600', 'audio': 'a600'}


def test_sync_expects_every_modality_at_start_and_after_an_idle_spell():
    clock, frames = FakeClock(), []
    sync = ModalitySync(('rgb', 'audio'), frames.append, slop_ns=10_000_000, timeout_s=0.5,
                        clock=clock)
    clock.t = 0.3
    sync.add('rgb', 1, 'cam', 'r1')          # audio not seen yet, but still expected
    assert frames == []
    clock.t = 0.45
    sync.add('audio', 1, 'mic', 'a1')
    assert len(frames) == 1 and set(frames[0].data) == {'rgb', 'audio'}
    clock.t = 10.0                            # everything quiet
    assert sync.check() == ()
    sync.add('rgb', 50, 'cam', 'r50')         # first message after the idle spell
    assert sync.live == ('rgb', 'audio') and len(frames) == 1
    clock.t = 10.3
    sync.add('rgb', 60, 'cam', 'r60')
    clock.t = 10.55                           # audio never came back: rgb goes alone
    assert sync.check() == ('rgb',)
    assert [f.data for f in frames[1:]] == [{'rgb': 'r50'}, {'rgb': 'r60'}]


# --------------------------------------------------------------------------- inference
def frame_of(data, stamp=7):
    return Frame(stamp_ns=stamp, frame_id='camera', data=dict(data))


def count_block_calls(model):
    calls = {m: 0 for m in model.encoders}
    handles = []
    for m, enc in model.encoders.items():
        for block in enc.blocks:
            def hook(*_, m=m):
                calls[m] += 1
            handles.append(block.register_forward_hook(hook))
    return calls, handles


@pytest.mark.parametrize('unit', ['layers', 'flops'])
def test_inference_keeps_the_budget_really_skips_and_counts_flops(engine, unit):
    data = sample(3)
    last_gflops = 0.0
    for fraction in (0.25, 0.5, 1.0):
        calls, handles = count_block_calls(engine.model)
        try:
            inf = engine.infer(frame_of(data), Budget(fraction, unit))
        finally:
            for h in handles:
                h.remove()
        assert inf.present == MODS and inf.stamp_ns == 7 and inf.frame_id == 'camera'
        assert inf.budget_spent <= fraction + 1e-9
        assert calls == inf.layers                        # skipped blocks never ran
        expected = engine.cost.total_flops({m: inf.keep[m] for m in MODS})[0] / 1e9
        assert inf.gflops == pytest.approx(expected, rel=1e-12)
        assert inf.gflops > last_gflops
        last_gflops = inf.gflops
        assert abs(inf.probs.sum() - 1) < 1e-5
        assert inf.class_name == engine.class_names[inf.class_id]
        assert set(inf.quality) == set(MODS) and all(0 <= q <= 1 for q in inf.quality.values())


def test_accounting_can_follow_the_prediction(engine):
    # A node publishes the prediction first and accounts afterwards: same numbers either way.
    frame = frame_of(sample(4))
    whole = engine.infer(frame, Budget(0.5, 'flops'))
    bare = engine.infer(frame, Budget(0.5, 'flops'), account=False)
    assert np.isnan(bare.gflops) and np.isnan(bare.budget_spent)
    assert bare.class_id == whole.class_id and np.array_equal(bare.probs, whole.probs)
    assert engine.account(bare) is bare
    assert (bare.gflops, bare.budget_spent) == (whole.gflops, whole.budget_spent)
    assert 0 < bare.budget_spent <= 0.5


def test_an_absent_modality_gives_its_budget_to_the_others(engine):
    data = sample(1)
    full = engine.infer(frame_of(data), Budget(0.5))
    partial = engine.infer(frame_of({m: data[m] for m in ('rgb', 'audio')}), Budget(0.5))
    assert partial.present == ('rgb', 'audio') and partial.layers['depth'] == 0
    kept = lambda inf: inf.layers['rgb'] + inf.layers['audio']  # noqa: E731
    assert kept(partial) > kept(full)
    assert sum(partial.layers.values()) == sum(full.layers.values())   # same 0.5 of 12 layers


def test_inference_matches_a_batched_offline_run(engine):
    import torch
    from admn_ros.datasets.sample import concat
    frames = [sample(i) for i in range(4)]
    online = [engine.infer(frame_of(d), Budget(0.5)) for d in frames]
    batch = concat([{m: d[m][None] for m in MODS} for d in frames])
    keep = engine.policy.allocate(batch, Budget(0.5), MODS)
    with torch.inference_mode():
        masks = {m: torch.as_tensor(keep[m]) for m in MODS}
        logits = engine.model(engine.preprocessor(batch), masks)
    offline = torch.softmax(logits, -1).numpy()
    for i, inf in enumerate(online):
        assert all(np.array_equal(inf.keep[m], keep[m][i]) for m in MODS)
        assert np.allclose(inf.probs, offline[i], atol=1e-5)


def test_admn_policy_needs_a_controller_and_its_cost_is_counted(checkpoints):
    with pytest.raises(ValueError, match='no controller'):
        FusionEngine(EngineConfig(model_path=str(checkpoints['stage1']), policy='admn'))
    eng = FusionEngine(EngineConfig(model_path=str(checkpoints['controller']), policy='admn',
                                    quality=False))
    inf = eng.infer(frame_of(sample(2)), Budget(0.5, 'flops'))
    model_flops = eng.cost.total_flops({m: inf.keep[m] for m in MODS})[0]
    assert eng.controller_flops > 0 and inf.quality == {}
    assert inf.gflops * 1e9 == pytest.approx(model_flops + eng.controller_flops, rel=1e-12)
    assert inf.budget_spent <= 0.5 + 1e-9 and all(inf.keep[m][0] for m in MODS)


def test_model_path_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv('ADMN_CACHE_DIR', str(tmp_path / 'cache'))
    with pytest.raises(FileNotFoundError, match='admn train defaults'):
        resolve_model_path('', 'synthetic-nowhere')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        resolve_model_path(str(tmp_path / 'missing.pt'), 'synthetic')
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a checkpoint')
    from admn_ros.fusion.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match='junk.pt'):
        FusionEngine(EngineConfig(model_path=str(junk), policy='full'))
    with pytest.raises(ValueError, match='not in the model'):
        FusionEngine(EngineConfig(model_path=str(make_random_checkpoint(
            tmp_path / 'two.pt', modalities=('rgb', 'audio'))), policy='full',
            modalities=('depth',)))


@pytest.mark.slow
def test_the_runtime_imports_no_rclpy():
    """The per-frame core runs (and is tested) without ROS: only the node adapts it to rclpy."""
    import subprocess
    import sys
    code = ('import sys\n'
            'import admn_ros.runtime.engine, admn_ros.runtime.intake, admn_ros.runtime.worker\n'
            "assert not [m for m in sys.modules if m.split('.')[0] == 'rclpy']\n")
    subprocess.run([sys.executable, '-c', code], check=True)
