"""admn_msgs, the typed outputs of admn_fusion: built into the project venv by the set-up
(``make venv``), importable, and the same type for rclpy and for ``rosbags`` (which registers it
from the .msg text without a build): equal type hashes and equal decoded fields over DDS between
two processes and through mcap and sqlite3 bags. (CDR bytes are compared after decoding: rclpy
leaves the padding bytes as they happen to be in memory.)"""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from admn_ros import wire
from admn_ros.wire import topics as T
from admn_ros.datasets.ros_messages.typestore import bag_messages, make_typestore

ROOT = Path(__file__).resolve().parent.parent
STORE = make_typestore()
MODS = ('rgb', 'depth', 'audio')
STAMP = 1_700_000_000_250_000_000


def allocation(i: int = 0) -> SimpleNamespace:
    """What an engine's Inference holds for an allocation: masks of 6, 4 and 5 blocks."""
    keep = {'rgb': np.arange(6) < 1 + i % 6, 'depth': np.zeros(4, bool),
            'audio': (np.arange(5) + i) % 2 == 0}
    # Budget numbers float32 holds exactly, so what was sent is what arrives.
    return SimpleNamespace(keep=keep, present=('rgb', 'audio'), budget_fraction=0.25 + i / 8,
                           budget_unit='flops', budget_spent=0.1875 + i / 8)


def test_admn_msgs_imports_in_the_project_venv():
    """The set-up built admn_msgs into this interpreter's prefix: no environment variable needed
    (a clean environment, from another directory)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'AMENT_PREFIX_PATH', 'LD_LIBRARY_PATH')}
    out = subprocess.run(
        [sys.executable, '-c', 'import admn_msgs.msg as m; print(m.Allocation.__module__, '
         'sorted(m.Allocation.get_fields_and_field_types()))'],
        cwd='/', env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith('admn_msgs.msg._allocation') and "'layers'" in out.stdout


def test_rclpy_and_rosbags_agree_on_every_type_hash():
    """The build's type description (share/admn_msgs/msg/*.json) and rosbags' hash of the .msg
    text are the same RIHS01 hash."""
    share = Path(sys.prefix) / 'share' / 'admn_msgs' / 'msg'
    assert share.is_dir(), 'admn_msgs is not installed in this venv (make venv builds it)'
    for msgtype in T.ADMN_MSGS_TYPES:
        described = json.loads((share / f'{msgtype.rsplit("/", 1)[1]}.json').read_text())
        built = {h['type_name']: h['hash_string'] for h in described['type_hashes']}[msgtype]
        assert STORE.hash_rihs01(msgtype) == built, msgtype


PUBLISHER = textwrap.dedent('''
    import sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy
    from admn_ros import wire
    from tests.test_admn_msgs import MODS, STAMP, allocation
    rclpy.init()
    node = rclpy.create_node('allocation_talker', namespace=sys.argv[1])
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(wire.output_class(wire.ALLOCATION), wire.ALLOCATION, qos)
    for i in range(3):
        pub.publish(wire.allocation_msg(allocation(i), MODS, wire.header(STAMP + i, 'set')))
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)   # let the late-joining reader take the stored samples
    node.destroy_node()
    rclpy.shutdown()
''')


def test_a_typed_allocation_round_trips_over_dds_between_two_processes(ros_context):
    """Another process publishes admn_msgs/Allocation; this one reads the fields it sent, and
    the type hash the publisher announces is the one rosbags computes from the .msg text."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    namespace = f'/msgs_dds_{os.getpid()}'
    node = rclpy.create_node('allocation_listener', namespace=namespace, context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    got = []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(wire.output_class(wire.ALLOCATION), wire.ALLOCATION, got.append, qos)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    talker = subprocess.Popen([sys.executable, '-c', PUBLISHER, namespace], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline and talker.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        infos = node.get_publishers_info_by_topic(f'{namespace}/{wire.ALLOCATION}')
    finally:
        out = talker.communicate(timeout=30)[0]
        executor.shutdown()
        node.destroy_node()
    assert len(got) == 3, out[-2000:]
    for i, msg in enumerate(got):
        sent = wire.read_allocation(wire.allocation_msg(allocation(i), MODS,
                                                        wire.header(STAMP + i, 'set'),
                                                        bag_messages()))
        assert wire.read_allocation(msg) == sent and msg.header.frame_id == 'set'
    assert sent['layers'] == {'rgb': 3, 'depth': 0, 'audio': 3} and sent['unit'] == 'flops'
    assert len(infos) == 1 and infos[0].topic_type == T.ALLOCATION_TYPE
    assert str(infos[0].topic_type_hash) == STORE.hash_rihs01(T.ALLOCATION_TYPE)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_typed_outputs_round_trip_through_a_bag_written_by_rclpy_and_by_rosbags(tmp_path,
                                                                                storage):
    """Each output written twice per frame - rclpy's CDR bytes and rosbags' - into one bag with
    its definition; read back, both decoders give the same fields from both writers."""
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from admn_ros.runtime.engine import Inference

    def inference(i):
        alloc = allocation(i)
        probs = np.full(10, 0.01, np.float32)
        probs[i] = 0.91
        return Inference(stamp_ns=STAMP + i, frame_id='set', class_id=i, class_name=f'c{i}',
                         score=0.91, probs=probs, present=alloc.present, keep=alloc.keep,
                         quality={'rgb': 0.5 + i / 10, 'audio': 0.25}, gflops=1.5 + i,
                         budget_fraction=alloc.budget_fraction, budget_unit=alloc.budget_unit,
                         budget_spent=alloc.budget_spent, preprocess_ms=1.0, policy_ms=0.5,
                         model_ms=3.0 + i)

    def build(topic, inf, flavour):
        header = wire.header(inf.stamp_ns, inf.frame_id, flavour)
        return {wire.PREDICTION: lambda: wire.prediction_msg(inf, header, flavour),
                wire.ALLOCATION: lambda: wire.allocation_msg(inf, MODS, header, flavour),
                wire.QUALITY: lambda: wire.quality_msg(inf, header, flavour),
                wire.INFERENCE: lambda: wire.inference_msg(inf, header, latency_ms=20.0 + i,
                                                           processing_ms=9.5, dropped=i,
                                                           flavour=flavour)}[topic]()

    readers = {wire.PREDICTION: wire.read_prediction, wire.ALLOCATION: wire.read_allocation,
               wire.QUALITY: wire.read_quality, wire.INFERENCE: wire.read_inference}
    bag = tmp_path / 'bag'
    want = {}
    with Writer(bag, version=9, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        for topic, msgtype in T.OUTPUT_TYPES.items():
            conns = [writer.add_connection(f'/{topic}{suffix}', msgtype, typestore=STORE)
                     for suffix in ('', '/rosbags')]
            for i in range(3):
                inf = inference(i)
                # What any reader must see: the fields after a trip through float32.
                want[topic, i] = readers[topic](STORE.deserialize_cdr(
                    STORE.serialize_cdr(build(topic, inf, bag_messages()), msgtype), msgtype))
                writer.write(conns[0], STAMP + i, bytes(serialize_message(build(topic, inf,
                                                                                wire.ROS))))
                writer.write(conns[1], STAMP + i,
                             bytes(STORE.serialize_cdr(build(topic, inf, bag_messages()), msgtype)))
    seen = 0
    with Reader(bag) as reader:
        for conn in reader.connections:
            assert conn.digest == STORE.hash_rihs01(conn.msgtype)       # stored with the type
            assert 'uint16[] layers' in conn.msgdef.data or conn.msgtype != T.ALLOCATION_TYPE
        for conn, stamp, raw in reader.messages():
            topic = conn.topic.lstrip('/').removesuffix('/rosbags')
            i = stamp - STAMP
            from_rosbags = readers[topic](STORE.deserialize_cdr(raw, conn.msgtype))
            from_rclpy = readers[topic](deserialize_message(raw, wire.output_class(topic)))
            assert from_rosbags == from_rclpy == want[topic, i], (conn.topic, i)
            seen += 1
    assert seen == 2 * 3 * len(T.OUTPUT_TYPES)
    assert want[wire.ALLOCATION, 2]['kept'] == {'rgb': [0, 1, 2], 'depth': [], 'audio': [0, 2, 4]}
