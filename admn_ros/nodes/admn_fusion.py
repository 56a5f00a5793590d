"""admn_fusion: the adaptive-depth multimodal classifier as a lifecycle node.

Lifecycle (docs/nodes.md), the conventional pairing of ROS 2 managed nodes - resources with
configure/cleanup, data flow with activate/deactivate:

* **configure** loads the checkpoint (``model_path``; when empty, the trained default of
  ``dataset`` from ``admn train defaults``) on ``device`` with its preprocessing, the allocation
  ``policy`` and the cost model, and creates the publishers;
* **activate** subscribes the sensor topics and starts the worker; **deactivate** stops both
  (the model stays loaded, so activating again is instant);
* **cleanup** (and shutdown, and an error) frees the model and cached CUDA memory.

Model parameters (:data:`CONFIGURE_PARAMETERS`) therefore apply at the next configure, input
parameters (:data:`ACTIVATE_PARAMETERS`) at the next activate, and the rest at once. With
``autostart`` (default, as pip-only installs have no lifecycle manager) the node configures and
activates itself, and a failed configure ends the process with the reason. ``~/enable``
(std_srvs/SetBool) pauses and resumes inference without a transition.

Inputs (node-relative, sensor-data QoS with ``input_reliability`` / ``input_depth`` /
``input_durability``): one Image topic per model modality, or ``audio/audio_stamped`` with ``audio_input: audio_common``, decoded in
the format of the latched ``audio/audio_info`` (required; refused until it arrives), and the
``budget`` topic (latched Float32). Sets are matched with approximate time sync; a modality
silent for ``modality_timeout_s`` is dropped from the sync and its budget goes to the others until
it speaks again; intake never waits for the model (:mod:`admn_ros.runtime`). Bad input (a message
over ``max_message_bytes``, a wrong encoding or size, garbage values) is logged, counted per
modality and dropped before it reaches the model; it never stops the node. With best-effort
inputs DDS may never deliver a large message (one whose fragments do not all arrive); the
subscription's message-lost event counts those per modality too (``lost``).

Outputs (``admn/prediction``, ``admn/allocation``, ``admn/quality``, ``admn/inference``: one
``admn_msgs`` type each, :mod:`admn_ros.wire.fusion_outputs`; plus ``admn/classification``,
``vision_msgs/Classification``, where vision_msgs is installed; reliable, depth 100,
``output_durability``) carry the stamp and frame_id of the set they came from;
``/diagnostics`` reports lifecycle, inputs, sync, inference and allocation
(:mod:`admn_ros.fusion_diagnostics`).

Who owns the budget: ``budget`` (a fraction of the full model,
:data:`admn_ros.quality_estimators.budget.BUDGET_RANGE`) and ``budget_unit`` apply from the next
frame. While ``budget_from_topic`` is true (the default) the ``budget`` topic - budget_manager -
sets the ``budget`` parameter. A manual set (``ros2 param set /admn_fusion budget 0.3``, or any
parameter-service call) wins: it sets ``budget_from_topic`` false in the same atomic change and
logs that the topic is now ignored; budget messages are then counted (``held budget messages`` in
``/diagnostics``) but not applied. ``ros2 param set /admn_fusion budget_from_topic true`` hands
the budget back: the latest topic value applies at once. With ``deadline_ms`` > 0 the node also
runs budget_manager's deadline rule in-process (:mod:`admn_ros.quality_estimators.deadline`): each
frame's latency updates the per-budget latency model and the next frames run at the largest budget,
from ``deadline_min_budget`` up to ``budget``, predicted to keep the ``deadline_percentile`` of
latency under ``deadline_ms``.

Threads: at configure, torch's intra-op and inter-op threads and the OpenBLAS / OpenMP / OpenCV
pools are set by :mod:`admn_ros.fusion.threads` (``threads`` > 0 overrides the rule); the lifecycle
diagnostics say what is in force.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
import traceback
from typing import Any, Dict, List, NoReturn, Optional

from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import Image
from std_srvs.srv import SetBool

from admn_ros import wire
from admn_ros.datasets.sample import MODALITIES
from admn_ros.fusion.checkpoint import CheckpointError
from admn_ros.fusion.threads import apply_threads, choose_threads, thread_summary
from admn_ros.fusion.device import check_device
from admn_ros.fusion_budget import BudgetOwnership
from admn_ros.fusion_diagnostics import FusionDiagnostics
from admn_ros.node_utils import Diagnostics, declare, node_main, param, set_result
from admn_ros.quality_estimators.budget import BUDGET_RANGE, UNITS, Budget, budget_problem
from admn_ros.quality_estimators.deadline import DeadlineConfig, DeadlineController
from admn_ros.quality_estimators.policies import POLICY_SPECS, policy_spec_error
from admn_ros.runtime.engine import EngineConfig, FusionEngine
from admn_ros.runtime.intake import InputCounters, Intake
from admn_ros.runtime.percentiles import Percentiles
from admn_ros.runtime.worker import Worker

NODE_NAME = 'admn_fusion'
AUDIO_INPUTS = ('image', 'audio_common')
ALL_MODALITIES = 'all'
# Read when configuring (the model) and activating (the subscriptions); the rest apply at once.
CONFIGURE_PARAMETERS = ('model_path', 'dataset', 'device', 'policy', 'modalities', 'seed',
                        'publish_quality', 'layer_fault_rate', 'threads', 'output_durability')
DEADLINE_PARAMETERS = ('deadline_ms', 'deadline_percentile', 'deadline_min_budget')
ACTIVATE_PARAMETERS = ('audio_input', 'input_reliability', 'input_depth', 'input_durability')
# Parameters that retune the running intake.
INTAKE_PARAMETERS = ('sync_queue_size', 'sync_slop_s', 'modality_timeout_s', 'frame_queue_depth',
                     'audio_gap_tolerance_s', 'max_message_bytes')


def _guarded(transition):
    """Log an unexpected exception in a transition (rclpy would swallow it) and report ERROR."""
    @functools.wraps(transition)
    def wrapper(self, state):
        try:
            return transition(self, state)
        except Exception as exc:
            self.last_error = f'{type(exc).__name__}: {exc}'
            self.get_logger().error(f'{transition.__name__} failed: {self.last_error}\n'
                                    f'{traceback.format_exc()}')
            return TransitionCallbackReturn.ERROR
    return wrapper


class _Shutdown(Exception):
    """The context went away while a frame was in hand: drop it quietly."""


class AdmnFusion(LifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.autostart = self._declare_parameters()
        # Start-up values bypass the set callback, so check them here.
        for name in ('policy', 'budget', 'budget_unit', 'audio_input', 'modalities'):
            reason = self._check(name, self._modalities() if name == 'modalities'
                                 else param(self, name))
            if reason:
                raise ValueError(reason)
        self.deadline = self._make_deadline()
        self.budget = self._make_budget()
        self.threads: Dict[str, Any] = {}   # what apply_threads put in force (at configure)

        self.engine: Optional[FusionEngine] = None
        self.intake: Optional[Intake] = None
        self.worker: Optional[Worker] = None
        self.pubs: Dict[str, Any] = {}
        self.subs: List[Any] = []
        self.active = False
        self.enabled = True
        self.last_error = ''
        self._lock = threading.Lock()          # counters shared by intake and the worker
        self.counters = InputCounters()
        self.processed = 0
        self.failed = 0
        self.last_failure = -math.inf
        self.last_inference = None
        self.latency = Percentiles()
        self.model_time = Percentiles()
        self.last_set = time.monotonic()

        self.budget_owner = BudgetOwnership(self)   # the budget topic, and who wins over it
        self.create_service(SetBool, '~/enable', self._on_enable)
        self.add_on_set_parameters_callback(self._validate)
        self.add_post_set_parameters_callback(self._after_set)
        self.liveness_timer = self.create_timer(0.05, self._check_liveness)
        self.diagnostics = Diagnostics(self)
        FusionDiagnostics(self).register(self.diagnostics)
        self.context.on_shutdown(self._on_context_shutdown)
        if self.autostart:
            self.start()

    def _declare_parameters(self) -> bool:
        """Every parameter, with its descriptor; returns ``autostart``."""
        # The model (CONFIGURE_PARAMETERS)
        declare(self, 'model_path', '', "checkpoint (stage 1 or controller); '' = the trained "
                'default of `dataset` (admn train defaults)')
        declare(self, 'dataset', 'synthetic', 'dataset whose trained default is used when '
                'model_path is empty')
        declare(self, 'device', 'cpu', 'torch device: cpu, cuda, cuda:N or auto')
        declare(self, 'policy', 'admn', 'layer allocation policy', choices=POLICY_SPECS)
        declare(self, 'modalities', [ALL_MODALITIES], f"modalities to use: ['{ALL_MODALITIES}'] "
                '(every one the model has) or some of ' + ', '.join(MODALITIES))
        declare(self, 'seed', 0, 'seed of the random policy', value_range=(0, 2**31 - 1))
        declare(self, 'publish_quality', True, 'estimate and publish per-modality quality')
        declare(self, 'layer_fault_rate', 0.0, 'probability that each chosen encoder block fails '
                '(is skipped) at inference, as in a faulty or distributed execution',
                value_range=(0.0, 1.0))
        declare(self, 'threads', 0, 'torch intra-op threads; 0 = chosen from the cores this '
                'process may use and the model processes sharing them (ADMN_MODEL_PROCESSES)',
                value_range=(0, 1024))
        declare(self, 'output_durability', 'volatile', 'output QoS durability: transient_local '
                'keeps the last 100 outputs for subscribers that ask for them and match late',
                choices=wire.DURABILITY_NAMES)
        # The budget (applies from the next frame)
        lo, hi = BUDGET_RANGE
        declare(self, 'budget', 0.5, f'compute budget: fraction of the full model in [{lo:g}, '
                f'{hi:g}]', value_range=BUDGET_RANGE)
        declare(self, 'budget_unit', 'layers', 'unit the budget counts', choices=UNITS)
        declare(self, 'budget_from_topic', True, 'the budget topic (budget_manager) sets `budget`; '
                'a manual set of `budget` turns this off until it is set true again')
        declare(self, 'deadline_ms', 0.0, 'choose the budget in-process (up to `budget`) to keep '
                'deadline_percentile of frame latency under this (ms); 0 = off',
                value_range=(0.0, 1e6))
        declare(self, 'deadline_percentile', 95.0, 'percentile of frame latency deadline_ms bounds',
                value_range=(50.0, 99.9))
        declare(self, 'deadline_min_budget', 0.25, 'the lowest budget the deadline rule may choose',
                value_range=BUDGET_RANGE)
        # Intake (INTAKE_PARAMETERS apply at once; ACTIVATE_PARAMETERS at the next activate)
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
        declare(self, 'max_message_bytes', 32 * 2**20, 'sensor messages with a larger payload '
                'are rejected (and counted) before decoding', value_range=(1, 2**31 - 1))
        declare(self, 'audio_input', 'image', 'audio topic type', choices=AUDIO_INPUTS)
        declare(self, 'input_reliability', 2, 'input QoS: 0 system default, 1 reliable, '
                '2 best effort', value_range=(0, 2))
        declare(self, 'input_depth', 5, 'input queue depth (KEEP_LAST)', value_range=(1, 100000))
        declare(self, 'input_durability', 'volatile', 'input QoS durability: transient_local (with '
                'input_reliability 1) also gets what a transient local publisher (a replay) sent '
                'before the match',
                choices=wire.DURABILITY_NAMES)
        # Start-up
        return declare(self, 'autostart', True, 'configure and activate on start-up '
                       '(pip-only installs have no lifecycle manager)', read_only=True)

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _check(name: str, value) -> str:
        """Why ``value`` is unacceptable for ``name`` ('' when fine); ranges rclpy checks itself."""
        if name == 'budget':
            return budget_problem(value)
        if name == 'budget_unit' and value not in UNITS:
            return f'budget_unit must be one of {UNITS}, got {value!r}'
        if name == 'audio_input' and value not in AUDIO_INPUTS:
            return f'audio_input must be one of {AUDIO_INPUTS}, got {value!r}'
        if name == 'policy':
            return policy_spec_error(value)
        if name == 'device':   # its spelling now, not at the next activate (CUDA's presence then)
            try:
                check_device(value)
            except ValueError as exc:
                return str(exc)
        if name == 'modalities':
            value = list(value or [])
            if value != [ALL_MODALITIES] and (not value or set(value) - set(MODALITIES)):
                return (f"modalities must be ['{ALL_MODALITIES}'] or some of {MODALITIES}, "
                        f'got {value}')
        return ''

    def _validate(self, params):
        for p in params:
            reason = self._check(p.name, p.value)
            if reason:
                return set_result(False, reason)
        return set_result(True)

    def _make_budget(self) -> Budget:
        fraction = float(param(self, 'budget'))
        if self.deadline is not None:   # the deadline rule chooses, up to `budget`
            fraction = min(fraction, self.deadline.budget)
        return Budget(fraction, str(param(self, 'budget_unit')))

    def _make_deadline(self) -> Optional[DeadlineController]:
        deadline_ms = float(param(self, 'deadline_ms'))
        if deadline_ms <= 0:
            return None
        return DeadlineController(DeadlineConfig(
            deadline_ms=deadline_ms, percentile=float(param(self, 'deadline_percentile')),
            min_budget=float(param(self, 'deadline_min_budget')), max_budget=1.0))

    def _modalities(self) -> List[str]:
        try:  # a params file's `modalities: []` loads as unset
            value = list(param(self, 'modalities'))
        except ParameterUninitializedException:
            value = []
        return value or [ALL_MODALITIES]

    def _after_set(self, params) -> None:
        names = {p.name for p in params}
        if names & set(DEADLINE_PARAMETERS):
            self.deadline = self._make_deadline()
        if names & {'budget', 'budget_unit', *DEADLINE_PARAMETERS}:
            self.budget = self._make_budget()  # one reference swap: the worker sees old or new
        if 'budget_from_topic' in names:
            self.budget_owner.changed()
        intake = self.intake
        if intake is not None and names & set(INTAKE_PARAMETERS):
            intake.configure(**self._intake_settings(names))
        later = sorted(names & set(CONFIGURE_PARAMETERS + ACTIVATE_PARAMETERS))
        if later and self.engine is not None:
            self.get_logger().info(f'{later} apply at the next configure / activate')

    def _intake_settings(self, names=INTAKE_PARAMETERS) -> Dict[str, Any]:
        """Intake keyword arguments from the parameters in ``names``."""
        settings: Dict[str, Any] = {}
        if {'sync_queue_size', 'sync_slop_s', 'modality_timeout_s'} & set(names):
            settings.update(sync_queue_size=param(self, 'sync_queue_size'),
                            slop_ns=int(round(param(self, 'sync_slop_s') * 1e9)),
                            timeout_s=float(param(self, 'modality_timeout_s')))
        if 'frame_queue_depth' in names:
            settings['queue_depth'] = param(self, 'frame_queue_depth')
        if 'audio_gap_tolerance_s' in names:
            settings['audio_gap_tolerance_ns'] = int(round(param(self, 'audio_gap_tolerance_s')
                                                           * 1e9))
        if 'max_message_bytes' in names:
            settings['limits'] = dataclasses.replace(
                wire.InputLimits(), max_message_bytes=int(param(self, 'max_message_bytes')))
        return settings

    def _on_enable(self, request, response):
        self.enabled = bool(request.data)
        if not self.enabled and self.intake is not None:
            self.intake.queue.clear()
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
        modalities = self._modalities()
        return EngineConfig(model_path=str(param(self, 'model_path')),
                            dataset=str(param(self, 'dataset')), device=str(param(self, 'device')),
                            policy=str(param(self, 'policy')), seed=int(param(self, 'seed')),
                            modalities=() if modalities == [ALL_MODALITIES] else tuple(modalities),
                            quality=bool(param(self, 'publish_quality')),
                            layer_fault_rate=float(param(self, 'layer_fault_rate')))

    def _load(self) -> bool:
        """Load the model with the current parameters and build the intake around it (the
        queue, the synchroniser over its modalities, the audio window of its clip length)."""
        cfg = self._engine_config()
        plan = choose_threads('latency', override=int(param(self, 'threads')))
        apply_threads(plan)   # before the model's first op (torch's inter-op pool)
        try:
            engine = FusionEngine(cfg)
        except (FileNotFoundError, ValueError, CheckpointError) as exc:
            self.last_error = str(exc)
            self.get_logger().error(f'cannot load the model: {exc}')
            return False
        self.threads = apply_threads(plan)   # again: the pools of libraries loading the model loaded
        self.get_logger().info(f'threads: {thread_summary(self.threads)}')
        self.engine = engine
        self.get_logger().info(
            f'loaded {engine.path} on {engine.device}: modalities {engine.modalities}, depth '
            f'{engine.depth}, {len(engine.class_names)} classes, policy {cfg.policy}')
        self.intake = Intake(engine.modalities, engine.clip_samples, counters=self.counters,
                             on_reject=self._log_reject, **self._intake_settings())
        return True

    @_guarded
    def on_configure(self, state) -> TransitionCallbackReturn:
        if not self._load():
            return TransitionCallbackReturn.FAILURE
        qos = wire.output_qos(durability=str(param(self, 'output_durability')))
        self.pubs = {key: self.create_lifecycle_publisher(wire.output_class(topic), topic, qos)
                     for key, topic in (('prediction', wire.PREDICTION),
                                        ('allocation', wire.ALLOCATION),
                                        ('quality', wire.QUALITY), ('inference', wire.INFERENCE))}
        if wire.classification_type() is not None:   # an extra for vision_msgs users
            self.pubs['classification'] = self.create_lifecycle_publisher(
                wire.classification_type(), wire.CLASSIFICATION, qos)
        return TransitionCallbackReturn.SUCCESS

    @_guarded
    def on_activate(self, state) -> TransitionCallbackReturn:
        audio_input = str(param(self, 'audio_input'))
        if audio_input == 'audio_common' and not wire.audio_common_available():
            self.last_error = 'audio_input audio_common needs audio_common_msgs, not built here'
            self.get_logger().error(self.last_error)
            return TransitionCallbackReturn.FAILURE
        self.intake.reset()
        self.worker = Worker(self.intake.queue, self._process, self._on_worker_error).start()
        self._subscribe(audio_input)
        self.active = True
        self.last_set = time.monotonic()
        return super().on_activate(state)

    def _subscribe(self, audio_input: str) -> None:
        qos = wire.sensor_qos(param(self, 'input_reliability'), param(self, 'input_depth'),
                              str(param(self, 'input_durability')))
        for m in self.engine.modalities:
            msg_type, topic = Image, wire.SENSOR_TOPICS[m]
            if m == 'audio' and audio_input == 'audio_common':
                from audio_common_msgs.msg import AudioDataStamped, AudioInfo  # optional package
                msg_type, topic = AudioDataStamped, wire.AUDIO_STAMPED
                info = self.create_subscription(   # the stream's format: latched, always taken
                    AudioInfo, wire.AUDIO_STAMPED_INFO, self.intake.set_audio_info,
                    wire.latched_qos(),
                    event_callbacks=wire.subscription_events(self, wire.AUDIO_STAMPED_INFO,
                                                             wire.AUDIO_INFO_ADVICE))
                self.intake.audio_stream.info_topic = info.topic_name   # as remapped
                self.subs.append(info)
            self.subs.append(self.create_subscription(
                msg_type, topic, functools.partial(self._on_input, m), qos,
                event_callbacks=wire.subscription_events(
                    self, topic, on_lost=functools.partial(self.counters.lost_in_transport, m))))

    def _stop_processing(self) -> None:
        self.active = False
        for sub in self.subs:
            self.destroy_subscription(sub)
        self.subs = []
        if self.worker is not None:
            if not self.worker.stop(timeout=10.0):
                self.get_logger().warning('worker still busy after 10 s')
            self.worker = None
        if self.intake is not None:
            self.intake.queue.clear()

    @_guarded
    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def _teardown(self) -> None:
        """Back to unconfigured: no processing, no publishers, no model."""
        self._stop_processing()
        for pub in self.pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self.pubs = {}
        if self.engine is not None:
            self.engine.release()
        self.engine = None
        self.intake = None

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

    def _on_context_shutdown(self) -> None:
        """Ctrl-C shuts the context down before destroy_node runs: stop the worker now, so no
        frame is published into a dead context (destroy_node then joins it)."""
        self.active = False
        worker = self.worker
        if worker is not None:
            worker.halt()

    def destroy_node(self) -> None:
        if hasattr(self, 'subs'):
            self._stop_processing()
        super().destroy_node()
        # rclpy's LifecycleNode leaves its state machine to the garbage collector, and the state
        # machine holds the node's handle, so the context (and the DDS participant with its
        # shared-memory segment) would outlive destroy; nodes end without a collection.
        machine = getattr(self, '_state_machine', None)
        if machine is not None:
            machine.destroy_when_not_in_use()

    # ------------------------------------------------------------------ intake
    def _on_input(self, modality: str, msg) -> None:
        if self.active and self.enabled:
            self.intake.accept(modality, msg)

    def _log_reject(self, modality: str, reason: str) -> None:
        self.get_logger().warning(f'rejected {modality} input: {reason}',
                                  throttle_duration_sec=1.0)

    def _check_liveness(self) -> None:
        intake = self.intake
        if self.active and intake is not None:
            intake.sync.check()

    def dropped(self) -> int:
        """Frames replaced before the model saw them (the queue's count)."""
        # `is not None`: the queue has __len__, so an empty one is falsy and would read as 0 drops.
        intake = self.intake
        return intake.queue.dropped if intake is not None else 0

    # ------------------------------------------------------------------ worker
    def _publish(self, key: str, msg) -> None:
        """Publish unless the node is shutting down (then :class:`_Shutdown` ends the frame)."""
        worker = self.worker
        if not self.context.ok() or worker is None or worker.stopping:
            raise _Shutdown
        self.pubs[key].publish(msg)

    def _process(self, frame) -> None:
        engine = self.engine
        if engine is None or not self.enabled:
            return
        self.last_set = time.monotonic()
        inf = engine.infer(frame, self.budget, with_quality=False, account=False)
        header = wire.header(frame.stamp_ns, frame.frame_id)
        prediction = wire.prediction_msg(inf, header)
        # Latency ends at the prediction's publish: read the clocks once the message is built.
        latency_ms = (self.get_clock().now().nanoseconds - frame.stamp_ns) / 1e6
        processing_ms = (time.monotonic() - frame.ready_mono) * 1e3
        self._publish('prediction', prediction)
        if 'classification' in self.pubs:
            self._publish('classification', wire.classification_msg(inf, header))
        deadline = self.deadline
        if deadline is not None:
            before = deadline.budget
            if deadline.update(inf.budget_fraction, latency_ms) != before:
                self.budget = self._make_budget()   # from the next frame
        # Everything else is bookkeeping the prediction does not wait for.
        engine.account(inf)
        self._publish('allocation', wire.allocation_msg(inf, engine.model_modalities, header))
        if engine.cfg.quality:  # after the prediction: the estimates are not on its critical path
            inf.quality.update(engine.estimate_quality(frame))
            self._publish('quality', wire.quality_msg(inf, header))
        self._publish('inference', wire.inference_msg(inf, header, latency_ms=latency_ms,
                                                      processing_ms=processing_ms,
                                                      dropped=self.dropped()))
        with self._lock:
            self.processed += 1
            self.last_inference = inf
        self.latency.add(latency_ms)
        self.model_time.add(inf.model_ms)

    def _on_worker_error(self, frame, exc: Exception) -> None:
        if isinstance(exc, _Shutdown) or not self.context.ok():
            return   # shutting down: the publish failed because the context is gone, not the frame
        if isinstance(exc, wire.RejectedInput):
            self.intake.reject(next(iter(frame.data), 'rgb'), str(exc))
            return
        with self._lock:
            self.failed += 1
            self.last_failure = time.monotonic()
        self.get_logger().error(f'inference failed on the set stamped {frame.stamp_ns}: '
                                f'{type(exc).__name__}: {exc}', throttle_duration_sec=1.0)


def main(args=None) -> NoReturn:
    node_main(AdmnFusion, args)


if __name__ == '__main__':
    main()
