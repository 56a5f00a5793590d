"""admn_fusion: the adaptive-depth multimodal classifier as a lifecycle node.

Lifecycle (docs/nodes.md): **configure** loads the checkpoint (``model_path``; when empty, the
trained default of ``dataset`` from ``admn train defaults``) on ``device`` and builds the shared
preprocessing, the allocation ``policy`` and the cost model; **activate** subscribes the sensor
topics and starts the worker; **deactivate** stops both and frees the model (and cached CUDA
memory), which the next activate loads again; **cleanup** drops everything. Parameters that need a
reload (model_path, dataset, device, policy, modalities, seed, audio_input, input QoS) apply at
the next configure/activate. With ``autostart`` (default, as pip-only installs have no lifecycle
manager) the node configures and activates itself, and a failed configure ends the process with
the reason. ``~/enable`` (std_srvs/SetBool) pauses and resumes inference without a transition.

Inputs (node-relative, sensor-data QoS with ``input_reliability`` / ``input_depth``):
``camera/color/image_raw`` (rgb8/bgr8/rgba8/bgra8/mono8), ``camera/depth/image`` (32FC1 metres or
16UC1 mm), ``audio/pcm`` (16SC1/32FC1 Image, one row per channel, stamp = first sample) or, with
``audio_input: audio_common``, ``audio/audio_stamped`` (AudioDataStamped, S16LE mono), and
``budget`` (std_msgs/Float32, reliable TRANSIENT_LOCAL depth 1: a late joiner gets the current
value). Sets are matched with approximate time sync (``sync_queue_size``, ``sync_slop_s``); a
modality silent for ``modality_timeout_s`` is dropped from the sync and from ``present``, so its
budget goes to the others, until it speaks again (:class:`admn_ros.fusion_engine.ModalitySync`).
Intake never waits for the model: sets go through a queue of ``frame_queue_depth`` (1 = keep only
the latest; more for replays that must score every frame) to a worker thread.

Outputs (reliable, depth 10), each stamped with the set's stamp (its first modality in rgb, depth,
audio order, i.e. the RGB frame when RGB is live) and that input's frame_id:

* ``admn/prediction``: ``vision_msgs/Classification`` (results sorted by score, ``class_id`` = class
  index as a string) when vision_msgs imports, else a ``DiagnosticArray`` with one status named
  ``prediction`` (message = class name; values ``class_id``, ``class_name``, ``score``, ``top``) -
  the same layout as the ground-truth label topic. :func:`read_prediction` reads both.
* ``admn/allocation``: ``DiagnosticArray``, one status per model modality (values ``layers``,
  ``kept`` = comma-separated block indices, ``present``) and one ``budget`` status (``fraction``,
  ``unit``, ``spent``).
* ``admn/quality``: ``DiagnosticArray``, one status per present modality (value ``quality`` in
  [0, 1], from :func:`admn_ros.quality_estimators.estimators.modality_quality`).
* ``admn/inference``: ``DiagnosticArray`` with one ``inference`` status: ``gflops`` (executed,
  controller included), ``latency_ms`` (node-clock publish time minus source stamp),
  ``processing_ms`` (set complete to publish), ``model_ms``, ``policy_ms``, ``preprocess_ms``,
  ``dropped`` (frames replaced before the model saw them, so far).
* ``/diagnostics``: lifecycle, inputs (rate, rejects, quiet), sync, inference (latency
  percentiles, drops) and allocation.

Budget: ``budget`` (fraction of the full model in [0.01, 1]) and ``budget_unit`` (layers | flops) are
validated (descriptor range plus a set callback) and apply from the next frame; the ``budget``
topic sets the same parameter. Bad input (wrong encoding or size, garbage values) is logged,
counted per modality and dropped; it never stops the node.
"""
from __future__ import annotations

import functools
import math
import threading
import time
from typing import Any, Dict, List, Optional

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter

from admn_ros import messages as M
from admn_ros.fusion_contract import (ALLOCATION, BUDGET, BUDGET_RANGE, INFERENCE, PREDICTION, QUALITY,
                                      allocation_msg, budget_qos, inference_msg, prediction_msg,
                                      prediction_type, quality_msg)
from admn_ros.fusion_engine import (DECODERS, EngineConfig, FrameQueue, FusionEngine, InputLimits,
                                    ModalitySync, Percentiles, RejectedInput, RollingAudio, Worker)
from admn_ros.node_utils import (ERROR, OK, STALE, WARN, Diagnostics, RateMonitor, declare,
                                 exit_without_teardown, param, run_node, set_result)
from admn_ros.datasets.rosmsg_codec import header_stamp_ns
from admn_ros.datasets.sample import MODALITIES
from admn_ros.quality_estimators.budget import UNITS
from admn_ros.quality_estimators.policies import POLICY_SPECS, policy_spec_error

NODE_NAME = 'admn_fusion'
AUDIO_INPUTS = ('image', 'audio_common')
FAILURE_MEMORY_S = 10.0  # /diagnostics reports ERROR this long after a failed frame
# Parameters read only when (re)configuring or activating.
RELOAD_PARAMETERS = ('model_path', 'dataset', 'device', 'policy', 'modalities', 'seed',
                     'audio_input', 'input_reliability', 'input_depth', 'publish_quality')


def _guarded(transition):
    """Log an unexpected exception in a transition (rclpy would swallow it) and report ERROR."""
    @functools.wraps(transition)
    def wrapper(self, state):
        try:
            return transition(self, state)
        except Exception as exc:
            import traceback
            self.last_error = f'{type(exc).__name__}: {exc}'
            self.get_logger().error(f'{transition.__name__} failed: {self.last_error}\n'
                                    f'{traceback.format_exc()}')
            return TransitionCallbackReturn.ERROR
    return wrapper


# --------------------------------------------------------------------------- node
class AdmnFusion(LifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        declare(self, 'model_path', '', "checkpoint (stage 1 or controller); '' = the trained "
                'default of `dataset` (admn train defaults)')
        declare(self, 'dataset', 'synthetic', 'dataset whose trained default is used when '
                'model_path is empty')
        declare(self, 'device', 'cpu', 'torch device: cpu, cuda, cuda:N or auto')
        declare(self, 'policy', 'admn', 'layer allocation policy', choices=POLICY_SPECS)
        declare(self, 'modalities', [], 'modalities to use (empty = every one the model has)',
                array_type='string')
        declare(self, 'seed', 0, 'seed of the random policy', value_range=(0, 2**31 - 1))
        declare(self, 'budget', 0.5, 'compute budget: fraction of the full model in [0.01, 1]',
                value_range=BUDGET_RANGE)
        declare(self, 'budget_unit', 'layers', 'unit the budget counts', choices=UNITS)
        declare(self, 'sync_queue_size', 10, 'approximate-sync queue per input',
                value_range=(1, 1000))
        declare(self, 'sync_slop_s', 0.05, 'approximate-sync slop (s)', value_range=(1e-6, 10.0))
        declare(self, 'modality_timeout_s', 0.5,
                'a modality silent this long is dropped and its budget goes to the others (s); '
                'keep it above the slowest sensor period', value_range=(0.01, 3600.0))
        declare(self, 'frame_queue_depth', 1, 'synchronised sets waiting for the model: 1 keeps '
                'only the latest, more keeps every set up to that backlog', value_range=(1, 100000))
        declare(self, 'audio_gap_tolerance_s', 0.002, 'audio chunks whose stamps are this close '
                'to the previous chunk end are joined into one rolling clip',
                value_range=(0.0, 1.0))
        declare(self, 'audio_input', 'image', 'audio topic type', choices=AUDIO_INPUTS)
        declare(self, 'input_reliability', 2, 'input QoS: 0 system default, 1 reliable, '
                '2 best effort', value_range=(0, 2))
        declare(self, 'input_depth', 5, 'input queue depth (KEEP_LAST)', value_range=(1, 100000))
        declare(self, 'publish_quality', True, 'estimate and publish per-modality quality')
        self.autostart = declare(self, 'autostart', True, 'configure and activate on start-up '
                                 '(pip-only installs have no lifecycle manager)', read_only=True)
        # Start-up values bypass the set callback, so check them here.
        for name in ('policy', 'budget', 'budget_unit', 'audio_input', 'modalities'):
            value = self._modalities_param() if name == 'modalities' else param(self, name)
            reason = self._check(name, value)
            if reason:
                raise ValueError(reason)
        self.budget = self._make_budget()
        self.limits = InputLimits()

        self.engine: Optional[FusionEngine] = None
        self.sync: Optional[ModalitySync] = None
        self.audio: Optional[RollingAudio] = None
        self.queue: Optional[FrameQueue] = None
        self.worker: Optional[Worker] = None
        self.pubs: Dict[str, Any] = {}
        self.subs: List[Any] = []
        self.active = False
        self.enabled = True
        self.last_error = ''
        self._lock = threading.Lock()          # counters shared by intake and the worker
        self.rejected = {m: 0 for m in MODALITIES}
        self.rates = {m: RateMonitor(stale_after_s=5.0) for m in MODALITIES}
        self.last_reject = ''
        self.processed = 0
        self.failed = 0
        self.last_failure = -math.inf
        self.last_inference = None
        self.latency = Percentiles()
        self.model_time = Percentiles()
        self.budget_rejected = 0
        self._last_set = time.monotonic()

        from std_msgs.msg import Float32
        from std_srvs.srv import SetBool
        self.create_subscription(Float32, BUDGET, self._on_budget, budget_qos(),
                                 event_callbacks=M.subscription_events(self, BUDGET))
        self.create_service(SetBool, '~/enable', self._on_enable)
        self.add_on_set_parameters_callback(self._validate)
        self.add_post_set_parameters_callback(self._after_set)
        self.liveness_timer = self.create_timer(0.05, self._check_liveness)
        self.diagnostics = Diagnostics(self)
        for task in ('lifecycle', 'inputs', 'sync', 'inference', 'allocation'):
            self.diagnostics.add(task, getattr(self, f'_diag_{task}'))
        if self.autostart:
            self.start()

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _check(name: str, value) -> str:
        """Why ``value`` is unacceptable for ``name`` ('' when fine); ranges rclpy checks itself."""
        if name == 'budget' and not BUDGET_RANGE[0] <= value <= BUDGET_RANGE[1]:
            return 'budget must be a fraction of the full model in [0.01, 1]'
        if name == 'budget_unit' and value not in UNITS:
            return f'budget_unit must be one of {UNITS}, got {value!r}'
        if name == 'audio_input' and value not in AUDIO_INPUTS:
            return f'audio_input must be one of {AUDIO_INPUTS}, got {value!r}'
        if name == 'policy':
            return policy_spec_error(value)
        if name == 'modalities':
            unknown = set(value or []) - set(MODALITIES)
            if unknown:
                return f'unknown modalities {sorted(unknown)}; known: {MODALITIES}'
        return ''

    def _validate(self, params):
        for p in params:
            reason = self._check(p.name, p.value)
            if reason:
                return set_result(False, reason)
        return set_result(True)

    def _make_budget(self):
        from admn_ros.quality_estimators.budget import Budget
        return Budget(float(param(self, 'budget')), str(param(self, 'budget_unit')))

    def _after_set(self, params) -> None:
        names = {p.name for p in params}
        if names & {'budget', 'budget_unit'}:
            self.budget = self._make_budget()  # one reference swap: the worker sees old or new
        sync = self.sync
        if sync is not None and names & {'sync_queue_size', 'sync_slop_s', 'modality_timeout_s'}:
            sync.configure(queue_size=param(self, 'sync_queue_size'),
                           slop_ns=int(round(param(self, 'sync_slop_s') * 1e9)),
                           timeout_s=float(param(self, 'modality_timeout_s')))
        if self.queue is not None and 'frame_queue_depth' in names:
            self.queue.resize(param(self, 'frame_queue_depth'))
        if self.audio is not None and 'audio_gap_tolerance_s' in names:
            self.audio.gap_tolerance_ns = int(round(param(self, 'audio_gap_tolerance_s') * 1e9))
        later = sorted(names & set(RELOAD_PARAMETERS))
        if later and self.engine is not None:
            self.get_logger().info(f'{later} apply at the next configure/activate')

    def _on_budget(self, msg) -> None:
        value = float(msg.data)
        if not math.isfinite(value) or not BUDGET_RANGE[0] <= value <= BUDGET_RANGE[1]:
            self.budget_rejected += 1
            self.get_logger().warning(f'ignoring budget {value!r} from topic {BUDGET}: '
                                      'need a fraction in [0.01, 1]')
            return
        value = round(value, 6)  # float32 on the wire: 0.3 arrives as 0.30000001
        if value == param(self, 'budget'):
            return
        result = self.set_parameters([Parameter('budget', Parameter.Type.DOUBLE, value)])[0]
        if not result.successful:
            self.budget_rejected += 1
            self.get_logger().warning(f'budget {value} from topic refused: {result.reason}')

    def _on_enable(self, request, response):
        self.enabled = bool(request.data)
        if not self.enabled and self.queue is not None:
            self.queue.clear()
        response.success = True
        response.message = 'enabled' if self.enabled else 'paused'
        self.get_logger().info(f'inference {response.message}')
        return response

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Configure and activate (autostart); ValueError with the reason when either fails."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ValueError(f'configure failed: {self.last_error}')
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ValueError(f'activate failed: {self.last_error}')

    def state_label(self) -> str:
        return str(self._state_machine.current_state[1])

    def _engine_config(self) -> EngineConfig:
        return EngineConfig(model_path=str(param(self, 'model_path')),
                            dataset=str(param(self, 'dataset')), device=str(param(self, 'device')),
                            policy=str(param(self, 'policy')), seed=int(param(self, 'seed')),
                            modalities=tuple(self._modalities_param()),
                            quality=bool(param(self, 'publish_quality')))

    def _modalities_param(self) -> List[str]:
        from rclpy.exceptions import ParameterUninitializedException
        try:  # an empty typed array that was never set reads as uninitialised
            return list(param(self, 'modalities'))
        except ParameterUninitializedException:
            return []

    def _load(self, cfg: EngineConfig) -> bool:
        from admn_ros.fusion.checkpoint import CheckpointError
        try:
            self.engine = FusionEngine(cfg)
        except (FileNotFoundError, ValueError, CheckpointError) as exc:
            self.last_error = str(exc)
            self.get_logger().error(f'cannot load the model: {exc}')
            self.engine = None
            return False
        e = self.engine
        self.get_logger().info(f'loaded {e.path} on {e.device}: modalities {e.modalities}, depth '
                               f'{e.depth}, {len(e.class_names)} classes, policy {cfg.policy}')
        return True

    def _load_pipeline(self) -> bool:
        """Load the model with the current parameters and build the intake around it (the
        queue, the synchroniser over its modalities, the audio window of its clip length)."""
        if not self._load(self._engine_config()):
            return False
        self.queue = FrameQueue(param(self, 'frame_queue_depth'))
        self.sync = ModalitySync(self.engine.modalities, self.queue.put,
                                 queue_size=param(self, 'sync_queue_size'),
                                 slop_ns=int(round(param(self, 'sync_slop_s') * 1e9)),
                                 timeout_s=float(param(self, 'modality_timeout_s')))
        self.audio = RollingAudio(self.engine.clip_samples,
                                  int(round(param(self, 'audio_gap_tolerance_s') * 1e9)))
        return True

    @_guarded
    def on_configure(self, state) -> TransitionCallbackReturn:
        from diagnostic_msgs.msg import DiagnosticArray
        if not self._load_pipeline():
            return TransitionCallbackReturn.FAILURE
        qos = M.output_qos()
        self.pubs = {
            'prediction': self.create_lifecycle_publisher(prediction_type(), PREDICTION, qos),
            'allocation': self.create_lifecycle_publisher(DiagnosticArray, ALLOCATION, qos),
            'quality': self.create_lifecycle_publisher(DiagnosticArray, QUALITY, qos),
            'inference': self.create_lifecycle_publisher(DiagnosticArray, INFERENCE, qos),
        }
        return TransitionCallbackReturn.SUCCESS

    @_guarded
    def on_activate(self, state) -> TransitionCallbackReturn:
        # Freed by deactivate: reload, so model, policy, device, modalities... changed meanwhile
        # take effect now.
        if self.engine is None and not self._load_pipeline():
            return TransitionCallbackReturn.FAILURE
        audio_input = str(param(self, 'audio_input'))
        if audio_input == 'audio_common' and not M.audio_common_available():
            self.last_error = 'audio_input audio_common needs audio_common_msgs, not built here'
            self.get_logger().error(self.last_error)
            return TransitionCallbackReturn.FAILURE
        self.sync.reset()
        self.audio.clear()
        self.queue.clear()
        self.queue.reopen()
        self.worker = Worker(self.queue, self._process, self._on_worker_error).start()
        self._subscribe(audio_input)
        self.active = True
        self._last_set = time.monotonic()
        return super().on_activate(state)

    def _subscribe(self, audio_input: str) -> None:
        from sensor_msgs.msg import Image
        qos = M.sensor_qos(param(self, 'input_reliability'), param(self, 'input_depth'))
        for m in self.engine.modalities:
            msg_type, topic = Image, M.SENSOR_TOPICS[m]
            if m == 'audio' and audio_input == 'audio_common':
                from audio_common_msgs.msg import AudioDataStamped
                msg_type, topic = AudioDataStamped, M.AUDIO_STAMPED
            self.subs.append(self.create_subscription(
                msg_type, topic, lambda msg, m=m: self._on_input(m, msg), qos,
                event_callbacks=M.subscription_events(self, topic)))

    def _stop_processing(self) -> None:
        self.active = False
        for sub in self.subs:
            self.destroy_subscription(sub)
        self.subs = []
        if self.worker is not None:
            if not self.worker.stop(timeout=10.0):
                self.get_logger().warning('worker still busy after 10 s')
            self.worker = None
        if self.queue is not None:
            self.queue.clear()

    @_guarded
    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_processing()
        if self.engine is not None:
            self.engine.release()
            self.engine = None
        return super().on_deactivate(state)

    def _teardown(self) -> None:
        """Back to unconfigured: no processing, no publishers, no model."""
        self._stop_processing()
        for pub in self.pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self.pubs = {}
        if self.engine is not None:
            self.engine.release()
        self.engine = self.sync = self.audio = self.queue = None

    @_guarded
    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self._teardown()  # unconfigured afterwards: a new configure starts from nothing
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        if hasattr(self, 'subs'):
            self._stop_processing()
        super().destroy_node()

    # ------------------------------------------------------------------ intake
    def _on_input(self, modality: str, msg) -> None:
        if not self.active or not self.enabled:
            return
        self.rates[modality].tick()   # also counts what was received
        try:
            stamp = header_stamp_ns(msg)
            if stamp < 0:  # int32 seconds: possible on the wire, meaningless as a capture time
                raise RejectedInput(f'negative header stamp {stamp} ns')
            array = DECODERS[modality](msg, self.limits)
            if modality == 'audio':
                array = self.audio.push(stamp, array)
            self.sync.add(modality, stamp, str(msg.header.frame_id), array)
        except RejectedInput as exc:
            self._reject(modality, str(exc))
        except Exception as exc:  # never let one message take the node down
            self._reject(modality, f'{type(exc).__name__}: {exc}')

    def _reject(self, modality: str, reason: str) -> None:
        with self._lock:
            self.rejected[modality] += 1
            self.last_reject = f'{modality}: {reason}'
        self.get_logger().warning(f'rejected {modality} input: {reason}',
                                  throttle_duration_sec=1.0)

    def _check_liveness(self) -> None:
        if self.active and self.sync is not None:
            self.sync.check()

    # ------------------------------------------------------------------ worker
    def _process(self, frame) -> None:
        engine = self.engine
        if engine is None or not self.enabled:
            return
        self._last_set = time.monotonic()
        inf = engine.infer(frame, self.budget, with_quality=False, account=False)
        header = M.header(frame.stamp_ns, frame.frame_id)
        prediction = prediction_msg(inf, header)
        # Latency ends at the prediction's publish: read the clocks once the message is built.
        latency_ms = (self.get_clock().now().nanoseconds - frame.stamp_ns) / 1e6
        processing_ms = (time.monotonic() - frame.ready_mono) * 1e3
        pubs = self.pubs
        pubs['prediction'].publish(prediction)
        # Everything else is bookkeeping the prediction does not wait for.
        engine.account(inf)
        pubs['allocation'].publish(allocation_msg(inf, engine.model_modalities, header))
        if engine.cfg.quality:  # after the prediction: the estimates are not on its critical path
            inf.quality.update(engine.estimate_quality(frame))
            pubs['quality'].publish(quality_msg(inf, header))
        pubs['inference'].publish(inference_msg(inf, header, latency_ms=latency_ms,
                                                processing_ms=processing_ms,
                                                dropped=self.queue.dropped))
        with self._lock:
            self.processed += 1
            self.last_inference = inf
        self.latency.add(latency_ms)
        self.model_time.add(inf.model_ms)

    def _on_worker_error(self, frame, exc: Exception) -> None:
        if isinstance(exc, RejectedInput):
            modality = next(iter(frame.data), 'rgb')
            self._reject(modality, str(exc))
            return
        with self._lock:
            self.failed += 1
            self.last_failure = time.monotonic()
        self.get_logger().error(f'inference failed on the set stamped {frame.stamp_ns}: '
                                f'{type(exc).__name__}: {exc}', throttle_duration_sec=1.0)

    # ------------------------------------------------------------------ diagnostics
    def _diag_lifecycle(self):
        state = self.state_label()
        values = {'state': state, 'enabled': self.enabled, 'policy': param(self, 'policy'),
                  'device': param(self, 'device')}
        if self.engine is not None:
            values['model'] = self.engine.path
        if self.last_error:
            values['last_error'] = self.last_error
        level = OK if state == 'active' and self.enabled else WARN
        return level, state if self.enabled else f'{state}, paused', values

    def _diag_inputs(self):
        modalities = self.engine.modalities if self.engine else ()
        values: Dict[str, Any] = {}
        ages = self.sync.last_seen_age() if self.sync else {}
        quiet = self.sync.quiet() if self.sync else ()
        with self._lock:
            for m in modalities:
                age = ages.get(m)
                values[f'{m} received'] = self.rates[m].count
                values[f'{m} rejected'] = self.rejected[m]
                values[f'{m} rate_hz'] = f'{self.rates[m].rate_hz():.2f}'
                values[f'{m} age_s'] = 'never' if age is None else f'{age:.2f}'
            if self.last_reject:
                values['last reject'] = self.last_reject
            rejected = sum(self.rejected.values())
        if not self.active:
            return OK, 'inactive', values
        if quiet and len(quiet) == len(modalities):
            return STALE, 'no input', values
        if quiet:
            return WARN, f'quiet: {", ".join(quiet)} (budget goes to the others)', values
        if rejected:
            return WARN, f'{rejected} inputs rejected', values
        return OK, 'inputs ok', values

    def _diag_sync(self):
        if self.sync is None:
            return OK, 'not configured', {}
        idle = time.monotonic() - self._last_set
        values = {'sets': self.sync.frames, 'live': ','.join(self.sync.live),
                  'pending': self.sync.pending(), 'evicted': self.sync.evicted(),
                  'seconds_since_last_set': f'{idle:.1f}',
                  'slop_s': param(self, 'sync_slop_s')}
        if self.active and idle > 5.0 and any(r.count for r in self.rates.values()):
            return WARN, f'nothing synchronised for {idle:.0f} s (clocks or slop?)', values
        return OK, 'sync ok', values

    def _diag_inference(self):
        p50, p95 = self.latency.get(50, 95)
        (m50,) = self.model_time.get(50)
        # `is not None`: the queue has __len__, so an empty one is falsy and would read as 0 drops.
        dropped = self.queue.dropped if self.queue is not None else 0
        values = {'processed': self.processed, 'dropped': dropped, 'failed': self.failed,
                  'latency_ms_p50': f'{p50:.2f}', 'latency_ms_p95': f'{p95:.2f}',
                  'model_ms_p50': f'{m50:.2f}'}
        if time.monotonic() - self.last_failure < FAILURE_MEMORY_S:
            return ERROR, f'{self.failed} frames failed, one in the last {FAILURE_MEMORY_S:g} s', values
        if dropped:
            return WARN, f'{dropped} stale frames dropped (model slower than input)', values
        return OK, f'{self.processed} frames', values

    def _diag_allocation(self):
        b = self.budget
        values: Dict[str, Any] = {'budget': f'{b.fraction:g}', 'unit': b.unit,
                                  'rejected budget messages': self.budget_rejected}
        inf = self.last_inference
        if inf is not None:
            for m, n in inf.layers.items():
                values[f'{m} layers'] = n
            values['spent'] = f'{inf.budget_spent:.3f}'
            values['present'] = ','.join(inf.present)
        return OK, f'budget {b.fraction:g} ({b.unit})', values


def main(args=None) -> int:
    return run_node(AdmnFusion, args)


if __name__ == '__main__':   # how bringup starts nodes (python -m); console scripts use main()
    exit_without_teardown(main())
