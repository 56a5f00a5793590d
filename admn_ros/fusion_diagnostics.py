"""What ``admn_fusion`` reports on ``/diagnostics``: one status per task (lifecycle, inputs, sync,
inference, allocation), each a ``(level, message, values)`` read from the live node."""
from __future__ import annotations

import time
from typing import Any, Dict

from admn_ros.fusion.threads import thread_summary
from admn_ros.node_utils import ERROR, OK, STALE, WARN, Diagnostics, param

TASKS = ('lifecycle', 'inputs', 'sync', 'inference', 'allocation')
FAILURE_MEMORY_S = 10.0  # ERROR is reported this long after a failed frame
IDLE_WARN_S = 5.0        # inputs flow but nothing was synchronised this long: WARN


class FusionDiagnostics:
    """The fusion node's tasks; :meth:`register` adds them to a node's Diagnostics."""

    def __init__(self, node):
        self.node = node

    def register(self, diagnostics: Diagnostics) -> None:
        for task in TASKS:
            diagnostics.add(task, getattr(self, task))

    def lifecycle(self):
        node = self.node
        state = node.state_label()
        values = {'state': state, 'enabled': node.enabled, 'policy': param(node, 'policy'),
                  'device': param(node, 'device')}
        if node.engine is not None:
            values['model'] = node.engine.path
        if node.threads:   # what the thread rule (or the `threads` parameter) put in force
            values['threads'] = thread_summary(node.threads)
            values['torch intra-op threads'] = node.threads['torch_intra_op']
            values['torch inter-op threads'] = node.threads['torch_inter_op']
        if node.last_error:
            values['last_error'] = node.last_error
        level = OK if state == 'active' and node.enabled else WARN
        return level, state if node.enabled else f'{state}, paused', values

    def inputs(self):
        node = self.node
        intake = node.intake
        modalities = intake.modalities if intake is not None else ()
        ages = intake.sync.last_seen_age() if intake is not None else {}
        quiet = intake.sync.quiet() if intake is not None else ()
        counts = node.counters.snapshot()
        values: Dict[str, Any] = {}
        for m in modalities:
            age = ages.get(m)
            values[f'{m} received'] = counts[m]['received']
            values[f'{m} rejected'] = counts[m]['rejected']
            values[f'{m} lost'] = counts[m]['lost']
            values[f'{m} rate_hz'] = f'{counts[m]["rate_hz"]:.2f}'
            values[f'{m} age_s'] = 'never' if age is None else f'{age:.2f}'
        if node.counters.last_reject:
            values['last reject'] = node.counters.last_reject
        rejected = sum(c['rejected'] for c in counts.values())
        lost = sum(c['lost'] for c in counts.values())
        if not node.active:
            return OK, 'inactive', values
        if quiet and len(quiet) == len(modalities):
            return STALE, 'no input', values
        if quiet:
            return WARN, f'quiet: {", ".join(quiet)} (budget goes to the others)', values
        if rejected or lost:
            return WARN, ', '.join(part for part in (
                f'{rejected} inputs rejected' if rejected else '',
                f'{lost} lost before delivery' if lost else '') if part), values
        return OK, 'inputs ok', values

    def sync(self):
        node = self.node
        if node.intake is None:
            return OK, 'not configured', {}
        sync = node.intake.sync
        idle = time.monotonic() - node.last_set
        values = {'sets': sync.frames, 'live': ','.join(sync.live), 'pending': sync.pending(),
                  'evicted': sync.evicted(), 'seconds_since_last_set': f'{idle:.1f}',
                  'slop_s': param(node, 'sync_slop_s')}
        if node.active and idle > IDLE_WARN_S and node.counters.received_any():
            return WARN, f'nothing synchronised for {idle:.0f} s (clocks or slop?)', values
        return OK, 'sync ok', values

    def inference(self):
        node = self.node
        p50, p95 = node.latency.get(50, 95)
        (m50,) = node.model_time.get(50)
        dropped = node.dropped()
        values = {'processed': node.processed, 'dropped': dropped, 'failed': node.failed,
                  'latency_ms_p50': f'{p50:.2f}', 'latency_ms_p95': f'{p95:.2f}',
                  'model_ms_p50': f'{m50:.2f}'}
        if time.monotonic() - node.last_failure < FAILURE_MEMORY_S:
            return (ERROR, f'{node.failed} frames failed, one in the last {FAILURE_MEMORY_S:g} s',
                    values)
        if dropped:
            return WARN, f'{dropped} stale frames dropped (model slower than input)', values
        return OK, f'{node.processed} frames', values

    def allocation(self):
        node = self.node
        b = node.budget
        owner = node.budget_owner
        from_topic = owner.from_topic
        values: Dict[str, Any] = {'budget': f'{b.fraction:g}', 'unit': b.unit,
                                  'owner': 'budget topic' if from_topic else 'parameter (by hand)',
                                  'rejected budget messages': owner.rejected,
                                  'held budget messages': owner.held}
        inf = node.last_inference
        if inf is not None:
            for m, n in inf.layers.items():
                values[f'{m} layers'] = n
            values['spent'] = f'{inf.budget_spent:.3f}'
            values['present'] = ','.join(inf.present)
        deadline = node.deadline
        if deadline is not None:   # the in-process deadline rule: its model and its choice
            for k, v in deadline.state().items():
                values[f'deadline {k}'] = v
        message = f'budget {b.fraction:g} ({b.unit})'
        if not from_topic:
            message += ', set by hand: the budget topic is ignored'
        return OK, message, values
