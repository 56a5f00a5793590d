"""End to end: a recorded bag replayed on simulated time scores exactly like an offline evaluation
of the same bag, and the full node graph started as processes by admn_ros.bringup beats chance.

This module runs on a private ROS domain (``domain_id`` is overridden) because the bag test drives
its nodes with ``/clock``, an absolute topic that a concurrent replay elsewhere would disturb.
"""
import itertools
import json
import os

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.parameter import Parameter  # noqa: E402

from admn_ros import wire  # noqa: E402
from admn_ros.wire import topics as T  # noqa: E402
from admn_ros.quality_estimators.budget import Budget  # noqa: E402
from tests.fixtures_models import (RosHarness, make_random_checkpoint,  # noqa: E402, F401
                                   tiny_stage1)

pytestmark = pytest.mark.ros
_ids = itertools.count()


@pytest.fixture
def domain_id():
    """Overrides conftest's: a domain of this process's own, clear of the 40+worker ones."""
    return 60 + os.getpid() % 40


def params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def test_bag_replay_on_sim_time_scores_exactly_like_offline_evaluation(ros_context, tmp_path):
    from admn_ros.runtime.engine import EngineConfig, FusionEngine
    from admn_ros.runtime.frame_queue import Frame
    from admn_ros.nodes.admn_fusion import AdmnFusion
    from admn_ros.nodes.bag_player import BagPlayer
    from admn_ros.nodes.evaluator import Evaluator
    from admn_ros.datasets.bags import read_bag, write_bag
    from admn_ros.datasets.corruptions import CorruptionSampler
    from admn_ros.datasets.registry import load_dataset
    from admn_ros.quality_estimators.evaluate import evaluate_policy

    model = make_random_checkpoint(tmp_path / 'model.pt')
    data = load_dataset('synthetic', 'test', size=16)
    # Corrupted like the evaluation mix, so the heuristic allocation differs between samples.
    batch = CorruptionSampler.standard()(data.arrays, np.random.default_rng(3))
    bag = write_bag(tmp_path / 'bag', batch, class_names=data.class_names, rate_hz=10.0)
    n = len(batch['label'])

    h = RosHarness(ros_context, f'/replay_{os.getpid()}_{next(_ids)}')
    try:
        ns = dict(context=ros_context, namespace=h.namespace)
        fusion = h.add(AdmnFusion(**ns, parameter_overrides=params(
            use_sim_time=True, model_path=str(model), policy='heuristic', budget=0.5,
            frame_queue_depth=1000, input_reliability=1, input_depth=1000)))
        evaluator = h.add(Evaluator(**ns, parameter_overrides=params(
            use_sim_time=True, report_path=str(tmp_path / 'report.json'), drop_after_s=60.0)))
        preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
        outputs = fusion.pubs
        assert h.spin_until(lambda: outputs['prediction'].get_subscription_count() >= 2
                            and outputs['inference'].get_subscription_count() >= 1, 10)
        topics = [T.RGB_TOPIC, T.DEPTH_TOPIC, T.AUDIO_TOPIC, T.LABEL_TOPIC]
        player = h.add(BagPlayer(**ns, parameter_overrides=params(
            bag_path=str(bag), relative_topics=True, clock_hz=100.0, as_fast_as_possible=True,
            topics=topics, wait_for_subscribers=1, wait_timeout_s=10.0)))
        assert h.spin_until(lambda: evaluator.summary()['matched'] == n and len(preds) == n,
                            40), evaluator.summary()
        assert player.done.wait(5)
        # Fusion ran on bag time: its clock is at the end of the bag, years before the wall clock.
        stamps = sorted(wire.read_prediction(p)[0] for p in preds)
        assert 0 <= fusion.get_clock().now().nanoseconds - stamps[-1] < 1e9
        online = {wire.read_prediction(p)[0]: wire.read_prediction(p)[1] for p in preds}
        summary = evaluator.summary()
    finally:
        h.close()   # evaluator.destroy_node writes its report

    offline_bag = read_bag(bag)
    engine = FusionEngine(EngineConfig(model_path=str(model), policy='heuristic', quality=False))
    cell = evaluate_policy(engine.model, engine.preprocessor, engine.policy, offline_bag.batch,
                           Budget(0.5), engine.cost, batch_size=1)
    assert summary['drops'] == 0 and summary['unmatched_predictions'] == 0
    assert summary['accuracy'] == cell['metric']
    # Sample by sample, the same classes as the same engine run on the decoded bag.
    for i, stamp in enumerate(offline_bag.stamps_ns):
        frame_data = {m: offline_bag.batch[m][i] for m in ('rgb', 'depth', 'audio')}
        expected = engine.infer(Frame(int(stamp), '', frame_data), Budget(0.5)).class_id
        assert online[int(stamp)] == expected, i
    report = json.loads((tmp_path / 'report.json').read_text())
    assert report['accuracy'] == summary['accuracy'] and report['matched'] == n


def test_graph_processes_started_by_bringup_predict_above_chance(
        ros_context, domain_id, tiny_stage1, tmp_path, monkeypatch):  # noqa: F811
    from admn_ros.bringup import Bringup
    monkeypatch.setenv('ROS_DOMAIN_ID', str(domain_id))   # the children join this domain
    report = tmp_path / 'report.json'
    # The microphone is clean for 1 s, then very noisy for 1 s, and so on: whenever the model
    # comes up, the run holds both, so the report can compare them.
    schedule = tmp_path / 'schedule.yaml'
    schedule.write_text('tracks:\n  audio: {kind: periodic, ctype: white_noise, low: 0.0, '
                        'high: 0.9, period: 2.0, shape: square}\n')
    namespace = f'graph_{os.getpid()}_{next(_ids)}'
    overrides = {
        'source': 'avdigits', 'model': str(tiny_stage1), 'schedule': str(schedule),
        'sensor_source': {'dataset_size': 60, 'rate_hz': 20.0, 'loop': True,
                          'exit_on_end': False, 'start_delay_s': 0.0},
        # While the microphone is noisy the heuristic policy moves layers to the camera, which
        # carries the digit for a voice the model never heard. (AV-digits has no depth sensor:
        # the depth holes of the graph's config must not count.)
        'noise_injector': {'rgb': {'type': 'clean', 'severity': 0.0}},
        'admn_fusion': {'policy': 'heuristic', 'budget': 0.5},
        'budget_manager': {'use_gpu': False, 'min_budget': 0.5, 'max_budget': 1.0},
        'evaluator': {'report_path': str(report)},
    }
    lines = []
    h = RosHarness(ros_context, '/' + namespace)
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    allocs = h.listen(wire.output_class(wire.ALLOCATION), wire.ALLOCATION)
    # A subscriber written against the .msg fields alone (admn_msgs.msg, no admn_ros reader).
    from admn_msgs.msg import Allocation, Inference
    fields = []
    h.probe.create_subscription(Allocation, wire.ALLOCATION, lambda m: fields.append(
        (m.header.stamp.sec, m.header.stamp.nanosec, dict(zip(m.modalities, m.layers)),
         m.budget_fraction, m.budget_spent, sum(m.kept), sum(m.layers))), 500)
    latencies = []
    h.probe.create_subscription(Inference, wire.INFERENCE,
                                lambda m: latencies.append(m.latency_ms), 500)
    bringup = Bringup('noise_experiment', overrides, namespace=namespace, sink=lines.append)
    try:
        bringup.start()
        h.spin_until(lambda: len(preds) >= 60 or bringup.required_exited(), 90)
    finally:
        codes = bringup.stop()
        h.close()
    log = '\n'.join(lines)
    assert len(preds) >= 60, log[-3000:]
    assert set(codes) == {'sensor_source', 'noise_injector', 'admn_fusion', 'budget_manager',
                          'evaluator'} and all(c == 0 for c in codes.values()), (codes, log[-3000:])
    result = json.loads(report.read_text())
    assert result['matched'] >= 50, result
    # Chance is 0.1 on ten digits: by chance alone, P(accuracy >= 0.22 over 50 guesses) ~ 1 %;
    # the tiny model scores ~0.4 (P(< 0.22) ~ 0.2 %).
    assert result['accuracy'] >= 0.22, result
    assert result['mean_gflops'] > 0 and result['latency_ms_p50'] is not None
    # The report splits the run at the corruption record of each stamp the injector published.
    labels = {p['label'] for p in result['phases']}
    assert labels == {'clean', 'audio white_noise 1.0'}, result['phases']  # 0.9 rounds to 1.0
    noisy = [p for p in result['phases'] if p['degraded']]
    assert sum(p['frames'] for p in result['phases']) >= 50
    assert all(p['sentence'].startswith('While audio was degraded (white_noise 1.0') for p in noisy)
    layers = {m: np.average([p['mean_layers'][m] for p in noisy],
                            weights=[p['frames'] for p in noisy]) for m in ('rgb', 'audio')}
    assert layers['rgb'] > layers['audio'], noisy
    assert list(result['shift']) == ['audio']          # depth is absent, rgb stayed clean
    shift = result['shift']['audio']
    assert shift['degraded_frames'] > 10 and shift['clean_frames'] > 10, shift
    assert shift['ratio'] < 1.0 and shift['verdict'].startswith('layers left the degraded audio: ')
    assert (tmp_path / 'report_timeline.png').stat().st_size > 10_000
    # The field-level subscriber saw the same allocations: layers per named modality, kept blocks
    # that add up to the layers, spending within the budget; latencies in milliseconds.
    assert len(fields) >= 50 and len(latencies) >= 50
    assert all(set(layers) == {'rgb', 'audio'} for _, _, layers, *_ in fields)
    assert all(kept == total and spent <= fraction + 1e-6
               for *_, fraction, spent, kept, total in fields)
    assert all(0 < ms < 10_000 for ms in latencies)
    noisy_layers = [layers['audio'] for *_, layers, _, _, _, _ in fields]
    assert min(noisy_layers) < max(noisy_layers)      # the allocation followed the noise
