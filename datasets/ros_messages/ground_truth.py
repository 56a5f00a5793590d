"""Ground truth on the wire: the class label and the corruption applied, as DiagnosticArrays.

One writer for live nodes and bags alike (``flavour``), stamped like the sample they describe:

* label (``ground_truth/label``): one status named ``label``, level OK, message = class name,
  values ``class_id`` and ``class_name``;
* corruption (``ground_truth/corruption``): one status per modality (name = modality), level OK
  when clean and WARN when corrupted (so a monitor shows which sensor is degraded), message
  ``clean`` or ``<type> <severity>``, values ``type`` and ``severity`` (``repr`` of the float:
  exact on reading back).
"""
from __future__ import annotations

from typing import Dict, Tuple

from admn_ros.datasets.ros_messages import topics as T
from admn_ros.datasets.ros_messages.diagnostic_array import (OK, WARN, diag_status, diagnostic_array,
                                                             status_values)
from admn_ros.datasets.ros_messages.flavours import ROS, Flavour


def label_msg(stamp_ns: int, class_id: int, class_name: str = '', flavour: Flavour = ROS):
    """Ground-truth class: a DiagnosticArray with one ``label`` status."""
    values = {T.LABEL_KEY_ID: int(class_id), T.LABEL_KEY_NAME: class_name}
    status = diag_status(T.LABEL_STATUS_NAME, class_name, values, OK, flavour)
    return diagnostic_array(stamp_ns, [status], flavour=flavour)


def read_label(msg) -> Tuple[int, str]:
    """DiagnosticArray -> (class_id, class_name); ValueError unless it carries exactly one
    label status with a class_id."""
    found = [s for s in msg.status if s.name == T.LABEL_STATUS_NAME]
    if not found:
        raise ValueError(f'DiagnosticArray has no {T.LABEL_STATUS_NAME!r} status')
    if len(found) > 1:
        raise ValueError(f'DiagnosticArray has {len(found)} {T.LABEL_STATUS_NAME!r} statuses; a '
                         'label message holds exactly one')
    values = status_values(found[0])
    if T.LABEL_KEY_ID not in values:
        raise ValueError(f'label status has no {T.LABEL_KEY_ID} value')
    return int(values[T.LABEL_KEY_ID]), values.get(T.LABEL_KEY_NAME, '')


def corruption_msg(stamp_ns: int, levels: Dict[str, Tuple[str, float]], flavour: Flavour = ROS):
    """Applied corruption per modality: ``{modality: (type, severity)}`` -> DiagnosticArray."""
    status = []
    for modality, (ctype, severity) in levels.items():
        severity = float(severity)
        clean = ctype == 'clean' or severity == 0.0
        values = {T.CORRUPTION_KEY_TYPE: ctype, T.CORRUPTION_KEY_SEVERITY: repr(severity)}
        status.append(diag_status(modality, 'clean' if clean else f'{ctype} {severity:.3f}',
                                  values, OK if clean else WARN, flavour))
    return diagnostic_array(stamp_ns, status, flavour=flavour)


def read_corruption(msg) -> Dict[str, Tuple[str, float]]:
    """DiagnosticArray -> ``{modality: (type, severity)}`` for the statuses it carries."""
    out = {}
    for status in msg.status:
        values = status_values(status)
        if T.CORRUPTION_KEY_TYPE in values and T.CORRUPTION_KEY_SEVERITY in values:
            out[status.name] = (values[T.CORRUPTION_KEY_TYPE],
                                float(values[T.CORRUPTION_KEY_SEVERITY]))
    return out

