"""The fusion node's output contract: its topic names, the budget QoS, and the encoders and
readers of every message it publishes (prediction, allocation, quality, inference).

Nodes that listen to admn_fusion (the evaluator, budget_manager, benchmarks) import this module,
never the node. Nothing here imports rclpy or message packages at module load: each function
imports the message type it builds, so the core and the docs can use the names without ROS.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Tuple

from admn_ros import messages as M

PREDICTION = 'admn/prediction'
ALLOCATION = 'admn/allocation'
QUALITY = 'admn/quality'
INFERENCE = 'admn/inference'
BUDGET = 'budget'

PREDICTION_STATUS = 'prediction'
INFERENCE_STATUS = 'inference'
BUDGET_STATUS = 'budget'
TOP_K = 5                     # classes listed in a prediction
BUDGET_RANGE = (0.01, 1.0)    # budget fractions the node accepts


@functools.lru_cache(maxsize=None)
def classification_type():
    """``vision_msgs.msg.Classification`` when it imports, else None (the fallback is used).

    Cached: a failed import is retried on every call, and one costs ~0.1 ms per prediction."""
    try:
        from vision_msgs.msg import Classification
    except ImportError:
        return None
    return Classification


def prediction_type():
    """The message class ``admn/prediction`` carries here."""
    cls = classification_type()
    if cls is not None:
        return cls
    from diagnostic_msgs.msg import DiagnosticArray
    return DiagnosticArray


def prediction_msg(inf, header):
    """An :class:`~admn_ros.fusion_engine.Inference` -> the prediction message."""
    import numpy as np
    order = np.argsort(-inf.probs)[:TOP_K]
    cls = classification_type()
    if cls is not None:
        from vision_msgs.msg import ObjectHypothesis
        return cls(header=header, results=[ObjectHypothesis(class_id=str(int(i)),
                                                            score=float(inf.probs[i]))
                                           for i in order])
    from diagnostic_msgs.msg import DiagnosticArray
    top = ','.join(f'{int(i)}:{float(inf.probs[i]):.4f}' for i in order)
    values = {'class_id': inf.class_id, 'class_name': inf.class_name,
              'score': f'{inf.score:.6f}', 'top': top}
    return DiagnosticArray(header=header,
                           status=[M.diag_status(PREDICTION_STATUS, inf.class_name, values)])


def read_prediction(msg) -> Tuple[int, int, float]:
    """Prediction message (either type) -> (stamp_ns, class_id, score)."""
    stamp = M.stamp_to_ns(msg.header.stamp)
    if hasattr(msg, 'results'):  # vision_msgs/Classification
        if not msg.results:
            raise ValueError('Classification has no results')
        best = max(msg.results, key=lambda r: r.score)
        return stamp, int(best.class_id), float(best.score)
    values = M.status_values(M.find_status(msg, PREDICTION_STATUS))
    return stamp, int(values['class_id']), float(values['score'])


def allocation_msg(inf, modalities, header):
    """Layers per modality (count, which ones, present) plus the budget, as a DiagnosticArray."""
    from diagnostic_msgs.msg import DiagnosticArray
    status = []
    for m in modalities:
        kept = [int(i) for i in inf.keep[m].nonzero()[0]]
        status.append(M.diag_status(m, f'{len(kept)}/{len(inf.keep[m])} layers',
                              {'layers': len(kept), 'kept': ','.join(map(str, kept)),
                               'present': str(m in inf.present).lower()}))
    status.append(M.diag_status(BUDGET_STATUS, f'{inf.budget_fraction:g} of the {inf.budget_unit}',
                          {'fraction': f'{inf.budget_fraction:g}', 'unit': inf.budget_unit,
                           'spent': f'{inf.budget_spent:.6f}'}))
    return DiagnosticArray(header=header, status=status)


def read_allocation(msg) -> Dict[str, Any]:
    """Allocation message -> ``{'stamp_ns', 'layers': {m: n}, 'kept': {m: [i]},
    'present': {m: bool}, 'fraction', 'unit', 'spent'}``."""
    out: Dict[str, Any] = {'stamp_ns': M.stamp_to_ns(msg.header.stamp), 'layers': {}, 'kept': {},
                           'present': {}}
    for status in msg.status:
        values = M.status_values(status)
        if status.name == BUDGET_STATUS:
            out.update(fraction=float(values['fraction']), unit=values['unit'],
                       spent=float(values['spent']))
        elif 'layers' in values:
            out['layers'][status.name] = int(values['layers'])
            out['kept'][status.name] = [int(i) for i in values['kept'].split(',') if i]
            out['present'][status.name] = values['present'] == 'true'
    return out


def quality_msg(inf, header):
    from diagnostic_msgs.msg import DiagnosticArray
    return DiagnosticArray(header=header, status=[
        M.diag_status(m, f'{q:.3f}', {'quality': f'{q:.6f}'}) for m, q in inf.quality.items()])


def read_quality(msg) -> Dict[str, float]:
    return {s.name: float(M.status_values(s)['quality']) for s in msg.status}


def inference_msg(inf, header, *, latency_ms: float, processing_ms: float, dropped: int):
    from diagnostic_msgs.msg import DiagnosticArray
    values = {'gflops': f'{inf.gflops:.6f}', 'latency_ms': f'{latency_ms:.3f}',
              'processing_ms': f'{processing_ms:.3f}', 'model_ms': f'{inf.model_ms:.3f}',
              'policy_ms': f'{inf.policy_ms:.3f}', 'preprocess_ms': f'{inf.preprocess_ms:.3f}',
              'dropped': dropped, 'present': ','.join(inf.present)}
    return DiagnosticArray(header=header, status=[
        M.diag_status(INFERENCE_STATUS, f'{inf.gflops:.4f} GFLOPs in {processing_ms:.1f} ms', values)])


def read_inference(msg) -> Dict[str, Any]:
    """Inference message -> ``{'stamp_ns', 'gflops', 'latency_ms', ..., 'dropped', 'present'}``."""
    values = M.status_values(M.find_status(msg, INFERENCE_STATUS))
    out: Dict[str, Any] = {'stamp_ns': M.stamp_to_ns(msg.header.stamp)}
    for key in ('gflops', 'latency_ms', 'processing_ms', 'model_ms', 'policy_ms', 'preprocess_ms'):
        out[key] = float(values[key])
    out['dropped'] = int(values['dropped'])
    out['present'] = tuple(m for m in values.get('present', '').split(',') if m)
    return out


def budget_qos():
    """The budget topic: reliable, TRANSIENT_LOCAL, depth 1 (publisher and subscriber alike)."""
    return M.latched_qos()
