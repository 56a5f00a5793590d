"""admn_fusion, evaluator and budget_manager over real rclpy in one process (private context)."""
import itertools
import json
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from admn_ros import graph as G  # noqa: E402
from admn_ros import wire  # noqa: E402
from admn_ros.node_utils import EXECUTOR_ENV, executor_kind, make_executor  # noqa: E402
from admn_ros.nodes.admn_fusion import AdmnFusion  # noqa: E402
from tests.fixtures_models import RosHarness, make_random_checkpoint, sample_frame  # noqa: E402

pytestmark = pytest.mark.ros
MODS = ('rgb', 'depth', 'audio')
_ids = itertools.count()


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp('fusion') / 'model.pt')


@pytest.fixture
def ros(ros_context):
    made = []

    def make(executor=None):
        """A harness; ``executor`` ('events' / 'single') spins it as node processes do
        (:func:`admn_ros.node_utils.make_executor`) instead of the harness default."""
        h = RosHarness(ros_context, f'/fusion_{os.getpid()}_{next(_ids)}')
        if executor is not None:
            h.executor.shutdown()
            h.executor = make_executor(executor, context=ros_context)
            h.executor.add_node(h.probe)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def fusion_node(h, model, remap=(), **params):
    params = {'model_path': str(model), 'policy': 'naive', **params}
    cli = ['--ros-args'] + [x for a, b in remap for x in ('-r', f'{a}:={b}')] if remap else None
    return h.add(AdmnFusion(context=h.ctx, namespace=h.namespace, cli_args=cli,
                            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))


class Feeder:
    """Publishes sample frames (all modalities share the stamp) from the probe node."""

    def __init__(self, h):
        self.h = h
        self.pubs = {m: h.publisher(Image, wire.SENSOR_TOPICS[m]) for m in MODS}
        self.samples = [sample_frame(i) for i in range(3)]
        self.count = 0

    def send(self, modalities=MODS):
        data = self.samples[self.count % len(self.samples)]
        stamp = self.h.probe.get_clock().now().nanoseconds
        build = {'rgb': wire.rgb_msg, 'depth': wire.depth_msg, 'audio': wire.audio_msg}
        for m in modalities:
            self.pubs[m].publish(build[m](data[m], stamp))
        self.count += 1
        return stamp

    def run(self, seconds, period=0.05, modalities=MODS, until=None):
        """Send a frame every ``period`` while spinning, for ``seconds`` or until ``until()``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            self.send(modalities)
            self.h.spin_for(period)


def allocations(msgs):
    return [wire.read_allocation(m) for m in msgs]


def total_layers(alloc):
    return sum(alloc['layers'].values())


def mean_layers(allocs):
    return {m: float(np.mean([a['layers'][m] for a in allocs])) for m in MODS}


def wait_future(h, future, timeout=5.0):
    assert h.spin_until(future.done, timeout), 'parameter service did not answer'
    return future.result()


# --------------------------------------------------------------------------- the pipeline
def test_noise_on_one_modality_moves_its_layers_to_the_others(ros, model):
    from admn_ros.nodes.noise_injector import NoiseInjector
    from admn_ros.nodes.sensor_source import SensorSource
    h = ros()
    h.add(SensorSource(context=h.ctx, namespace=h.namespace, parameter_overrides=[
        Parameter('source', value='synthetic'), Parameter('dataset_size', value=24),
        Parameter('rate_hz', value=20.0)]))
    injector = h.add(NoiseInjector(context=h.ctx, namespace=h.namespace))
    fusion_node(h, model, remap=G._FROM_INJECTOR, policy='heuristic', budget=0.5)
    got = h.listen(wire.output_class(wire.ALLOCATION), wire.ALLOCATION)
    assert h.spin_until(lambda: len(got) >= 10, 20), 'no allocations from the pipeline'
    before = mean_layers(allocations(got[2:]))
    injector.set_parameters([Parameter('audio.type', value='white_noise'),
                             Parameter('audio.severity', value=1.0)])
    n = len(got)
    assert h.spin_until(lambda: len(got) >= n + 12, 20)
    after_allocs = allocations(got[n + 4:])   # skip frames already on their way
    after = mean_layers(after_allocs)
    assert all(total_layers(a) == 6 for a in after_allocs)   # half of 3 x 4 layers either way
    # Audio at -10 dB SNR has no quality left: only its always-on first layer remains ...
    assert after['audio'] == 1.0 and before['audio'] >= 1.75, (before, after)
    # ... and the layers it gave up went to the camera and the depth sensor.
    assert after['rgb'] + after['depth'] >= before['rgb'] + before['depth'] + 0.75, (before, after)


def test_budget_changes_through_parameters_and_topic_apply_to_the_next_frames(ros, model):
    h = ros()
    fusion = fusion_node(h, model, budget=0.5)
    feeder = Feeder(h)
    got = h.listen(wire.output_class(wire.ALLOCATION), wire.ALLOCATION)
    feeder.run(10, until=lambda: len(got) >= 3)
    assert {(a['fraction'], total_layers(a)) for a in allocations(got)} == {(0.5, 6)}

    client = AsyncParameterClient(h.probe, f'{h.namespace}/admn_fusion')
    assert client.wait_for_services(timeout_sec=5.0)
    result = wait_future(h, client.set_parameters([Parameter('budget', value=0.25)]))
    assert result.results[0].successful
    # A manual set takes the budget from the topic (next test); hand it back for the topic checks.
    assert fusion.set_parameters([Parameter('budget_from_topic', value=True)])[0].successful
    n = len(got)
    feeder.run(10, until=lambda: len(got) >= n + 5)
    later = allocations(got[n + 2:])          # at most one frame in flight, one waiting
    assert later and {(a['fraction'], total_layers(a)) for a in later} == {(0.25, 3)}

    for name, value, reason in (('budget', 1.5, ''), ('budget', 0.0, 'out of range'),
                                ('budget_unit', 'watts', 'budget_unit')):
        result = wait_future(h, client.set_parameters([Parameter(name, value=value)]))
        assert not result.results[0].successful and reason in result.results[0].reason
    assert fusion.get_parameter('budget').value == 0.25

    budget_pub = h.publisher(Float32, wire.BUDGET, wire.budget_qos())
    budget_pub.publish(Float32(data=float('nan')))   # ignored and counted
    assert h.spin_until(lambda: fusion.budget_owner.rejected == 1, 5)
    budget_pub.publish(Float32(data=0.005))          # below the one BUDGET_RANGE
    assert h.spin_until(lambda: fusion.budget_owner.rejected == 2, 5)
    assert fusion.get_parameter('budget').value == 0.25
    budget_pub.publish(Float32(data=0.75))
    assert h.spin_until(lambda: fusion.get_parameter('budget').value == 0.75, 5)
    n = len(got)
    feeder.run(10, until=lambda: len(got) >= n + 5)
    assert {(a['fraction'], total_layers(a)) for a in allocations(got[n + 2:])} == {(0.75, 9)}


def test_a_manual_budget_holds_against_the_topic_until_handed_back(ros, model):
    """Who owns the budget: a manual set (as `ros2 param set`) turns budget_from_topic off in the
    same change; budget_manager's messages are then counted, not applied, until it is set true,
    which applies the latest topic value at once."""
    h = ros()
    fusion = fusion_node(h, model, budget=0.5)
    budget_pub = h.publisher(Float32, wire.BUDGET, wire.budget_qos())
    budget_pub.publish(Float32(data=0.75))        # the topic drives the budget ...
    assert h.spin_until(lambda: fusion.get_parameter('budget').value == 0.75, 5)
    assert fusion.get_parameter('budget_from_topic').value is True

    client = AsyncParameterClient(h.probe, f'{h.namespace}/admn_fusion')
    assert client.wait_for_services(timeout_sec=5.0)
    result = wait_future(h, client.set_parameters([Parameter('budget', value=0.3)]))
    assert result.results[0].successful                          # ... until set by hand
    assert fusion.get_parameter('budget_from_topic').value is False
    budget_pub.publish(Float32(data=0.9))
    assert h.spin_until(lambda: fusion.budget_owner.held == 1, 5)
    assert fusion.get_parameter('budget').value == 0.3 and fusion.budget.fraction == 0.3
    status = {s.name: s for s in fusion.diagnostics.build().status}['admn_fusion: allocation']
    assert 'set by hand' in status.message
    assert {kv.key: kv.value for kv in status.values}['held budget messages'] == '1'

    result = wait_future(h, client.set_parameters([Parameter('budget_from_topic', value=True)]))
    assert result.results[0].successful                          # handed back: latest applies
    assert fusion.get_parameter('budget').value == 0.9 and fusion.budget.fraction == 0.9
    budget_pub.publish(Float32(data=0.4))
    assert h.spin_until(lambda: fusion.get_parameter('budget').value == 0.4, 5)
    assert fusion.get_parameter('budget_from_topic').value is True


def test_a_stopped_sensor_loses_its_layers_within_a_second(ros, model):
    h = ros()
    fusion_node(h, model, budget=0.5, modality_timeout_s=0.5)
    feeder = Feeder(h)
    seen = []   # (receipt time, allocation)
    h.probe.create_subscription(wire.output_class(wire.ALLOCATION), wire.ALLOCATION,
                                lambda m: seen.append((time.monotonic(),
                                                       wire.read_allocation(m))), 500)
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    feeder.run(10, until=lambda: len(seen) >= 5)
    assert all(a['present'] == dict.fromkeys(MODS, True) for _, a in seen)

    stopped = time.monotonic()
    n_pred = len(preds)
    feeder.run(2.0, modalities=('rgb', 'depth'))   # the microphone stops
    without = [(t, a) for t, a in seen if t > stopped and not a['present']['audio']]
    assert without, 'audio never dropped'
    assert without[0][0] - stopped < 1.0
    for _, a in without:   # its budget goes to the others (naive: 3 + 3 of 6)
        assert a['layers'] == {'rgb': 3, 'depth': 3, 'audio': 0}
    assert len(preds) - n_pred >= 5   # fusion kept publishing (a loaded machine delivers fewer)

    back = time.monotonic()
    feeder.run(10, until=lambda: any(t > back and a['present']['audio'] for t, a in seen))
    assert seen[-1][1]['layers'] == {'rgb': 2, 'depth': 2, 'audio': 2}


def test_bad_input_is_rejected_counted_and_survived(ros, model):
    h = ros()
    fusion = fusion_node(h, model)
    feeder = Feeder(h)
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    feeder.run(10, until=lambda: len(preds) >= 1)
    stamp = h.probe.get_clock().now().nanoseconds
    good = sample_frame(0)
    wrong_encoding = wire.image_msg(good['depth'], '32FC1', stamp)
    truncated = wire.rgb_msg(good['rgb'], stamp)
    truncated.height += 5                      # data no longer matches height x step
    nan_audio = wire.audio_msg(np.zeros(800, np.float32), stamp, encoding='32FC1')
    nan_audio.data = np.full(800, np.nan, np.float32).tobytes()
    negative = wire.depth_msg(np.full((16, 16), -1.0, np.float32), stamp)
    before_epoch = wire.depth_msg(good['depth'], stamp)
    before_epoch.header.stamp.sec = -1                 # int32 on the wire: it can arrive
    for m, msg in (('rgb', wrong_encoding), ('rgb', truncated), ('audio', nan_audio),
                   ('depth', negative), ('depth', before_epoch)):
        feeder.pubs[m].publish(msg)
    assert h.spin_until(lambda: fusion.counters.total_rejected() == 5, 5)
    assert fusion.counters.rejected == {'rgb': 2, 'depth': 2, 'audio': 1}
    # A set whose audio is a stream's first, short chunk (16 ms) is valid: it runs zero-padded.
    n = len(preds)
    short = h.probe.get_clock().now().nanoseconds
    feeder.pubs['rgb'].publish(wire.rgb_msg(good['rgb'], short))
    feeder.pubs['depth'].publish(wire.depth_msg(good['depth'], short))
    feeder.pubs['audio'].publish(wire.audio_msg(good['audio'][:256], short))
    assert h.spin_until(lambda: any(wire.stamp_to_ns(p.header.stamp) == short for p in preds), 5)
    feeder.run(10, until=lambda: len(preds) >= n + 4)   # still working
    assert fusion.failed == 0
    status = {s.name: s for s in fusion.diagnostics.build().status}['admn_fusion: inputs']
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == bytes([1]) and values['rgb rejected'] == '2'
    assert values['last reject'].split(':')[0] in MODS   # the latest reason, with its modality


@pytest.mark.parametrize('executor', [None, 'events'], ids=['harness', 'events'])
def test_lifecycle_loads_on_configure_and_frees_on_cleanup(ros, model, tmp_path, monkeypatch,
                                                           executor):
    from rclpy.lifecycle import TransitionCallbackReturn as R
    from std_srvs.srv import SetBool
    h = ros(executor)
    monkeypatch.setenv('ADMN_CACHE_DIR', str(tmp_path))
    with pytest.raises(ValueError, match='admn train defaults'):   # autostart, no model at all
        AdmnFusion(context=h.ctx, namespace=h.namespace, node_name='no_model',
                   parameter_overrides=[Parameter('dataset', value='nowhere')])

    fusion = fusion_node(h, tmp_path / 'missing.pt', autostart=False)
    topic = f'{h.namespace}/{wire.RGB}'
    assert fusion.state_label() == 'unconfigured' and fusion.engine is None
    assert fusion.trigger_configure() == R.FAILURE and 'does not exist' in fusion.last_error
    fusion.set_parameters([Parameter('model_path', value=str(model))])
    assert fusion.trigger_configure() == R.SUCCESS and fusion.state_label() == 'inactive'
    assert h.probe.count_subscribers(topic) == 0          # no intake before activation
    assert fusion.trigger_activate() == R.SUCCESS
    feeder = Feeder(h)
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    feeder.run(10, until=lambda: len(preds) >= 2)
    assert len(preds) >= 2

    engine = fusion.engine
    assert fusion.trigger_deactivate() == R.SUCCESS and fusion.engine is engine   # still loaded
    # The events executor lets go of a destroyed subscription on its next turn.
    assert h.spin_until(lambda: h.probe.count_subscribers(topic) == 0, 2)
    h.spin_for(0.2)                                       # what was published before arrives
    n = len(preds)
    feeder.run(0.5)
    assert len(preds) == n

    fusion.set_parameters([Parameter('policy', value='every_other')])
    assert fusion.trigger_activate() == R.SUCCESS and fusion.engine is engine     # not reloaded
    feeder.run(10, until=lambda: len(preds) >= n + 2)
    assert len(preds) >= n + 2
    # Cleanup frees the model; the next configure loads it with the parameters of now.
    assert fusion.trigger_deactivate() == R.SUCCESS and fusion.trigger_cleanup() == R.SUCCESS
    assert fusion.engine is None and fusion.state_label() == 'unconfigured'
    assert fusion.trigger_configure() == R.SUCCESS and fusion.engine.cfg.policy == 'every_other'
    assert fusion.trigger_activate() == R.SUCCESS
    n = len(preds)
    feeder.run(10, until=lambda: len(preds) >= n + 2)
    assert len(preds) >= n + 2

    client = h.probe.create_client(SetBool, f'{h.namespace}/admn_fusion/enable')
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(SetBool.Request(data=False))
    assert h.spin_until(future.done, 5) and future.result().message == 'paused'
    h.spin_for(0.2)
    n = len(preds)
    feeder.run(0.5)
    assert len(preds) == n
    future = client.call_async(SetBool.Request(data=True))
    assert h.spin_until(future.done, 5)
    feeder.run(10, until=lambda: len(preds) >= n + 2)
    assert len(preds) >= n + 2
    assert fusion.trigger_deactivate() == R.SUCCESS
    assert fusion.trigger_cleanup() == R.SUCCESS and fusion.state_label() == 'unconfigured'

    # A failing transition goes through on_error to unconfigured, leaving nothing behind.
    prediction_topic = f'{h.namespace}/{wire.PREDICTION}'
    assert fusion.trigger_configure() == R.SUCCESS
    assert h.spin_until(lambda: h.probe.count_publishers(prediction_topic) == 1, 2)
    def broken(audio_input):
        raise RuntimeError('subscription failed')
    monkeypatch.setattr(fusion, '_subscribe', broken)
    assert fusion.trigger_activate() != R.SUCCESS and fusion.state_label() == 'unconfigured'
    assert fusion.engine is None and fusion.pubs == {}
    monkeypatch.undo()
    assert fusion.trigger_configure() == R.SUCCESS
    assert h.spin_until(lambda: h.probe.count_publishers(prediction_topic) == 1, 2)


def test_outputs_carry_the_source_stamp_quality_and_cost(ros, model):
    h = ros()
    fusion_node(h, model, budget=0.5, budget_unit='flops')
    feeder = Feeder(h)
    outs = {k: h.listen(wire.output_class(t), t) for k, t in (
        ('allocation', wire.ALLOCATION), ('quality', wire.QUALITY), ('inference', wire.INFERENCE))}
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    stamps = set()
    deadline = time.monotonic() + 10
    while len(outs['inference']) < 3 and time.monotonic() < deadline:
        stamps.add(feeder.send())
        h.spin_for(0.05)
    stamp, class_id, score = wire.read_prediction(preds[0])
    assert stamp in stamps and 0 <= class_id < 12 and 0 < score <= 1
    assert preds[0].header.frame_id == wire.FRAME_IDS['rgb']   # the set's anchor is the RGB frame
    alloc = wire.read_allocation(outs['allocation'][0])
    info = wire.read_inference(outs['inference'][0])
    assert alloc['stamp_ns'] == info['stamp_ns'] == stamp and alloc['unit'] == 'flops'
    assert alloc['spent'] <= 0.5 and all(alloc['kept'][m][0] == 0 for m in MODS)
    assert info['gflops'] > 0 and info['latency_ms'] >= info['model_ms'] > 0
    assert info['present'] == MODS
    quality = wire.read_quality(outs['quality'][0])
    assert set(quality) == set(MODS) and all(0 <= q <= 1 for q in quality.values())
    # The same through the .msg fields alone, as any ROS tool sees them.
    raw = outs['allocation'][0]
    assert list(raw.modalities) == list(MODS) and list(raw.present) == [True] * 3
    assert [int(n) for n in raw.layers] == [alloc['layers'][m] for m in MODS]
    assert len(raw.kept) == sum(raw.depth) and sum(raw.kept) == sum(raw.layers)
    assert raw.budget_unit == type(raw).BUDGET_UNIT_FLOPS and raw.budget_spent <= 0.5
    assert outs['inference'][0].latency_ms == pytest.approx(info['latency_ms'])


def test_transient_local_links_deliver_what_was_sent_before_the_match(ros, model):
    # The replay graph's setting: every link transient local at both ends, so a node whose
    # subscription matches late (discovery finishing one way first) still gets the first frames.
    h = ros()
    latched = wire.output_qos(100, 'transient_local')
    feeder = Feeder(h)
    feeder.pubs = {m: h.publisher(Image, wire.SENSOR_TOPICS[m], latched) for m in MODS}
    sent = [feeder.send() for _ in range(3)]              # before the fusion node exists
    node = fusion_node(h, model, input_reliability=1, input_durability='transient_local',
                       output_durability='transient_local', frame_queue_depth=10)
    assert h.spin_until(lambda: node.processed == 3, 10), node.processed
    late, volatile = [], []                               # both subscribe after the outputs went out
    h.probe.create_subscription(wire.output_class(wire.PREDICTION), wire.PREDICTION, late.append, latched)
    h.probe.create_subscription(wire.output_class(wire.PREDICTION), wire.PREDICTION, volatile.append, 100)
    h.spin_until(lambda: len(late) == 3, 5)
    h.spin_for(0.3)
    assert [wire.read_prediction(m)[0] for m in late] == sent and volatile == []


def test_node_processes_spin_the_events_executor_unless_told_otherwise(ros_context, monkeypatch):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.experimental import EventsExecutor
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    assert executor_kind() == 'events' and executor_kind('SINGLE') == 'single'
    made = [EventsExecutor(context=ros_context), make_executor(context=ros_context)]
    assert type(made[1]) is type(made[0])          # the factory returns a pybind11 object
    monkeypatch.setenv(EXECUTOR_ENV, 'single')
    made.append(make_executor(context=ros_context))
    assert isinstance(made[2], SingleThreadedExecutor)
    made.append(make_executor('Events', context=ros_context))   # the argument wins, any case
    assert type(made[3]) is type(made[0])
    monkeypatch.setenv(EXECUTOR_ENV, 'multi')
    with pytest.raises(ValueError, match=EXECUTOR_ENV):
        make_executor(context=ros_context)
    for executor in made:
        executor.shutdown()


# --------------------------------------------------------------------------- evaluator
def fake_inference(class_id, gflops=0.0, model_ms=0.0, policy_ms=0.0, preprocess_ms=0.0):
    probs = np.zeros(12)
    probs[class_id] = 1.0
    return SimpleNamespace(probs=probs, class_id=class_id, class_name=str(class_id), score=1.0,
                           gflops=gflops, model_ms=model_ms, policy_ms=policy_ms,
                           preprocess_ms=preprocess_ms, present=MODS)


def test_evaluator_matches_by_stamp_and_reports(ros, tmp_path):
    from admn_ros.nodes.evaluator import Evaluator
    h = ros()
    report = tmp_path / 'out' / 'report.json'
    ev = h.add(Evaluator(context=h.ctx, namespace=h.namespace, parameter_overrides=[
        Parameter('report_path', value=str(report)), Parameter('drop_after_s', value=0.3)]))
    labels = h.publisher(DiagnosticArray, wire.LABEL, 100)
    preds = h.publisher(wire.output_class(wire.PREDICTION), wire.PREDICTION, 100)
    infos = h.publisher(wire.output_class(wire.INFERENCE), wire.INFERENCE, 100)
    assert h.spin_until(lambda: labels.get_subscription_count() and preds.get_subscription_count()
                        and infos.get_subscription_count(), 5)
    s = [1_000_000_000 * k for k in range(1, 6)]
    labels.publish(wire.label_msg(s[0], 9))                   # before any prediction: warm-up
    h.spin_for(0.1)
    for stamp, (truth, guess) in zip(s[1:4], ((1, 1), (2, 0), (3, 3))):
        header = wire.header(stamp)
        preds.publish(wire.prediction_msg(fake_inference(guess), header))
        if stamp != s[3]:                                  # s[3]: prediction before its label
            labels.publish(wire.label_msg(stamp, truth))
        inf = fake_inference(guess, gflops=stamp / 1e9, model_ms=4.0, policy_ms=1.5,
                             preprocess_ms=stamp / 1e9 / 10)
        infos.publish(wire.inference_msg(inf, header, latency_ms=10.0 * stamp / 1e9,
                                      processing_ms=7.0, dropped=0))
    h.spin_for(0.1)
    labels.publish(wire.label_msg(s[3], 3))
    labels.publish(wire.label_msg(s[4], 4))                   # never predicted: a drop
    assert h.spin_until(lambda: ev.summary()['drops'] == 1 and ev.summary()['matched'] == 3, 5)
    summary = ev.summary()
    assert summary['accuracy'] == pytest.approx(2 / 3) and summary['warmup_labels'] == 1
    assert summary['mean_gflops'] == pytest.approx(3.0)
    assert summary['latency_ms_p50'] == pytest.approx(30.0)
    # overhead = latency minus the model's own time: allocation (policy) plus forward
    assert summary['overhead_ms_p50'] == pytest.approx(30.0 - 1.5 - 4.0)
    assert summary['policy_ms_p50'] == pytest.approx(1.5)
    assert summary['preprocess_ms_p50'] == pytest.approx(0.3)
    assert summary['intake_ms_p50'] == pytest.approx(30.0 - 7.0)   # stamp to synchronised set
    h.nodes.remove(ev)
    h.executor.remove_node(ev)
    ev.destroy_node()                                      # shutdown writes the report
    data = json.loads(report.read_text())
    assert data['matched'] == 3 and data['drops'] == 1 and data['accuracy'] == pytest.approx(2 / 3)
    assert '| accuracy | 0.6667 |' in report.with_suffix('.md').read_text()


def fake_allocation(layers, present=MODS):
    keep = {m: np.arange(6) < n for m, n in layers.items()}
    return SimpleNamespace(keep=keep, present=present, budget_fraction=0.5, budget_unit='layers',
                           budget_spent=0.5)


def test_evaluator_splits_the_report_into_corruption_phases(ros, tmp_path):
    """Corruption records, allocations, predictions and labels joined by stamp (arriving in any
    order): phases, the layer shift away from a dark camera, and the timeline plot."""
    from admn_ros.nodes.evaluator import Evaluator
    h = ros()
    report = tmp_path / 'report.json'
    ev = h.add(Evaluator(context=h.ctx, namespace=h.namespace, parameter_overrides=[
        Parameter('report_path', value=str(report))]))
    pubs = {name: h.publisher(kind, topic, 100) for name, kind, topic in (
        ('label', DiagnosticArray, wire.LABEL),
        ('pred', wire.output_class(wire.PREDICTION), wire.PREDICTION),
        ('alloc', wire.output_class(wire.ALLOCATION), wire.ALLOCATION),
        ('level', DiagnosticArray, wire.CORRUPTION))}
    assert h.spin_until(lambda: all(p.get_subscription_count() for p in pubs.values()), 5)
    clean = {m: ('clean', 0.0) for m in MODS}
    n = 12
    for i in range(n):
        stamp = (i + 1) * 200_000_000
        dark = i >= 6
        # Depth is absent from the frames: its (reported) holes must not split the phases.
        levels = dict(clean, depth=('holes', 0.5), **({'rgb': ('low_light', 1.0)} if dark else {}))
        layers = {'rgb': 1, 'depth': 0, 'audio': 5} if dark else {'rgb': 4, 'depth': 0, 'audio': 2}
        header = wire.header(stamp)
        pubs['alloc'].publish(wire.allocation_msg(fake_allocation(layers, ('rgb', 'audio')), MODS,
                                               header))
        pubs['pred'].publish(wire.prediction_msg(fake_inference(i % 2), header))
        pubs['label'].publish(wire.label_msg(stamp, 0))
        if i != 3:                      # stamp 3's record is lost: an 'unknown' phase
            pubs['level'].publish(wire.corruption_msg(stamp, levels))
    assert h.spin_until(lambda: len(ev.frames()) == n and ev.summary()['matched'] == n, 5)
    h.nodes.remove(ev)
    h.executor.remove_node(ev)
    ev.destroy_node()
    data = json.loads(report.read_text())
    assert [(p['label'], p['frames']) for p in data['phases']] == [
        ('clean', 3), ('unknown', 1), ('clean', 2), ('rgb low_light 1.0', 6)]
    assert data['phases'][3]['mean_layers'] == {'rgb': 1, 'audio': 5}
    assert data['phases'][3]['accuracy'] == pytest.approx(0.5)
    assert data['clean_layers'] == {'rgb': 4, 'audio': 2}
    assert list(data['shift']) == ['rgb']
    assert data['shift']['rgb']['ratio'] == pytest.approx(0.25)
    assert data['shift']['rgb']['shifted'] is True
    assert data['shift']['rgb']['others_change'] == {'audio': 3}
    md = report.with_suffix('.md').read_text()
    assert 'While rgb was degraded (low_light 1.0, frames 6-11' in md
    assert 'layers left the degraded rgb: yes, ratio 0.25 (target <= 0.5)' in md
    plot = tmp_path / 'report_timeline.png'
    assert data['timeline_plot'] == str(plot) and plot.read_bytes()[:4] == b'\x89PNG'


# --------------------------------------------------------------------------- budget_manager
def test_budget_schedules_parse_strictly_and_step_in_time():
    from admn_ros.nodes.budget_manager import LoadFollower, parse_schedule
    sched = parse_schedule([[0.5, 0.5], {'t': 1.0, 'budget': 0.25}], loop_period_s=2.0)
    assert [sched.value_at(t) for t in (0.0, 0.5, 0.99, 1.0, 1.9, 2.6, 3.2)] == \
        [None, 0.5, 0.5, 0.25, 0.25, 0.5, 0.25]
    for bad, reason in (([[1, 0.5], [1, 0.6]], 'increase'), ([[0, 0.0]], r'\[0.01, 1\]'),
                        ([[0, 0.005]], r'\[0.01, 1\]'),
                        ([[0, 0.5, 1]], r'\[t, budget\]'), ({'t': 0}, 'list'), ([], 'at least'),
                        ([{'t': 0, 'b': 1}], 'keys')):
        with pytest.raises(ValueError, match=reason):
            parse_schedule(bad)
    with pytest.raises(ValueError, match='exceed'):
        parse_schedule([[0, 0.5], [3, 1.0]], loop_period_s=2.0)
    follow = LoadFollower(min_budget=0.2, max_budget=1.0, smoothing=0.5)
    assert follow.update(0.0) == 1.0 and follow.update(1.0) == pytest.approx(0.6)
    for _ in range(30):
        value = follow.update(1.0)
    assert value == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize('with_psutil', [True, False])
def test_cpu_load_sees_a_busy_core(monkeypatch, with_psutil):
    """Both readers (psutil, and /proc/stat for installs without it) report a spinning thread."""
    import os
    import sys
    import time
    from admn_ros.nodes.budget_manager import CpuLoad
    if not with_psutil:
        monkeypatch.setitem(sys.modules, 'psutil', None)  # import psutil -> ImportError
    load = CpuLoad()
    assert (load._psutil is None) != with_psutil
    end = time.monotonic() + 0.4
    while time.monotonic() < end:
        pass
    busy = load()
    # One spinning thread is at least ~1/ncpu of the machine (other jobs only add to it).
    assert 0.5 / (os.cpu_count() or 1) <= busy <= 1.0


def test_budget_manager_schedule_drives_the_fusion_budget(ros, model, tmp_path):
    from admn_ros.nodes.budget_manager import BudgetManager, CpuLoad
    assert 0.0 <= CpuLoad()() <= 1.0
    schedule = tmp_path / 'budget.yaml'
    schedule.write_text('- [0.0, 0.5]\n- [0.4, 0.25]\n- [0.8, 1.0]\n')
    h = ros()
    fusion = fusion_node(h, model, budget=0.9)
    heard = []
    h.probe.create_subscription(Float32, wire.BUDGET, lambda m: heard.append(round(m.data, 6)),
                                wire.budget_qos())
    manager = h.add(BudgetManager(context=h.ctx, namespace=h.namespace, parameter_overrides=[
        Parameter('schedule_file', value=str(schedule))]))
    assert manager.mode == 'schedule'
    assert h.spin_until(lambda: fusion.budget.fraction == 1.0 and len(heard) == 3, 5)
    assert heard == [0.5, 0.25, 1.0]
    times = [t for t, _ in manager.published]
    assert times[0] < 0.1 and abs(times[1] - 0.4) < 0.1 and abs(times[2] - 0.8) < 0.1
    with pytest.raises(ValueError, match='schedule_file'):
        BudgetManager(context=h.ctx, namespace=h.namespace, node_name='bad',
                      parameter_overrides=[Parameter('mode', value='schedule')])


# --------------------------------------------------------------------------- configs
def test_graph_config_sections_of_these_nodes_are_declared_parameters(ros, model):
    from admn_ros.nodes.budget_manager import BudgetManager
    from admn_ros.nodes.evaluator import Evaluator
    h = ros()
    classes = {'admn_fusion': AdmnFusion, 'evaluator': Evaluator, 'budget_manager': BudgetManager}
    fixed = {'admn_fusion': {'autostart': False}, 'evaluator': {'report_path': ''},
             'budget_manager': {'use_gpu': False}}
    checked = 0
    for graph in G.GRAPHS.values():
        for name, section in G.load_params_file(graph.params_file).items():
            if name not in classes:
                continue
            # Bare section names apply in the root namespace (as bringup starts them).
            node = classes[name](context=h.ctx, cli_args=[
                '--ros-args', '--params-file', str(graph.params_file)],
                parameter_overrides=[Parameter(k, value=v) for k, v in fixed[name].items()])
            try:
                for key, value in section.items():
                    assert node.has_parameter(key), (graph.name, name, key)
                    if key not in fixed[name]:
                        assert node.get_parameter(key).value == value, (graph.name, name, key)
                        checked += 1
            finally:
                node.destroy_node()
    assert checked >= 8


def test_diagnostics_count_drops_of_an_empty_queue(ros, model):
    """An empty queue is falsy (it has a length): its drops must still be reported."""
    from admn_ros.runtime.frame_queue import FrameQueue
    h = ros()
    fusion = fusion_node(h, model)
    queue = FrameQueue(1)
    queue.dropped = 102
    fusion.intake.queue = queue
    assert len(queue) == 0
    status = {s.name: s for s in fusion.diagnostics.build().status}['admn_fusion: inference']
    assert {kv.key: kv.value for kv in status.values}['dropped'] == '102'


def test_far_future_stamps_on_one_camera_do_not_stall_predictions(ros, model):
    """Stamps an hour ahead on the camera (more than sync_queue_size of them) used to fill its sync
    queue for good; they are now refused, counted, and predictions go on within a second."""
    h = ros()
    fusion = fusion_node(h, model, sync_queue_size=5)
    feeder = Feeder(h)
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    feeder.run(10, until=lambda: len(preds) >= 3)
    future = h.probe.get_clock().now().nanoseconds + 3600 * 10 ** 9
    for k in range(10):   # one at a time: the best-effort input queue (depth 5) would drop some
        feeder.pubs['rgb'].publish(wire.rgb_msg(feeder.samples[0]['rgb'], future + k * 10 ** 6))
        h.spin_for(0.05)
    glitch = time.monotonic()
    n = len(preds)
    feeder.run(3.0, until=lambda: len(preds) >= n + 5)
    assert len(preds) >= n + 5, 'predictions stalled after the far-future stamps'
    assert time.monotonic() - glitch < 2.0
    assert fusion.intake.sync.evicted() >= 5   # most of them: best effort may lose a few on the way


# --------------------------------------------------------------------------- ROS conformance
def _parameter_listing(h, node_name):
    """Every parameter of a node through rclpy's parameter services, as `ros2 param dump` reads
    them (list_parameters, then get_parameters): ``{name: value}``."""
    from rclpy.parameter import parameter_value_to_python
    client = AsyncParameterClient(h.probe, node_name)
    assert client.wait_for_services(timeout_sec=5.0)
    names = sorted(wait_future(h, client.list_parameters()).result.names)
    values = wait_future(h, client.get_parameters(names)).values
    unset = [n for n, v in zip(names, values) if v.type == 0]
    assert not unset, f'parameters without a value (ros2 param get fails on them): {unset}'
    listing = {}
    for n, v in zip(names, values):
        value = parameter_value_to_python(v)
        listing[n] = list(value) if isinstance(value, (list, tuple)) else value
    return listing


def _nest(flat):
    """Dotted names -> nested maps, the form `ros2 param dump` writes."""
    out = {}
    for name, value in flat.items():
        *parents, leaf = name.split('.')
        level = out
        for p in parents:
            level = level.setdefault(p, {})
        level[leaf] = value
    return out


def test_every_parameter_lists_and_round_trips_through_a_params_file(ros, model, tmp_path):
    """`ros2 param dump /admn_fusion` printed nothing and `ros2 param get modalities` failed: every
    parameter now has a value, and the dump loads back with --params-file to the same values."""
    import yaml
    h = ros()
    fusion = fusion_node(h, model, modalities=['rgb', 'audio'])
    fusion.set_parameters([Parameter('budget', value=0.3), Parameter('sync_slop_s', value=0.04)])
    name = f'{h.namespace}/admn_fusion'
    listing = _parameter_listing(h, name)
    assert listing['modalities'] == ['rgb', 'audio'] and listing['budget'] == 0.3
    assert listing['budget_from_topic'] is False              # the manual set above took it
    assert fusion.engine.modalities == ('rgb', 'audio')
    dump = tmp_path / 'dump.yaml'
    dump.write_text(yaml.safe_dump({name: {'ros__parameters': _nest(listing)}}))
    fusion.destroy_node()
    h.nodes.remove(fusion)

    again = h.add(AdmnFusion(context=h.ctx, namespace=h.namespace,
                             cli_args=['--ros-args', '--params-file', str(dump)]))
    assert _parameter_listing(h, name) == listing
    assert again.engine.modalities == ('rgb', 'audio') and again.budget.fraction == 0.3
    default = h.add(AdmnFusion(context=h.ctx, namespace=h.namespace, node_name='defaults',
                               parameter_overrides=[Parameter('model_path', value=str(model)),
                                                    Parameter('policy', value='naive')]))
    assert _parameter_listing(h, f'{h.namespace}/defaults')['modalities'] == ['all']
    assert default.engine.modalities == default.engine.model_modalities


def test_oversized_messages_are_rejected_before_decoding_and_counted(ros, model):
    h = ros()
    fusion = fusion_node(h, model, max_message_bytes=40_000)   # the feeder's frames fit (32 kB)
    feeder = Feeder(h)
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    feeder.run(10, until=lambda: len(preds) >= 2)
    stamp = h.probe.get_clock().now().nanoseconds
    feeder.pubs['rgb'].publish(wire.rgb_msg(np.zeros((200, 200, 3), np.uint8), stamp))
    feeder.pubs['depth'].publish(wire.depth_msg(np.ones((200, 200), np.float32), stamp))
    assert h.spin_until(lambda: fusion.counters.total_rejected() == 2, 5)
    assert fusion.counters.rejected == {'rgb': 1, 'depth': 1, 'audio': 0}
    assert 'max_message_bytes' in fusion.counters.last_reject
    n = len(preds)
    feeder.run(10, until=lambda: len(preds) >= n + 2)              # and the stream goes on
    assert len(preds) >= n + 2 and fusion.failed == 0
    # A run-time change of the limit applies to the next message.
    fusion.set_parameters([Parameter('max_message_bytes', value=1000)])
    feeder.send()
    assert h.spin_until(lambda: fusion.counters.rejected['rgb'] == 2, 5)


def test_ctrl_c_stops_without_publishing_into_a_dead_context(ros, model):
    """Under `ros2 launch`, Ctrl-C used to find the worker publishing after the context had shut
    down (`RCLError: publisher's context is invalid`). The node process is stopped with SIGINT
    while frames are queued; it must exit 0 and log no error."""
    import signal
    import subprocess
    import sys
    h = ros()
    feeder = Feeder(h)
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    for attempt in range(2):
        proc = subprocess.Popen(
            [sys.executable, '-m', 'admn_ros.nodes.admn_fusion', '--ros-args',
             '-r', f'__ns:={h.namespace}', '-p', f'model_path:={model}', '-p', 'policy:=naive',
             '-p', 'frame_queue_depth:=1000', '-p', 'input_reliability:=1',
             '-p', 'input_depth:=1000'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            n = len(preds)
            feeder.run(60, period=0.01, until=lambda: len(preds) >= n + 5)
            assert len(preds) >= n + 5, 'the node never predicted'
            feeder.run(0.3, period=0.002)         # a backlog for the worker when the signal lands
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, out
        for bad in ('RCLError', 'context is invalid', 'Traceback', '[ERROR]', 'inference failed'):
            assert bad not in out, f'attempt {attempt}: {bad!r} in\n{out}'
