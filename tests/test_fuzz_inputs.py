"""Property-based fuzzing of admn_fusion's inputs through the real subscription path: hypothesis
builds sensor messages (well-formed ones and adversarial ones: sizes, steps, encodings, endianness,
NaN / inf / huge values, negative and overflowing stamps), a probe publishes them over DDS to a live
fusion node, and every message must be received, then either accepted or rejected with a reason -
no crash, no silent loss - while valid frames are still predicted afterwards.

At least 10,000 messages per input type (rgb, depth and audio Images). Deep reliable queues on
both sides, so each published message reaches the callback."""
import collections
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

pytest.importorskip('rclpy')

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from admn_ros import wire  # noqa: E402
from tests.fixtures_models import RosHarness, make_random_checkpoint, sample_frame  # noqa: E402

pytestmark = pytest.mark.ros

MODS = ('rgb', 'depth', 'audio')
PER_TYPE = int(os.environ.get("ADMN_FUZZ_PER_TYPE", 10_000))
BATCH = 100                   # messages per hypothesis example
EXAMPLES = PER_TYPE // BATCH  # per input type
ENCODINGS = {'rgb': ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'],
             'depth': ['32FC1', '16UC1', 'mono16'],
             'audio': ['16SC1', '32FC1', '32FC2', '8UC1']}
BYTES_PER = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, '32FC1': 4, '16UC1': 2,
             'mono16': 2, '16SC1': 2, '32FC2': 8, '8UC1': 1}
SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0, -0.0, 1e-45, 65535.0, -1.0]


# A message is drawn as a small recipe (hypothesis explores and shrinks it) and built from it with
# numpy: drawing kilobytes of pixels byte by byte would make 30,000 messages take many minutes.
RECIPE = st.tuples(
    st.booleans(),                                                    # consistent layout?
    st.one_of(st.integers(0, 20), st.text(max_size=6)),              # encoding: index or junk
    st.one_of(st.integers(0, 48), st.integers(0, 2 ** 32 - 1)),      # height
    st.one_of(st.integers(0, 400), st.integers(0, 2 ** 32 - 1)),     # width
    st.one_of(st.integers(0, 64), st.integers(0, 2 ** 32 - 1)),      # step (adversarial)
    st.integers(0, 255),                                              # is_bigendian
    st.integers(0, 2 ** 32 - 1),                                      # data seed
    st.sampled_from(['random', 'special', 'empty', 'short', 'long']),  # data
    st.one_of(st.integers(1_700_000_000, 1_800_000_000), st.integers(0, 2_000_000_000),
              st.integers(-2 ** 31, 2 ** 31 - 1)),                    # stamp sec
    st.one_of(st.integers(0, 999_999_999), st.integers(0, 2 ** 32 - 1)),          # nanosec
)


def build_image(modality, recipe):
    """An Image from a recipe: consistent (the size its fields promise, values that may be NaN /
    inf / out of range) or adversarial (any fields, any byte count)."""
    consistent, enc, height, width, step, bigendian, seed, data_kind, sec, nanosec = recipe
    rng = np.random.default_rng(seed)
    # Consistent messages mostly use one of the modality's own encodings, so many are accepted.
    names = ENCODINGS[modality] if consistent and isinstance(enc, int) and enc < 14 else \
        ENCODINGS[modality] + sum(ENCODINGS.values(), [])
    encoding = names[enc % len(names)] if isinstance(enc, int) else enc
    if consistent:
        per = BYTES_PER.get(encoding, 1)
        if modality == 'audio':
            height, width = 1 + height % 2, 1 + width % 4000
        else:
            height, width = 8 + height % 40, 8 + width % 40
        step = width * per
        n = height * step
        if data_kind == 'special' and encoding.startswith('32F'):
            data = rng.choice(np.asarray(SPECIAL_FLOATS, np.float32), n // 4).tobytes()
        elif data_kind == 'short':
            data = rng.bytes(max(0, n - 1 - seed % 7))
        elif data_kind == 'long':
            data = rng.bytes(n + 1 + seed % 7)
        else:
            data = rng.bytes(n)
        bigendian = bigendian % 2 if data_kind != 'random' else 0
    else:
        data = b'' if data_kind == 'empty' else rng.bytes(int(seed % 4096))
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step,
                data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = str(seed % 3)
    return msg


def reason_kind(reason: str) -> str:
    """A reject reason without its numbers: the class of problem it names."""
    return re.sub(r'-?\d[\d.e+-]*', 'N', reason)[:90]


@pytest.fixture(scope='module')
def rig(tmp_path_factory):
    import rclpy
    domain = int(os.environ['ROS_DOMAIN_ID'])
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    h = RosHarness(ctx, f'/fuzz_{os.getpid()}')
    from admn_ros.nodes.admn_fusion import AdmnFusion
    model = make_random_checkpoint(tmp_path_factory.mktemp('fuzz') / 'model.pt')
    params = {'model_path': str(model), 'policy': 'naive', 'input_reliability': 1,
              'input_depth': 5000, 'publish_quality': False}
    fusion = h.add(AdmnFusion(context=ctx, namespace=h.namespace,
                              parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
    reasons = collections.Counter()
    intake = fusion.intake
    inner = intake.on_reject

    def record(modality, reason):
        reasons[modality, reason_kind(reason)] += 1
        inner(modality, reason)
    intake.on_reject = record
    qos = QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {m: h.publisher(Image, wire.SENSOR_TOPICS[m], qos) for m in MODS}
    assert h.spin_until(lambda: all(p.get_subscription_count() for p in pubs.values()), 20)
    sent = collections.Counter()
    yield h, fusion, pubs, sent, reasons
    h.close()
    rclpy.try_shutdown(context=ctx)


def _send(rig, modality, messages):
    h, fusion, pubs, sent, _ = rig
    for msg in messages:
        pubs[modality].publish(msg)
    sent[modality] += len(messages)
    assert h.spin_until(lambda: fusion.counters.rates[modality].count >= sent[modality], 30), \
        (modality, fusion.counters.rates[modality].count, sent[modality])


# Generation only: a failure is a crash or a lost message, reported as it is (no shrinking rounds
# of DDS traffic).
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck), phases=[Phase.generate])


@pytest.mark.parametrize('modality', MODS)
def test_ten_thousand_generated_messages_per_type_are_all_accounted_for(rig, modality):
    h, fusion, pubs, sent, reasons = rig

    @FUZZ
    @given(st.lists(RECIPE, min_size=BATCH, max_size=BATCH))
    def fuzz(recipes):
        _send(rig, modality, [build_image(modality, r) for r in recipes])

    fuzz()
    snap = fusion.counters.snapshot()[modality]
    assert sent[modality] >= PER_TYPE
    assert snap['received'] == sent[modality]                 # nothing lost on the way
    by_reason = {k: n for (m, k), n in reasons.items() if m == modality}
    assert sum(by_reason.values()) == snap['rejected']        # every reject has its reason
    assert snap['rejected'] > 0 and snap['rejected'] < snap['received']   # both kinds were made
    assert fusion.failed == 0                                  # the model never failed a frame
    print(f'\n{modality}: {snap["received"]} received, {snap["rejected"]} rejected, by reason:')
    for kind, n in sorted(by_reason.items(), key=lambda kv: -kv[1])[:12]:
        print(f'  {n:6d}  {kind}')


def test_the_node_still_predicts_after_the_fuzzing(rig):
    h, fusion, pubs, sent, reasons = rig
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    frame = sample_frame(1)
    for i in range(5):
        stamp = h.probe.get_clock().now().nanoseconds
        pubs['rgb'].publish(wire.rgb_msg(frame['rgb'], stamp))
        pubs['depth'].publish(wire.depth_msg(frame['depth'], stamp))
        pubs['audio'].publish(wire.audio_msg(frame['audio'], stamp))
        h.spin_for(0.2)
    assert h.spin_until(lambda: len(preds) >= 3, 30)
    assert fusion.failed == 0
