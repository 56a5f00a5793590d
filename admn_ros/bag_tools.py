"""``admn bag``: record a dataset as a rosbag2, list a bag, score a bag offline or through the nodes.

    admn bag record --dataset synthetic --schedule sched.yaml --duration 30 --out runs/bag
    admn bag info runs/bag
    admn bag eval runs/bag --policies admn,full --budgets 0.25,0.5,1 --out runs/bag_eval
    admn bag eval runs/bag --through-ros --compare --out runs/bag_eval
    admn bag eval robot_bag --dataset synthetic --rgb /camera/image_raw \\
        --depth /camera/depth/image_rect_raw --audio /audio/audio_stamped

**record** takes ``duration x rate`` test samples of a dataset, corrupts sample ``i`` at the
schedule's level for ``i / rate`` seconds (or with the seeded evaluation mix, or not at all) and
writes sensor topics, labels and the applied corruption (:func:`admn_ros.datasets.bags.write_bag`,
whole per-sample clips), with the dataset, seed and schedule in the bag's metadata. With
``--outputs`` it also runs the model over each sample as admn_fusion would (``--policy``,
``--budget``, ``--checkpoint``) and records its typed outputs (``admn_msgs``: /admn/prediction,
/admn/allocation, /admn/quality, /admn/inference) with their definitions, for plotting and tools.

**eval** scores every (policy, budget) cell. Offline (default) reads the bag once and runs the
model in batches (:mod:`admn_ros.quality_estimators.bag_eval`). ``--through-ros`` runs the
``replay_eval`` graph of :mod:`admn_ros.graph` once per cell - bag_player replays the bag with
``/clock`` into admn_fusion (the cell's policy and budget), evaluator scores it - and waits until
every frame came out. ``--compare`` also runs the offline path and reports per frame whether both
gave the same class and the same layers. Without a label topic the report has predictions,
allocations and timings and no accuracy. Reports: :mod:`admn_ros.bag_report`.

Topic names of a foreign bag are given per stream (``--rgb``, ``--depth``, ``--audio``,
``--audio-info``, ``--label``, ``--corruption``): offline they rename the streams as they are read,
through ROS bag_player republishes them under the names the nodes subscribe to. Audio recorded as
``audio_common_msgs/AudioDataStamped`` needs that package built for the ROS path, and its
``AudioInfo`` topic, which bag_player then plays too, latched; without either the ROS path runs on
the other modalities and says so.

This module imports no rclpy: the nodes run as processes (:mod:`admn_ros.bringup`).
"""
from __future__ import annotations

import json
import os
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from admn_ros import report as R
from admn_ros.wire import topics as T

STREAMS = ('rgb', 'depth', 'audio', 'audio_info', 'label', 'corruption')
MIXES = ('clean', 'standard')
CUSTOM_SEED = 'admn_ros.seed'
CUSTOM_SCHEDULE = 'admn_ros.schedule'
CUSTOM_COMMAND = 'admn_ros.command'


# --------------------------------------------------------------------------- record
def _samples(dataset: str, n: int, seed: int, split: str):
    """``n`` samples of the split in order: a seeded subset of a larger split, the split repeated
    when it is smaller (the synthetic world generates exactly ``n``)."""
    from admn_ros.datasets.registry import load_dataset
    from admn_ros.datasets.sample import batch_size, take
    data = load_dataset(dataset, split, seed=seed, size=n if dataset == 'synthetic' else None)
    have = batch_size(data.arrays)
    if have > n:
        index = np.sort(np.random.default_rng([seed, 0xBA6]).permutation(have)[:n])
    else:
        index = np.arange(n) % have
    return take(data.arrays, index), data.class_names


def _check_recordable(schedule, n: int, rate_hz: float) -> None:
    from admn_ros.datasets.schedules import SILENT
    for i in range(n):
        for m, (ctype, _) in schedule.level_at(i / rate_hz).items():
            if ctype == SILENT:
                raise ValueError(f"schedule silences {m} at {i / rate_hz:g} s: a bag of whole samples "
                                 "cannot record a sensor that published nothing; use a corruption")


@dataclass(frozen=True)
class OutputConfig:
    """What ``admn bag record --outputs`` runs over each recorded sample."""

    checkpoint: str = ''        # '' = the shipped default of the recorded dataset
    policy: str = 'admn'
    budget: float = 0.5
    budget_unit: str = 'layers'


def fusion_output_hook(cfg: OutputConfig, dataset: str):
    """A :func:`admn_ros.datasets.bags.write_bag` ``outputs`` hook: admn_fusion's four typed
    outputs for each sample, from the model run as the node runs it (one frame at a time, the
    sample's stamp and the anchor modality's frame_id). Offline there is no transport, so
    ``latency_ms`` and ``processing_ms`` are the frame's compute time."""
    from admn_ros import wire
    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.runtime.engine import EngineConfig, FusionEngine
    from admn_ros.runtime.frame_queue import Frame
    from admn_ros.datasets.ros_messages.typestore import bag_messages

    engine = FusionEngine(EngineConfig(model_path=cfg.checkpoint, dataset=dataset,
                                       policy=cfg.policy))
    budget = Budget(cfg.budget, cfg.budget_unit)
    bag = bag_messages()

    def outputs(stamp_ns: int, sample: Mapping[str, np.ndarray]):
        data = {m: sample[m] for m in engine.modalities if m in sample}
        frame = Frame(stamp_ns, T.FRAME_IDS[next(iter(data))], data)
        t0 = time.perf_counter()
        inf = engine.infer(frame, budget)
        compute_ms = (time.perf_counter() - t0) * 1e3
        header = wire.header(stamp_ns, frame.frame_id, bag)
        return [
            ('/' + T.PREDICTION, T.PREDICTION_TYPE, wire.prediction_msg(inf, header, bag)),
            ('/' + T.ALLOCATION, T.ALLOCATION_TYPE,
             wire.allocation_msg(inf, engine.model_modalities, header, bag)),
            ('/' + T.QUALITY, T.QUALITY_TYPE, wire.quality_msg(inf, header, bag)),
            ('/' + T.INFERENCE, T.INFERENCE_TYPE, wire.inference_msg(
                inf, header, latency_ms=compute_ms, processing_ms=compute_ms, dropped=0,
                flavour=bag))]
    return outputs


def record(dataset: str, out, *, schedule=None, mix: str = 'clean', duration_s: float = 10.0,
           rate_hz: float = 10.0, storage: str = 'mcap', seed: int = 0, split: str = 'test',
           command: str = '', outputs: Optional[OutputConfig] = None) -> Path:
    """Write ``round(duration_s * rate_hz)`` samples of ``dataset`` as a bag at ``out``; see the
    module docstring. ``schedule`` is a YAML path or a schedule object; ``mix`` (without a
    schedule) is ``clean`` or ``standard`` (the seeded corruption mix of ``admn eval``).
    ``outputs`` also records admn_fusion's typed outputs (:func:`fusion_output_hook`)."""
    from admn_ros.datasets.bags import CUSTOM_DATASET, write_bag, write_schedule_bag
    from admn_ros.datasets.corruptions import CorruptionSampler
    from admn_ros.datasets.schedules import load_schedule, save_schedule
    from admn_ros.datasets.sample import present_modalities
    out = Path(out)
    if out.exists():
        raise ValueError(f'{out} exists: a bag is written to a new directory')
    if not (duration_s > 0 and rate_hz > 0):
        raise ValueError(f'duration and rate must be > 0, got {duration_s} s at {rate_hz} Hz')
    if mix not in MIXES:
        raise ValueError(f'mix must be one of {MIXES}, got {mix!r}')
    if schedule is not None and mix != 'clean':
        raise ValueError('give either a schedule or a corruption mix, not both')
    n = max(1, int(round(duration_s * rate_hz)))
    if isinstance(schedule, (str, os.PathLike)):
        schedule = load_schedule(schedule)
    if schedule is not None:
        _check_recordable(schedule, n, rate_hz)
    batch, class_names = _samples(dataset, n, seed, split)
    meta = {CUSTOM_DATASET: dataset, CUSTOM_SEED: str(seed), CUSTOM_COMMAND: command}
    kwargs = dict(class_names=class_names, rate_hz=rate_hz, storage=storage, metadata=meta)
    if outputs is not None:
        kwargs['outputs'] = fusion_output_hook(outputs, dataset)
    if schedule is not None:
        with tempfile.TemporaryDirectory() as tmp:
            save_schedule(schedule, Path(tmp) / 'schedule.yaml')
            meta[CUSTOM_SCHEDULE] = (Path(tmp) / 'schedule.yaml').read_text(encoding='utf-8')
        return write_schedule_bag(out, batch, schedule, seed=seed, **kwargs)
    if mix == 'standard':
        batch = CorruptionSampler.standard()(batch, np.random.default_rng(seed + 12345))
    else:   # clean, and said so on the corruption topic
        batch = dict(batch)
        for m in present_modalities(batch):
            batch.setdefault(f'ctype_{m}', np.zeros(n, np.int64))
            batch.setdefault(f'severity_{m}', np.zeros(n, np.float32))
    return write_bag(out, batch, **kwargs)


# --------------------------------------------------------------------------- info
def info(bag, verify: bool = True) -> Dict[str, Any]:
    """``{path, storage, duration_s, start_ns, end_ns, messages, topics: [{topic, type, count,
    rate_hz}], custom_data, checksums}`` of a rosbag2 directory.

    With ``verify`` (the default) the MCAP checksums are recomputed first and a mismatch is a
    :class:`BagError` (one line): counts read from a corrupted file's index would look healthy.
    ``checksums`` says what was checked ('not verified', 'none (sqlite3)', or the counts)."""
    from rosbags.rosbag2 import Reader

    from admn_ros.datasets.bags import BagError, bag_custom_data
    from admn_ros.datasets.mcap_crc import McapCrcError, verify_bag
    path = Path(bag)
    custom = bag_custom_data(path)
    checksums = 'not verified'
    if verify:
        try:
            crc = verify_bag(path)
        except McapCrcError as err:
            raise BagError(str(err)) from None
        checksums = 'none (not MCAP)' if crc is None else (
            f'{crc.chunks_checked} chunk CRCs verified'
            + (f', {crc.chunks_without_crc} chunks without one' if crc.chunks_without_crc else '')
            + (', data section verified' if crc.data_section_checked else ''))
    try:
        with Reader(path) as reader:
            duration = reader.duration / 1e9 if reader.message_count else 0.0
            topics = [{'topic': name, 'type': t.msgtype, 'count': int(t.msgcount),
                       'rate_hz': (t.msgcount - 1) / duration if duration > 0 and t.msgcount > 1
                       else None}
                      for name, t in sorted(reader.topics.items())]
            storage = 'mcap' if any(path.glob('*.mcap')) else 'sqlite3'
            return {'path': str(path), 'storage': storage, 'duration_s': duration,
                    'start_ns': int(reader.start_time) if reader.message_count else None,
                    'end_ns': int(reader.end_time) if reader.message_count else None,
                    'messages': int(reader.message_count), 'topics': topics, 'custom_data': custom,
                    'checksums': checksums}
    except Exception as err:   # rosbags ReaderError and friends
        raise BagError(f'cannot read bag {path}: {type(err).__name__}: {err}') from err


def format_info(data: Mapping[str, Any]) -> str:
    lines = [f"bag:       {data['path']} ({data['storage']})",
             f"duration:  {data['duration_s']:.3f} s, {data['messages']} messages"]
    if data.get('checksums'):
        lines.append(f"checksums: {data['checksums']}")
    width = max([len(t['topic']) for t in data['topics']] + [5])
    for t in data['topics']:
        rate = '' if t['rate_hz'] is None else f"  {t['rate_hz']:.2f} Hz"
        lines.append(f"  {t['topic']:<{width}}  {t['type']:<40} {t['count']:>7}{rate}")
    for key, value in data['custom_data'].items():
        text = value if len(value) <= 60 and '\n' not in value else value.splitlines()[0][:57] + '...'
        lines.append(f'  [{key}] {text}')
    return '\n'.join(lines)


# --------------------------------------------------------------------------- through ROS
def _recorded(bag) -> Dict[str, str]:
    return {t['topic']: t['type'] for t in info(bag, verify=False)['topics']}


def replay_plan(bag, model_modalities: Sequence[str], topics: Optional[Mapping[str, str]] = None,
                audio_common: Optional[bool] = None) -> Dict[str, Any]:
    """What the replay_eval graph needs for this bag: the topics bag_player plays and their
    renames, the modalities admn_fusion waits for, its audio input, notes on what is left out,
    and the number of frames to expect (messages on the first modality). Audio recorded as
    ``AudioDataStamped`` is played with its stream's ``AudioInfo`` topic, without which
    admn_fusion cannot decode it."""
    from admn_ros.datasets.bags import topic_renames
    from admn_ros.wire import audio_common_available
    recorded = _recorded(bag)
    renames = topic_renames(topics or {}, recorded)
    # What each standard name is fed from: a mapped topic, else the bag's own of that name.
    source = {new: old for old, new in renames.items()}
    for name in (T.RGB_TOPIC, T.DEPTH_TOPIC, T.AUDIO_TOPIC, T.AUDIO_STAMPED_TOPIC,
                 T.AUDIO_INFO_TOPIC, T.LABEL_TOPIC, T.CORRUPTION_TOPIC):
        if name not in source and name in recorded and name not in renames:
            source[name] = name
    notes, play, modalities = [], [], []
    audio_input = 'image'
    for m, name in (('rgb', T.RGB_TOPIC), ('depth', T.DEPTH_TOPIC)):
        if m in model_modalities and name in source:
            modalities.append(m)
            play.append(source[name])
    if 'audio' in model_modalities:
        if T.AUDIO_TOPIC in source:
            modalities.append('audio')
            play.append(source[T.AUDIO_TOPIC])
        elif T.AUDIO_STAMPED_TOPIC in source:
            stamped = source[T.AUDIO_STAMPED_TOPIC]
            info_topic = source.get(T.AUDIO_INFO_TOPIC)
            available = audio_common_available() if audio_common is None else audio_common
            if not available:
                notes.append(f'audio on {stamped} (AudioDataStamped) not replayed: '
                             'audio_common_msgs is not built here, so admn_fusion ran without '
                             'audio')
            elif info_topic is None or recorded[info_topic] != T.AUDIO_INFO_TYPE:
                notes.append(f'audio on {stamped} (AudioDataStamped) not replayed: the bag has '
                             f'no {T.AUDIO_INFO_TYPE} topic (name it with --audio-info) to say '
                             'its format, so admn_fusion ran without audio')
            else:   # bag_player offers the AudioInfo latched (wire.replay_qos)
                modalities.append('audio')
                audio_input = 'audio_common'
                play += [stamped, info_topic]
    if not modalities:
        raise ValueError(f'{bag} has no topic for the model modalities {tuple(model_modalities)}; '
                         f'its topics: {sorted(recorded)} (name them with --rgb/--depth/--audio)')
    for name in (T.LABEL_TOPIC, T.CORRUPTION_TOPIC):
        if name in source:
            play.append(source[name])
    expected = next(int(t['count']) for t in info(bag, verify=False)['topics'] if t['topic'] == play[0])
    return {'play': play, 'remappings': [f'{old}:={new}' for old, new in renames.items()
                                         if old != new and old in play],
            'modalities': [m for m in model_modalities if m in modalities],
            'audio_input': audio_input, 'notes': notes, 'expected_frames': expected,
            'labelled': T.LABEL_TOPIC in source}


def _read_status(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):   # not written yet, or being replaced
        return {}


def run_replay(bag, *, model: str, policy: str, budget: float, unit: str, plan: Mapping[str, Any],
               work_dir, rate: float = 1.0, device: str = 'cpu', slop_s: Optional[float] = None,
               namespace: str = '', settle_s: float = 5.0, timeout_s: float = 900.0,
               sink: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """One cell through the ``replay_eval`` graph; returns the evaluator's JSON report plus
    ``wall_s``. Stops the graph once the evaluator has every expected frame, or nothing new came
    for ``settle_s`` after the bag ended; raises RuntimeError when a node fails or on timeout."""
    from admn_ros.bringup import Bringup
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    report, status = work / 'report.json', work / 'status.json'
    for stale in (report, status):
        stale.unlink(missing_ok=True)
    fusion = {'model_path': str(Path(model).resolve()), 'policy': policy, 'budget': float(budget),
              'budget_unit': unit, 'device': device, 'modalities': list(plan['modalities']),
              'audio_input': plan['audio_input'],
              # Every frame is scored: a backlog waits for the model (bounded, frames can be big).
              'frame_queue_depth': max(100, min(int(plan['expected_frames']), 2000))}
    if slop_s is not None:
        fusion['sync_slop_s'] = float(slop_s)
    overrides = {
        'bag_player': {'bag_path': str(Path(bag).resolve()), 'topics': list(plan['play']),
                       'remappings': list(plan['remappings']), 'rate': float(rate),
                       'relative_topics': bool(namespace.strip('/')),
                       'wait_timeout_s': 300.0},
        'admn_fusion': fusion,
        # Sim time stands still once the bag ends: nothing counts as dropped while we wait.
        'evaluator': {'report_path': str(report), 'status_path': str(status),
                      'drop_after_s': 3600.0},
    }
    lines: List[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        if sink is not None:
            sink(line)

    graph = Bringup('replay_eval', overrides, namespace=namespace, sink=keep)
    start = time.monotonic()
    ended = last_change = None
    frames = -1
    try:
        graph.start()
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            codes = graph.returncodes()
            failed = {n: c for n, c in codes.items() if c not in (None, 0)}
            if failed or any(c is not None for n, c in codes.items() if n != 'bag_player'):
                raise RuntimeError(f'replay_eval: node exited early {codes}:\n'
                                   + '\n'.join(lines[-30:]))
            seen = int(_read_status(status).get('frames') or 0)
            if seen != frames:
                frames, last_change = seen, now
            if codes.get('bag_player') == 0 and ended is None:
                ended = now
            if frames >= plan['expected_frames']:
                break
            if ended is not None and now - max(ended, last_change) > settle_s:
                break
            if now - start > timeout_s:
                raise RuntimeError(f'replay_eval: {frames} of {plan["expected_frames"]} frames '
                                   f'after {timeout_s:.0f} s:\n' + '\n'.join(lines[-30:]))
    finally:
        codes = graph.stop()
    wall = time.monotonic() - start
    if not report.is_file():
        raise RuntimeError(f'replay_eval: the evaluator wrote no report (exit codes {codes}):\n'
                           + '\n'.join(lines[-30:]))
    out = json.loads(report.read_text(encoding='utf-8'))
    out['wall_s'] = wall
    return out


def ros_cell(evaluator_report: Mapping[str, Any], policy: str, budget: float, unit: str,
             class_names: Sequence[str]) -> Dict[str, Any]:
    """An evaluator report as a bag-evaluation cell (the schema of the offline cells)."""
    r = evaluator_report
    frames = []
    for f in r.get('timeline', []):
        predicted = f.get('predicted')
        frames.append({
            't_s': f['t_s'], 'stamp_ns': f['stamp_ns'], 'predicted': predicted,
            'class_name': (class_names[predicted] if predicted is not None
                           and 0 <= predicted < len(class_names) else None),
            'correct': f.get('correct'), 'layers': {m: int(v) for m, v in f['layers'].items()},
            'levels': f.get('levels'), 'latency_ms': f.get('latency_ms'),
            'quality': f.get('quality')})
    n = len(frames)
    modalities = R.modality_order({m for f in frames for m in f['layers']})
    mean_layers = {m: float(np.mean([f['layers'][m] for f in frames if m in f['layers']]))
                   for m in modalities}
    timing = {k: r.get(k) for k in ('latency_ms_p50', 'latency_ms_p95', 'model_ms_p50',
                                    'policy_ms_p50', 'preprocess_ms_p50', 'intake_ms_p50',
                                    'received_hz')}
    timing['wall_s'] = r.get('wall_s')
    return {'policy': policy, 'budget': float(budget), 'budget_unit': unit, 'path': 'ros',
            'frames_scored': n, 'matched': r.get('matched', 0), 'accuracy': r.get('accuracy'),
            'mean_gflops': r.get('mean_gflops'), 'mean_layers': mean_layers, 'timing': timing,
            'counts': {k: r.get(k) for k in ('predictions', 'drops', 'pending_labels',
                                              'unmatched_predictions', 'fusion_dropped')},
            'frames': frames}


def evaluate_through_ros(bag, *, checkpoint=None, dataset: Optional[str] = None,
                         policies: Sequence[str] = ('admn',), budgets: Sequence[float] = (0.5,),
                         unit: str = 'layers', topics: Optional[Mapping[str, str]] = None,
                         work_dir=None, rate: float = 1.0, device: str = 'cpu',
                         slop_s: Optional[float] = None, namespace: str = '',
                         sink: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Every (policy, budget) cell through the node graph; the report has the schema of
    :func:`admn_ros.quality_estimators.bag_eval.evaluate_bag` with ``path: 'ros'``."""
    from admn_ros.quality_estimators.bag_eval import bag_dataset, resolve_checkpoint
    from admn_ros.quality_estimators.budget import Budget
    from admn_ros.quality_estimators.inference import load_model
    from admn_ros.quality_estimators.policies import policy_spec_error
    for spec in policies:
        if policy_spec_error(spec):
            raise ValueError(policy_spec_error(spec))
    for b in budgets:
        Budget(float(b), unit)
    if not 0.01 <= rate <= 1000.0:
        raise ValueError(f'playback rate must be in [0.01, 1000], got {rate}')
    model = resolve_checkpoint(bag, checkpoint, dataset)
    loaded = load_model(model, device='cpu')
    names = list(loaded.meta.get('class_names') or [])
    if len(names) != int(loaded.model.cfg.num_classes):
        names = [str(i) for i in range(int(loaded.model.cfg.num_classes))]
    model_modalities = list(loaded.modalities)
    plan = replay_plan(bag, model_modalities, topics)
    del loaded   # the nodes load their own
    timeout = 600.0 + 3.0 * info(bag, verify=False)['duration_s'] / rate
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix='admn_bag_ros_'))
    cells = []
    for spec in policies:
        for b in budgets:
            cell_dir = work / f'ros_{spec.replace(":", "-")}_{float(b):g}'
            report = run_replay(bag, model=model, policy=spec, budget=b, unit=unit, plan=plan,
                                work_dir=cell_dir, rate=rate, device=device, slop_s=slop_s,
                                namespace=namespace, sink=sink, timeout_s=timeout)
            cells.append(ros_cell(report, spec, b, unit, names))
    return {'bag': str(bag), 'checkpoint': str(model), 'dataset': dataset or bag_dataset(bag),
            'path': 'ros', 'class_names': names, 'labelled': plan['labelled'],
            'corruption_recorded': T.CORRUPTION_TOPIC in _recorded(bag)
            or bool((topics or {}).get('corruption')),
            'modalities': plan['modalities'], 'model_modalities': model_modalities,
            'frames': plan['expected_frames'], 'unmatched': {}, 'topics': dict(topics or {}),
            'device': device, 'notes': plan['notes'], 'cells': cells}


# --------------------------------------------------------------------------- agreement
def compare(offline: Mapping[str, Any], ros: Mapping[str, Any]) -> Dict[str, Any]:
    """Per cell, frame by frame (matched by stamp): same class? same layers? and the accuracies."""
    out = []
    by_key = {(c['policy'], c['budget']): c for c in offline['cells']}
    for rc in ros['cells']:
        oc = by_key.get((rc['policy'], rc['budget']))
        if oc is None:
            continue
        off = {f['stamp_ns']: f for f in oc['frames']}
        common = [f for f in rc['frames'] if f['stamp_ns'] in off]
        same_class = sum(f['predicted'] == off[f['stamp_ns']]['predicted'] for f in common)
        same_layers = sum(f['layers'] == off[f['stamp_ns']]['layers'] for f in common)
        out.append({'policy': rc['policy'], 'budget': rc['budget'],
                    'offline_frames': len(oc['frames']), 'ros_frames': len(rc['frames']),
                    'common_frames': len(common), 'same_class': same_class,
                    'same_layers': same_layers, 'offline_accuracy': oc['accuracy'],
                    'ros_accuracy': rc['accuracy'],
                    'exact': (len(common) == len(oc['frames']) == len(rc['frames'])
                              and same_class == same_layers == len(common)
                              and oc['accuracy'] == rc['accuracy'])})
    return {'cells': out, 'exact': bool(out) and all(c['exact'] for c in out)}


# --------------------------------------------------------------------------- CLI
def _topics(args) -> Dict[str, str]:
    return {s: getattr(args, s) for s in STREAMS if getattr(args, s, None)}


def _lists(args):
    from admn_ros.fusion.validate import Range, parse_list
    budgets = list(parse_list(args.budgets, '--budgets', float, limit=Range(0.0, 1.0, lo_open=True)))
    policies = list(parse_list(args.policies, '--policies', str))
    return policies, budgets


def cli_record(args) -> int:
    # The command that reproduces the bag, from what was parsed (not argv: callers may be tests).
    options = [('--dataset', args.dataset), ('--schedule', args.schedule), ('--mix', args.mix),
               ('--duration', f'{args.duration:g}'), ('--rate', f'{args.rate:g}'),
               ('--storage', args.storage), ('--split', args.split), ('--seed', str(args.seed)),
               ('--out', args.out)]
    outputs = None
    if args.outputs:
        outputs = OutputConfig(checkpoint=args.checkpoint or '', policy=args.policy,
                               budget=args.budget, budget_unit=args.budget_unit)
        options += [('--outputs', ''), ('--checkpoint', args.checkpoint),
                    ('--policy', args.policy), ('--budget', f'{args.budget:g}'),
                    ('--budget-unit', args.budget_unit)]
    command = 'admn bag record ' + ' '.join(
        f'{k} {shlex.quote(str(v))}' if v != '' else k for k, v in options if v is not None)
    t0 = time.perf_counter()
    path = record(args.dataset, args.out, schedule=args.schedule, mix=args.mix,
                  duration_s=args.duration, rate_hz=args.rate, storage=args.storage,
                  seed=args.seed, split=args.split, command=command, outputs=outputs)
    data = info(path)
    print(format_info(data))
    print(f'recorded {path} in {time.perf_counter() - t0:.1f} s')
    return 0


def cli_info(args) -> int:
    data = info(args.bag, verify=not args.no_verify)
    print(json.dumps(data, indent=2) if args.json else format_info(data))
    return 0


def cli_eval(args) -> int:
    from admn_ros.bag_report import write_bag_report
    from admn_ros.quality_estimators.bag_eval import evaluate_bag
    policies, budgets = _lists(args)
    topics = _topics(args)
    out = Path(args.out)
    common = dict(checkpoint=args.checkpoint, dataset=args.dataset, policies=policies,
                  budgets=budgets, unit=args.budget_unit, topics=topics)
    reports = []
    if not args.through_ros or args.compare:
        t0 = time.perf_counter()
        reports.append(evaluate_bag(args.bag, device=args.device, batch_size=args.batch_size,
                                    allow_missing_modalities=args.allow_missing_modalities,
                                    **common))
        print(f'offline: {time.perf_counter() - t0:.1f} s')
    if args.through_ros:
        t0 = time.perf_counter()
        sink = print if args.verbose else None
        reports.append(evaluate_through_ros(
            args.bag, work_dir=out / 'ros_runs', rate=args.rate,
            device='cpu' if args.device == 'auto' else args.device, slop_s=args.slop,
            namespace=args.namespace, sink=sink, **common))
        print(f'through ROS: {time.perf_counter() - t0:.1f} s')
    for report in reports:
        written = write_bag_report(report, out)
        print('\n'.join(_table(report)))
        print(f"report: {written['markdown']} (+ .json, plots)")
    if len(reports) == 2:
        agreement = compare(*reports)
        (out / 'agreement.json').write_text(json.dumps(agreement, indent=2) + '\n', encoding='utf-8')
        for c in agreement['cells']:
            print(f"agreement {c['policy']} @ {c['budget']:g}: {c['common_frames']} common frames "
                  f"({c['offline_frames']} offline, {c['ros_frames']} ROS), same class "
                  f"{c['same_class']}, same layers {c['same_layers']}, accuracy "
                  f"{c['offline_accuracy']} vs {c['ros_accuracy']}")
        print('offline and ROS agree exactly' if agreement['exact'] else
              'offline and ROS differ (see agreement.json)')
    return 0


def _table(report: Mapping[str, Any]) -> List[str]:
    lines = [f"{report['path']}: {report['frames']} frames"
             + ('' if report['labelled'] else ' (no labels: no accuracy)')]
    if report.get('undecodable'):
        lines.append('  undecodable messages: ' + ', '.join(
            f'{t} {n}' for t, n in report['undecodable'].items()))
    for c in report['cells']:
        acc = '-' if c['accuracy'] is None else f"{c['accuracy']:.3f}"
        layers = ' '.join(f'{m} {v:.1f}' for m, v in c['mean_layers'].items())
        gflops = '-' if c['mean_gflops'] is None else f"{c['mean_gflops']:.4f}"
        lines.append(f"  {c['policy']:<12} budget {c['budget']:<5g} accuracy {acc:<6} "
                     f"GFLOPs {gflops:<8} layers {layers}")
    return lines


__all__ = ['record', 'info', 'format_info', 'replay_plan', 'run_replay', 'ros_cell',
           'evaluate_through_ros', 'compare', 'cli_record', 'cli_info', 'cli_eval']
