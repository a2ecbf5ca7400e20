"""chunk_executor: plays OFT+ action chunks on the robot at a fixed rate, safely.

Every tick (25 Hz on the node clock: wall time on a robot, /clock with use_sim_time) it takes
the target for *now* from the time-indexed chunk queue, passes it through the safety filter
and sends it through the configured backend. The ticks run on a thread of their own at
absolute deadlines, in SCHED_FIFO where the process may (runtime/control_loop.py); on wall
time the deadlines are on the monotonic clock, so a step of the system clock cannot stall it.
See runtime/executor_core.py for the rules (first command = measured pose, stalls hold the
pose, future stamps, the start ramp, tracking faults, stale joint states, stop/resume),
runtime/chunk_queue.py for latency compensation, the merge rules and the watchdog,
runtime/safety.py for the limits and runtime/arm_bringup.py for what the interbotix backend
does before its first command.

Topics: subscribes robot.ACTION_CHUNK_TOPIC (oft_msgs/ActionChunk) and the arms' joint_states;
publishes commands (backend), /diagnostics (ERROR on a tracking fault or a failed bring-up)
and, with merge_rule prefix, /chunk_executor/committed (oft_msgs/CommittedChunk) every tick:
the chunk being played, for policy_node to give the next chunk the rows played while it
thinks.
Services: ~/stop, ~/resume (std_srvs/Trigger; resume also clears a tracking fault),
~/go_to_start and ~/sleep (std_srvs/Trigger: a slow move to the start or the sleep pose, then
hold until ~/resume).

Start and end of a run (on_start, on_exit): with backend interbotix the arms first move slowly
to the start pose with the grippers open, then follow the policy; Ctrl-C or SIGTERM opens the
grippers and holds (on_exit hold), or moves to the sleep pose and torques off there (sleep).
A second publisher on the command topics (another teleop or executor left running) is reported
on /diagnostics: nothing is commanded while it is there, and a running executor stops.

Run (simulation: add -p use_sim_time:=true; robot: -p backend:=interbotix):
    ros2 run oft_policy_node chunk_executor --ros-args -p merge_rule:=blend
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from oft_msgs.msg import ActionChunk, CommittedChunk
from oft_policy_node import robot
from oft_policy_node.command_backends import BACKENDS
from oft_policy_node.executor_parameters import PARAMETERS
from oft_policy_node.node_parameters import declare_all
from oft_policy_node.node_runner import run_node
from oft_policy_node.rclpy_compat import subscribe_with_arrival
from oft_policy_node.ros_conversions import committed_chunk_msg, seconds_to_stamp, stamp_to_seconds
from oft_policy_node.runtime.chunk_queue import ChunkQueue
from oft_policy_node.runtime.clock_history import ClockHistory
from oft_policy_node.runtime.control_loop import PeriodicLoop, monotonic_sleep_until
from oft_policy_node.runtime.executor_core import (
    CLOCK_NOT_STARTED,
    IGNORING_CHUNKS,
    ExecutorCore,
    ExecutorRules,
    ExecutorState,
)
from oft_policy_node.runtime.pose_moves import both_arms
from oft_policy_node.runtime.safety import IS_GRIPPER, SafetyFilter, SafetyLimits
from oft_policy_node.runtime.sensor_decoding import arm_state_from_joint_state
from oft_policy_node.runtime.tick_stats import TickStats

COMMAND_TOPIC_CHECK_S = 0.5  # how often the command topics are checked for other publishers
YIELDED = (
    'stopped: another node commanded the arms; ~/resume follows chunks from the measured pose'
)
# Peak gripper speed (opening per s) of the pose moves: opening a closed gripper takes about
# 0.8 s (Trossen's scripts open them in 0.5 s; the executor's limit is 4/s).
GRIPPER_MOVE_SPEED = 2.0


class ChunkExecutor(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__('chunk_executor', **kwargs)
        params = declare_all(self, PARAMETERS, on_change=self._on_parameter)
        rate = params['rate_hz']
        self._core = ExecutorCore(
            ChunkQueue(
                params['merge_rule'],
                params['blend_decay'],
                params['max_chunk_age'],
                splice_fade=params['splice_fade'],
            ),
            SafetyFilter(
                SafetyLimits.for_robot(
                    rate,
                    params['velocity_scale'],
                    params['tracking_tolerance'],
                    params['gripper_tracking_tolerance'],
                )
            ),
            ExecutorRules(
                max_future_stamp=params['max_future_stamp'],
                max_joint_state_age=params['max_joint_state_age'],
                tracking_ticks=params['tracking_error_ticks'],
                start_ramp_ticks=round(params['start_ramp_duration'] * rate),
            ),
        )
        self._gripper = robot.GripperCalibration(
            *params['gripper_finger_range'], *params['gripper_motor_range']
        )
        self._backend = BACKENDS[params['backend']](self, params, self._gripper)
        interbotix = params['backend'] == 'interbotix'
        self._period = 1.0 / rate
        self._move_speeds = np.where(IS_GRIPPER, GRIPPER_MOVE_SPEED, params['pose_move_speed'])
        start = both_arms(params['start_pose'], params['start_gripper'])
        # Trossen's sleep_arms(home_first=True): to the start pose first, then down to sleep.
        self._waypoints = {
            'start pose': [start],
            'sleep pose': [start, both_arms(params['sleep_pose'], params['sleep_gripper'])],
        }
        self._on_exit = params['on_exit']
        self._exit_timeout = params['exit_timeout']
        self._exit: str | None = None  # None, then 'moving', 'torque off', 'done'
        self._exit_deadline = 0.0
        if params['on_start'] == 'start_pose' or (params['on_start'] == 'auto' and interbotix):
            self._move('start pose', then='follow')
        # Other publishers on the command topics: {topic: [node names]} (checked on wall time).
        self._intruders: dict[str, list[str]] = {}
        # Another node commanded the arms after this one had: nothing is sent until ~/resume,
        # not even the held pose (the arms may stand elsewhere now).
        self._yielded = False
        self._reported_state = self._core.state
        self._told_ignoring = False  # "ignoring chunks" is logged once per stop or fault
        self._stats = TickStats(1.0 / params['rate_hz'])
        # The control loop's thread and the callback threads share the core and the backend.
        self._lock = threading.Lock()
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._committed = self.create_publisher(CommittedChunk, robot.COMMITTED_CHUNK_TOPIC, 10)
        self._committed_msg: CommittedChunk | None = None
        subscribe_with_arrival(self, ActionChunk, robot.ACTION_CHUNK_TOPIC, self._on_chunk, 10)
        for arm in robot.ARMS:
            subscription = subscribe_with_arrival(
                self,
                JointState,
                robot.joint_states_topic(arm),
                partial(self._on_joint_state, arm),
                qos_profile_sensor_data,
            )
            self._backend.watch_driver(arm, subscription.topic_name)
        self.create_service(Trigger, '~/stop', self._on_stop)
        self.create_service(Trigger, '~/resume', self._on_resume)
        self.create_service(Trigger, '~/go_to_start', partial(self._on_move, 'start pose'))
        self.create_service(Trigger, '~/sleep', partial(self._on_move, 'sleep pose'))
        self.create_timer(
            COMMAND_TOPIC_CHECK_S,
            self._check_command_topics,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )
        self.create_timer(params['diagnostics_period'], self._publish_diagnostics)
        sim_time = self.get_parameter('use_sim_time').value
        self._sim_clock: ClockHistory | None = None
        if sim_time:
            self._watch_sim_clock()
        self._loop = PeriodicLoop(
            1.0 / rate,
            self._on_tick,
            self._now if sim_time else time.monotonic,
            self._sleep_until_sim_time if sim_time else monotonic_sleep_until,
            params['realtime_priority'],
            sim_clock=sim_time,
        )
        priority = self._loop.start()
        if priority.warning:
            self.get_logger().warning(priority.warning)
        self.get_logger().info(
            f'{rate} Hz ({priority.description}), backend {params["backend"]}, '
            f'merge {params["merge_rule"]}; waiting for joint states'
        )

    def _move(self, pose: str, then: str) -> str | None:
        if pose == 'grippers open':  # the arms stay where they are commanded
            target = self._core.last_command
            target[IS_GRIPPER] = 1.0
            waypoints = [target]
        else:
            waypoints = self._waypoints[pose]
        return self._core.move_to(
            pose, waypoints, self._move_speeds, self._period, then=then, min_duration=0.5
        )

    def _on_parameter(self, name: str, value: Any) -> None:
        attribute = {
            'merge_rule': 'merge_rule',
            'blend_decay': 'blend_decay',
            'max_chunk_age': 'max_age',
            'splice_fade': 'splice_fade',
        }.get(name)
        if attribute:
            with self._lock:
                setattr(self._core.queue, attribute, value)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _watch_sim_clock(self) -> None:
        """A jump callback that wakes the loop whenever /clock moves. Not rclpy's
        Clock.sleep_until: it waits for the next jump without checking the time first, so a
        /clock message that lands just before it is called leaves it asleep until the one
        after (a simulation that waits for this tick's command never sends that one)."""
        self._clock_moved = threading.Event()
        self._clock_went_back = False
        self._sim_clock = ClockHistory()

        def on_jump(jump: TimeJump) -> None:
            self._sim_clock.record(time.time_ns(), self._now())
            self._clock_went_back |= jump.delta.nanoseconds < 0
            self._clock_moved.set()

        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(
                min_forward=Duration(nanoseconds=1),
                min_backward=Duration(nanoseconds=-1),
                on_clock_change=True,
            ),
            post_callback=on_jump,
        )

    def _sleep_until_sim_time(self, deadline: float) -> bool:
        """Wait until /clock reaches `deadline`; False when it went back (a reset simulation:
        the loop restarts its schedule from the new time) or the loop is stopping."""
        while not self._loop.stopping:
            self._clock_moved.clear()  # before the check: a jump after it sets it again
            if self._clock_went_back:
                self._clock_went_back = False
                return False
            if self._now() >= deadline - 1e-6:  # /clock counts whole ns, deadlines are floats
                return True
            self._clock_moved.wait(0.5)  # the timeout only re-checks `stopping`
        return False

    def _arrival(self, received_ns: int) -> float:
        """When DDS received a message, on this node's clock: now minus how long it waited in
        the queue (on /clock: the sim time the node had then, runtime/clock_history.py). A
        stalled or starved executor takes a backlog of old joint states (and chunks) at once;
        stamped with the time their callback ran they would make a driver that went silent
        during the stall look alive for another max_joint_state_age (seen: a 1.2 s stall, then
        0.25 s of motion on states from before it). received_ns is 0 where rclpy gives no
        receive time (Humble, rclpy_compat): the callback's time, that cost accepted
        (docs/runtime.md)."""
        if not received_ns:
            return self._now()
        if self._sim_clock is not None:
            then = self._sim_clock.at(received_ns)
            return self._now() if then is None else min(then, self._now())
        waited = max(time.time_ns() - received_ns, 0)
        return self._now() - waited * 1e-9

    def _on_joint_state(self, arm: str, msg: JointState, received_ns: int) -> None:
        self._backend.joint_state_arrived(arm)
        try:
            state = arm_state_from_joint_state(msg.name, msg.position, self._gripper)
            arrival = self._arrival(received_ns)
            with self._lock:
                self._core.set_measured_arm(arm, state, arrival)
        except ValueError as error:
            self.get_logger().error(
                f'{robot.joint_states_topic(arm)}: {error}', throttle_duration_sec=2.0
            )

    def _on_chunk(self, msg: ActionChunk, received_ns: int) -> None:
        actions = np.asarray(msg.actions, dtype=np.float64)  # the costly part, outside the lock
        arrival = self._arrival(received_ns)
        with self._lock:
            reason = self._core.receive_chunk(
                stamp_to_seconds(msg.header.stamp),
                msg.period,
                msg.joint_names,
                msg.num_steps,
                actions,
                msg.inference_latency,
                arrival,
                msg.chunk_id,
                msg.prefix_steps,
                msg.prefix_chunk_id,
            )
            state = self._core.state
        if reason is None:
            return
        if state in IGNORING_CHUNKS or reason == CLOCK_NOT_STARTED:
            if not self._told_ignoring:
                self._told_ignoring = True
                self.get_logger().warning(f'ignoring chunks (counted in ignored_chunks): {reason}')
            return
        self.get_logger().error(
            f'chunk {msg.chunk_id} rejected: {reason}', throttle_duration_sec=2.0
        )

    def _on_tick(self) -> None:
        with self._lock:  # the stats too: the diagnostics callback reads them from its thread
            self._stats.record(time.monotonic())
            now = self._now()
            if not self._backend.ready or self._intruders or self._yielded:
                # nothing is commanded before the bring-up, while a driver is checked, nor
                # beside another node
                if self._backend.brought_up:
                    self._core.hold_tick(now)
                return
            result = self._core.tick(now)
            if result.command is not None:
                self._backend.send(result.command, seconds_to_stamp(now))
            queue = self._core.queue
            if queue.merge_rule == 'prefix':
                self._committed_msg = committed_chunk_msg(
                    seconds_to_stamp(now),
                    queue.source if result.fresh else None,
                    queue.source_row,
                    self._committed_msg,
                )
                self._committed.publish(self._committed_msg)
            if self._core.state != self._reported_state:
                self._report_state_change()

    def _report_state_change(self) -> None:
        core, logger = self._core, self.get_logger()
        self._reported_state = state = core.state
        if state is ExecutorState.TRACKING_FAULT:
            self._told_ignoring = False
            logger.error(core.fault.describe())
        elif state is ExecutorState.STALE_JOINT_STATES:
            logger.warning(
                f'no joint states from {", ".join(core.stale_arms)} for more than '
                f'{core.rules.max_joint_state_age} s: holding the pose until they '
                f'return'
            )
        elif state is ExecutorState.RUNNING:
            logger.info('running: following chunks')
        elif state is ExecutorState.MOVING and core.move is not None:
            logger.info(f'moving to the {core.move.name} ({core.move.duration:.1f} s)')
        elif state is ExecutorState.STOPPED:
            logger.info('holding the pose until ~/resume')

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._core.stop()
            self._told_ignoring = False
        self.get_logger().warning('stopped: holding the pose, ignoring chunks until ~/resume')
        return _answer(response, True, 'stopped: holding the last commanded pose')

    def _on_move(
        self, pose: str, request: Trigger.Request, response: Trigger.Response
    ) -> Trigger.Response:
        refusal = self._refusal()
        if refusal is None:
            with self._lock:
                refusal = self._move(pose, then='stop')
        if refusal:
            return _answer(response, False, refusal)
        self.get_logger().info(f'~/{"go_to_start" if pose == "start pose" else "sleep"}')
        return _answer(response, True, f'moving to the {pose}, then holding until ~/resume')

    def _refusal(self) -> str | None:
        """Why nothing may be commanded now (a failed bring-up, another publisher, exiting)."""
        if self._backend.failure:
            return self._backend.failure
        if self._intruders:
            return self._intruder_message()
        if self._exit:
            return 'the executor is exiting'
        return None

    def _on_resume(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        refusal = self._refusal()
        if refusal:
            return _answer(response, False, refusal)
        with self._lock:
            fault = self._core.fault
            self._core.resume()  # re-based on the measured pose: wherever the arms stand now
            self._yielded = False
        message = 'resumed: following new chunks from the measured pose' + (
            f' after: {fault.describe()}' if fault else ''
        )
        self.get_logger().info(message)
        return _answer(response, True, message)

    def _publish_diagnostics(self) -> None:
        # Only the counts are taken under the lock: the control loop waits for it, and this
        # callback's thread is not real-time, so building the message under it could keep a
        # tick waiting through a busy core's whole time slice.
        with self._lock:
            level, message, values = self._diagnostic_values()
        status = DiagnosticStatus(
            level=level,
            name=self.get_fully_qualified_name(),
            hardware_id='aloha',
            message=message,
            values=[KeyValue(key=k, value=_format(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def _diagnostic_values(self) -> tuple[bytes, str, dict[str, object]]:
        core = self._core
        level, message = self._level_and_message()
        peak = core.tracking.peak_error
        worst = int(np.argmax(peak))
        values = {
            **self._stats.summary(),
            'ticks': core.ticks,
            'fresh_ticks': core.fresh_ticks,
            'stalls': core.stalls,
            'waits': core.waits,
            'starting_ticks': core.starting_ticks,
            'holds': core.holds,
            'clamped_commands': core.safety.clamped_commands,
            'accepted_chunks': core.accepted_chunks,
            'rejected_chunks': core.rejected_chunks,
            'future_chunks': core.future_chunks,
            'ignored_chunks': core.ignored_chunks,
            'tracking_faults': core.tracking_faults,
            'stale_events': core.stale_events,
            'late_ticks': core.late_ticks,
            'splices': core.queue.splices,
            'late_splices': core.queue.late_splices,
            'restarts': core.queue.restarts,
            'chunk_switches': core.switches,
            'switch_step_max': core.switch_step_max,
            'chunk_step_max': core.chunk_step_max,
            'loop_overruns': self._loop.overruns,
            'control_loop': self._loop.priority.description if self._loop.priority else '',
            'tracking_error_peak': float(peak[worst]),
            'tracking_error_peak_joint': robot.action_joint_names()[worst],
            'inference_latency_s': core.inference_latency,
            'queued_chunks': len(core.queue),
            'last_rejection': core.last_rejection,
            'backend': self._backend.status,
            'driver_restarts': self._backend.driver_restarts,
            'move_ticks': core.move_ticks,
            'moves_done': core.moves_done,
            'exit': self._exit or '',
        }
        return level, message, values

    def _level_and_message(self) -> tuple[bytes, str]:
        core, backend = self._core, self._backend
        if self._loop.failure:
            return DiagnosticStatus.ERROR, self._loop.failure
        if backend.failure:
            return DiagnosticStatus.ERROR, backend.failure
        if self._intruders:
            return DiagnosticStatus.ERROR, self._intruder_message()
        if self._yielded:
            return DiagnosticStatus.WARN, YIELDED
        if not backend.ready:
            return DiagnosticStatus.WARN, backend.status
        state = core.state
        if state is ExecutorState.TRACKING_FAULT:
            return DiagnosticStatus.ERROR, f'{state.value}: {core.fault.describe()}'
        if state is ExecutorState.STALE_JOINT_STATES:
            return DiagnosticStatus.WARN, f'{state.value}: {", ".join(core.stale_arms)}'
        if state is ExecutorState.MOVING and core.move is not None:
            return DiagnosticStatus.OK, f'moving to the {core.move.name}'
        return (
            DiagnosticStatus.OK if state is ExecutorState.RUNNING else DiagnosticStatus.WARN,
            state.value,
        )

    def _check_command_topics(self) -> None:
        """Find publishers other than this node on the topics it commands the arms on."""
        found = {}
        mine = self.get_fully_qualified_name()
        for topic in self._backend.command_topics():
            names = [
                f'{info.node_namespace.rstrip("/")}/{info.node_name}'
                for info in self.get_publishers_info_by_topic(topic)
            ]
            if mine in names:
                names.remove(mine)  # one of them is this node's own publisher
            if names:
                found[topic] = sorted(names)
        if found == self._intruders:
            return
        with self._lock:
            if found and self._core.last_command is not None:
                self._core.stop()
                self._yielded = True
            self._intruders = found
        if found:
            self.get_logger().error(self._intruder_message())
        else:
            self.get_logger().info('no other publisher on the command topics any more')

    def _intruder_message(self) -> str:
        where = '; '.join(
            f'{topic}: {", ".join(names)}' for topic, names in self._intruders.items()
        )
        return (
            f'another publisher on the command topics ({where}): nothing is commanded while it '
            f'is there (two nodes commanding one arm); stop it, then ~/resume'
        )

    # ---- exit (Ctrl-C, SIGTERM: node_runner) -------------------------------------------------
    def begin_exit(self) -> None:
        """Start the configured end: the sleep move, or nothing (hold)."""
        self._exit_deadline = time.monotonic() + self._exit_timeout
        logger = self.get_logger()
        with self._lock:
            refusal = self._refusal() or (
                None
                if self._backend.ready and self._core.has_measured_pose
                else 'the arms were never commanded'
            )
            pose = 'sleep pose' if self._on_exit == 'sleep' else 'grippers open'
            if refusal is None:
                refusal = self._move(pose, then='stop')
        if refusal:
            logger.warning(f'exit: the arms stay where they are ({refusal}); torque stays on')
            self._exit = 'done'
        else:
            logger.info(
                'exit: moving to the sleep pose, then torque off'
                if self._on_exit == 'sleep'
                else 'exit: opening the grippers; the arms hold their pose, torque on'
            )
            self._exit = 'moving'

    def exit_done(self) -> bool:
        """Polled by node_runner after begin_exit until True."""
        logger = self.get_logger()
        if self._exit == 'moving':
            with self._lock:
                state, at_rest = self._core.state, self._at_sleep_pose()
            if state is ExecutorState.STOPPED and self._on_exit == 'hold':
                self._exit = 'done'
            elif state is ExecutorState.STOPPED and at_rest:
                logger.info('exit: the arms rest at the sleep pose; torque off')
                self._backend.torque_off()
                self._exit = 'torque off'
            elif state not in (ExecutorState.MOVING, ExecutorState.STOPPED):
                logger.error(f'exit: the move to the sleep pose ended: {state.value}; torque on')
                self._exit = 'done'
        if self._exit == 'torque off' and self._backend.idle:
            self._exit = 'done'
        if self._exit != 'done' and time.monotonic() > self._exit_deadline:
            logger.error(
                f'exit: not done after exit_timeout {self._exit_timeout} s ({self._exit}); '
                f'the arms stay held where they are, torque on'
            )
            self._exit = 'done'
        return self._exit == 'done'

    def _at_sleep_pose(self) -> bool:
        """Whether both arms measure the sleep pose within the tracking tolerance (only then
        may torque go off: an arm in the air would fall)."""
        if not self._core.has_measured_pose:
            return False
        sleep = self._core.safety.clip_to_limits(self._waypoints['sleep pose'][-1])
        error = np.abs(self._core.measured_pose() - sleep)
        tolerance = self._core.safety.limits.tracking_tolerance
        return bool((error <= tolerance)[~IS_GRIPPER].all())

    def raise_other_threads(self) -> None:
        self._loop.raise_other_threads()

    def destroy_node(self) -> None:
        self._loop.stop()  # no tick may reach a backend whose publishers are being destroyed
        super().destroy_node()


def _answer(response: Trigger.Response, success: bool, message: str) -> Trigger.Response:
    response.success, response.message = success, message
    return response


def _format(value: object) -> str:
    return f'{value:.6g}' if isinstance(value, float | np.floating) else str(value)


def _process_node() -> ChunkExecutor:
    """The node as a process of its own: its other threads (DDS, the callback executor's) at
    nice -10 and a shorter GIL switch interval (PeriodicLoop.raise_other_threads); not done for
    nodes built inside another process, such as a test's."""
    node = ChunkExecutor()
    node.raise_other_threads()
    return node


def main(argv: list[str] | None = None) -> int:
    # One callback thread: the ticks have their own, and every Python thread is one more that
    # can hold the GIL when the control loop wakes.
    return run_node(
        'chunk_executor',
        __doc__,
        PARAMETERS,
        _process_node,
        argv,
        callback_threads=1,
        graceful_exit=True,
    )


if __name__ == '__main__':
    raise SystemExit(main())
