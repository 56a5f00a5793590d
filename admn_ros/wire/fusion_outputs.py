"""What ``admn_fusion`` publishes (prediction, allocation, quality, inference) and the budget it
listens to: the builder and the reader of each message.

* ``admn/prediction``: ``vision_msgs/Classification`` (results sorted by score, ``class_id`` =
  class index as a string) when vision_msgs imports, else a ``DiagnosticArray`` with one status
  named ``prediction`` (message = class name; values ``class_id``, ``class_name``, ``score``,
  ``top``) - the same layout as the ground-truth label. :func:`read_prediction` reads both.
* ``admn/allocation``: one status per model modality (``layers``, ``kept`` = comma-separated
  block indices, ``present``) and one ``budget`` status (``fraction``, ``unit``, ``spent``).
* ``admn/quality``: one status per present modality (``quality`` in [0, 1]).
* ``admn/inference``: one ``inference`` status (``gflops``, ``latency_ms``, ``processing_ms``,
  ``model_ms``, ``policy_ms``, ``preprocess_ms``, ``dropped``, ``present``).
* ``budget``: ``std_msgs/Float32``, a fraction of the full model.

``inf`` arguments are :class:`admn_ros.runtime.engine.Inference` objects.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Tuple

import numpy as np

from admn_ros.wire import topics as T
from admn_ros.wire.diagnostic_array import diag_status, find_status, status_values
from admn_ros.wire.flavours import ROS, Flavour, message_class
from admn_ros.wire.header import stamp_to_ns

TOP_K = 5                     # classes listed in a prediction


@functools.lru_cache(maxsize=None)
def classification_type():
    """``vision_msgs.msg.Classification`` when it imports, else None (the fallback is used).

    Cached: a failed import is retried on every call, and one costs ~0.1 ms per prediction."""
    try:
        return message_class(T.CLASSIFICATION_TYPE)
    except ImportError:
        return None


def prediction_type():
    """The message class ``admn/prediction`` carries here."""
    return classification_type() or message_class(T.DIAGNOSTIC_ARRAY_TYPE)


def _array(header, status):
    return message_class(T.DIAGNOSTIC_ARRAY_TYPE)(header=header, status=status)


def prediction_msg(inf, header):
    """An inference -> the prediction message (:func:`prediction_type`)."""
    order = np.argsort(-inf.probs)[:TOP_K]
    cls = classification_type()
    if cls is not None:
        hypothesis = message_class(T.OBJECT_HYPOTHESIS_TYPE)
        return cls(header=header, results=[hypothesis(class_id=str(int(i)),
                                                      score=float(inf.probs[i])) for i in order])
    top = ','.join(f'{int(i)}:{float(inf.probs[i]):.4f}' for i in order)
    values = {'class_id': inf.class_id, 'class_name': inf.class_name,
              'score': f'{inf.score:.6f}', 'top': top}
    return _array(header, [diag_status(T.PREDICTION_STATUS, inf.class_name, values)])


def read_prediction(msg) -> Tuple[int, int, float]:
    """Prediction message (either type) -> (stamp_ns, class_id, score)."""
    stamp = stamp_to_ns(msg.header.stamp)
    if hasattr(msg, 'results'):  # vision_msgs/Classification
        if not msg.results:
            raise ValueError('Classification has no results')
        best = max(msg.results, key=lambda r: r.score)
        return stamp, int(best.class_id), float(best.score)
    values = status_values(find_status(msg, T.PREDICTION_STATUS))
    return stamp, int(values['class_id']), float(values['score'])


def allocation_msg(inf, modalities, header):
    """Layers per modality (count, which ones, present) plus the budget, as a DiagnosticArray."""
    status = []
    for m in modalities:
        kept = [int(i) for i in inf.keep[m].nonzero()[0]]
        status.append(diag_status(m, f'{len(kept)}/{len(inf.keep[m])} layers',
                                  {'layers': len(kept), 'kept': ','.join(map(str, kept)),
                                   'present': str(m in inf.present).lower()}))
    status.append(diag_status(T.BUDGET_STATUS,
                              f'{inf.budget_fraction:g} of the {inf.budget_unit}',
                              {'fraction': f'{inf.budget_fraction:g}', 'unit': inf.budget_unit,
                               'spent': f'{inf.budget_spent:.6f}'}))
    return _array(header, status)


def read_allocation(msg) -> Dict[str, Any]:
    """Allocation message -> ``{'stamp_ns', 'layers': {m: n}, 'kept': {m: [i]},
    'present': {m: bool}, 'fraction', 'unit', 'spent'}``."""
    out: Dict[str, Any] = {'stamp_ns': stamp_to_ns(msg.header.stamp), 'layers': {}, 'kept': {},
                           'present': {}}
    for status in msg.status:
        values = status_values(status)
        if status.name == T.BUDGET_STATUS:
            out.update(fraction=float(values['fraction']), unit=values['unit'],
                       spent=float(values['spent']))
        elif 'layers' in values:
            out['layers'][status.name] = int(values['layers'])
            out['kept'][status.name] = [int(i) for i in values['kept'].split(',') if i]
            out['present'][status.name] = values['present'] == 'true'
    return out


def quality_msg(inf, header):
    """Quality estimate per present modality."""
    return _array(header, [diag_status(m, f'{q:.3f}', {'quality': f'{q:.6f}'})
                           for m, q in inf.quality.items()])


def read_quality(msg) -> Dict[str, float]:
    return {s.name: float(status_values(s)['quality']) for s in msg.status}


def inference_msg(inf, header, *, latency_ms: float, processing_ms: float, dropped: int):
    """Cost and timings of one frame."""
    values = {'gflops': f'{inf.gflops:.6f}', 'latency_ms': f'{latency_ms:.3f}',
              'processing_ms': f'{processing_ms:.3f}', 'model_ms': f'{inf.model_ms:.3f}',
              'policy_ms': f'{inf.policy_ms:.3f}', 'preprocess_ms': f'{inf.preprocess_ms:.3f}',
              'dropped': dropped, 'present': ','.join(inf.present)}
    return _array(header, [diag_status(T.INFERENCE_STATUS,
                                       f'{inf.gflops:.4f} GFLOPs in {processing_ms:.1f} ms',
                                       values)])


def read_inference(msg) -> Dict[str, Any]:
    """Inference message -> ``{'stamp_ns', 'gflops', 'latency_ms', ..., 'dropped', 'present'}``."""
    values = status_values(find_status(msg, T.INFERENCE_STATUS))
    out: Dict[str, Any] = {'stamp_ns': stamp_to_ns(msg.header.stamp)}
    for key in ('gflops', 'latency_ms', 'processing_ms', 'model_ms', 'policy_ms', 'preprocess_ms'):
        out[key] = float(values[key])
    out['dropped'] = int(values['dropped'])
    out['present'] = tuple(m for m in values.get('present', '').split(',') if m)
    return out


def budget_msg(fraction: float, flavour: Flavour = ROS):
    """``std_msgs/Float32`` carrying a budget fraction."""
    return flavour.cls(T.FLOAT32_TYPE)(data=float(fraction))


def read_budget(msg) -> float:
    """Budget message -> the fraction, rounded to what float32 can tell apart (0.3 arrives as
    0.30000001); range checks are the budget's own (:func:`admn_ros.quality_estimators.budget.
    budget_problem`)."""
    return round(float(msg.data), 6)
