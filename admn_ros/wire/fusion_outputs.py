"""What ``admn_fusion`` publishes and the budget it listens to: the builder and the reader of each
message.

Every output has one type, from the ``admn_msgs`` package (``admn_msgs/msg/*.msg`` documents each
field with its unit), whatever else is installed (:data:`admn_ros.datasets.ros_messages.topics.OUTPUT_TYPES`):

* ``admn/prediction``: ``admn_msgs/Prediction`` (class id and name, score, top-k);
* ``admn/allocation``: ``admn_msgs/Allocation`` (layers, depth, presence and kept blocks per
  modality; budget fraction, unit and spent);
* ``admn/quality``: ``admn_msgs/Quality`` (quality per present modality);
* ``admn/inference``: ``admn_msgs/Inference`` (GFLOPs, timings in ms, dropped sets, present);
* ``admn/classification``: the prediction again as ``vision_msgs/Classification`` (results sorted
  by score, ``class_id`` = class index as a string), only where vision_msgs imports;
* ``budget``: ``std_msgs/Float32``, a fraction of the full model.

Builders take a :class:`~admn_ros.wire.Flavour` (rclpy for nodes, rosbags for bags);
readers work on either kind of message and return plain Python values. ``inf`` arguments are
:class:`admn_ros.runtime.engine.Inference` objects.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from admn_ros.datasets.ros_messages import topics as T
from admn_ros.datasets.ros_messages.flavours import ROS, Flavour, message_class
from admn_ros.datasets.ros_messages.header import stamp_to_ns

TOP_K = 5                     # classes listed in a prediction


def output_class(topic: str):
    """The rclpy class of an admn_fusion output topic (node-relative name, e.g. ``T.ALLOCATION``).

    Raises ImportError naming the fix when admn_msgs is not built here."""
    try:
        return message_class(T.OUTPUT_TYPES[topic])
    except ImportError as exc:
        raise ImportError(f'{exc}: admn_msgs is not built in this environment; `make venv` '
                          'builds it into .venv, colcon builds it in a workspace') from None


@functools.lru_cache(maxsize=None)
def classification_type():
    """``vision_msgs.msg.Classification`` when it imports, else None (no extra output).

    Cached: a failed import is retried on every call, and one costs ~0.1 ms per prediction."""
    try:
        return message_class(T.CLASSIFICATION_TYPE)
    except ImportError:
        return None


def _top(inf) -> np.ndarray:
    return np.argsort(-inf.probs, kind='stable')[:TOP_K]


def prediction_msg(inf, header, flavour: Flavour = ROS):
    """An inference -> ``admn_msgs/Prediction``."""
    order = _top(inf)
    return flavour.cls(T.PREDICTION_TYPE)(
        header=header, class_id=int(inf.class_id), class_name=str(inf.class_name),
        score=float(inf.score), top_class_ids=flavour.array(order, np.uint32),
        top_scores=flavour.array(inf.probs[order], np.float32))


def classification_msg(inf, header):
    """An inference -> ``vision_msgs/Classification`` (rclpy; None without vision_msgs)."""
    cls = classification_type()
    if cls is None:
        return None
    hypothesis = message_class(T.OBJECT_HYPOTHESIS_TYPE)
    return cls(header=header, results=[hypothesis(class_id=str(int(i)), score=float(inf.probs[i]))
                                       for i in _top(inf)])


def read_prediction(msg) -> Tuple[int, int, float]:
    """``admn_msgs/Prediction`` -> (stamp_ns, class_id, score)."""
    return stamp_to_ns(msg.header.stamp), int(msg.class_id), float(msg.score)


def _per_modality(msg, field: str) -> Dict[str, Any]:
    values = list(getattr(msg, field))
    if len(values) != len(msg.modalities):
        raise ValueError(f'{field} has {len(values)} entries for {len(msg.modalities)} modalities')
    return dict(zip(msg.modalities, values))


def allocation_msg(inf, modalities: Sequence[str], header, flavour: Flavour = ROS):
    """Layers per modality (count, depth, present, which blocks) plus the budget."""
    masks = [np.asarray(inf.keep[m], dtype=bool) for m in modalities]
    return flavour.cls(T.ALLOCATION_TYPE)(
        header=header, modalities=list(modalities),
        layers=flavour.array([int(k.sum()) for k in masks], np.uint16),
        depth=flavour.array([k.size for k in masks], np.uint16),
        present=flavour.array([m in inf.present for m in modalities], bool),
        kept=flavour.array(np.concatenate(masks) if masks else [], bool),
        budget_unit=str(inf.budget_unit), budget_fraction=float(inf.budget_fraction),
        budget_spent=float(inf.budget_spent))


def read_allocation(msg) -> Dict[str, Any]:
    """``admn_msgs/Allocation`` -> ``{'stamp_ns', 'layers': {m: n}, 'kept': {m: [i]},
    'present': {m: bool}, 'fraction', 'unit', 'spent'}``; ValueError when the arrays disagree."""
    layers = {m: int(n) for m, n in _per_modality(msg, 'layers').items()}
    depth = {m: int(n) for m, n in _per_modality(msg, 'depth').items()}
    kept_flat = [bool(k) for k in msg.kept]
    if len(kept_flat) != sum(depth.values()):
        raise ValueError(f'kept has {len(kept_flat)} entries for a total depth of '
                         f'{sum(depth.values())}')
    kept, start = {}, 0
    for m, n in depth.items():
        kept[m] = [i for i, k in enumerate(kept_flat[start:start + n]) if k]
        start += n
    return {'stamp_ns': stamp_to_ns(msg.header.stamp), 'layers': layers, 'kept': kept,
            'present': {m: bool(p) for m, p in _per_modality(msg, 'present').items()},
            'fraction': round(float(msg.budget_fraction), 6), 'unit': str(msg.budget_unit),
            'spent': float(msg.budget_spent)}


def quality_msg(inf, header, flavour: Flavour = ROS):
    """Quality estimate per present modality (``familiarity`` stays empty: no estimate yet)."""
    return flavour.cls(T.QUALITY_TYPE)(
        header=header, modalities=list(inf.quality),
        quality=flavour.array(list(inf.quality.values()), np.float32),
        familiarity=flavour.array([], np.float32))


def read_quality(msg) -> Dict[str, float]:
    """``admn_msgs/Quality`` -> ``{modality: quality}``."""
    return {m: float(q) for m, q in _per_modality(msg, 'quality').items()}


def inference_msg(inf, header, *, latency_ms: float, processing_ms: float, dropped: int,
                  flavour: Flavour = ROS):
    """Cost and timings of one set."""
    return flavour.cls(T.INFERENCE_TYPE)(
        header=header, gflops=float(inf.gflops), latency_ms=float(latency_ms),
        processing_ms=float(processing_ms), preprocess_ms=float(inf.preprocess_ms),
        policy_ms=float(inf.policy_ms), model_ms=float(inf.model_ms), dropped=int(dropped),
        present=list(inf.present))


INFERENCE_TIMES = ('gflops', 'latency_ms', 'processing_ms', 'model_ms', 'policy_ms',
                   'preprocess_ms')


def read_inference(msg) -> Dict[str, Any]:
    """``admn_msgs/Inference`` -> ``{'stamp_ns', 'gflops', 'latency_ms', ..., 'dropped',
    'present'}``."""
    out: Dict[str, Any] = {'stamp_ns': stamp_to_ns(msg.header.stamp)}
    for key in INFERENCE_TIMES:
        out[key] = float(getattr(msg, key))
    out['dropped'] = int(msg.dropped)
    out['present'] = tuple(msg.present)
    return out


def budget_msg(fraction: float, flavour: Flavour = ROS):
    """``std_msgs/Float32`` carrying a budget fraction."""
    return flavour.cls(T.FLOAT32_TYPE)(data=float(fraction))


def read_budget(msg) -> float:
    """Budget message -> the fraction, rounded to what float32 can tell apart (0.3 arrives as
    0.30000001); range checks are the budget's own (:func:`admn_ros.quality_estimators.budget.
    budget_problem`)."""
    return round(float(msg.data), 6)
