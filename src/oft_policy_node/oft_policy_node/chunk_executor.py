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
Services: ~/stop, ~/resume (std_srvs/Trigger; resume also clears a tracking fault).

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
from rclpy.clock import JumpThreshold, TimeJump
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
    NEEDS_RESUME,
    ExecutorCore,
    ExecutorRules,
    ExecutorState,
)
from oft_policy_node.runtime.safety import SafetyFilter, SafetyLimits
from oft_policy_node.runtime.sensor_decoding import arm_state_from_joint_state
from oft_policy_node.runtime.tick_stats import TickStats


class ChunkExecutor(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__('chunk_executor', **kwargs)
        params = declare_all(self, PARAMETERS, on_change=self._on_parameter)
        rate = params['rate_hz']
        self._core = ExecutorCore(
            ChunkQueue(params['merge_rule'], params['blend_decay'], params['max_chunk_age']),
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
        self._backend = BACKENDS[params['backend']](self, params)
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
            subscribe_with_arrival(
                self,
                JointState,
                robot.joint_states_topic(arm),
                partial(self._on_joint_state, arm),
                qos_profile_sensor_data,
            )
        self.create_service(Trigger, '~/stop', self._on_stop)
        self.create_service(Trigger, '~/resume', self._on_resume)
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

    def _on_parameter(self, name: str, value: Any) -> None:
        attribute = {
            'merge_rule': 'merge_rule',
            'blend_decay': 'blend_decay',
            'max_chunk_age': 'max_age',
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
        try:
            state = arm_state_from_joint_state(msg.name, msg.position)
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
        if state in NEEDS_RESUME or reason == CLOCK_NOT_STARTED:
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
            if not self._backend.ready:
                return  # nothing is commanded before the bring-up is done
            now = self._now()
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

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._core.stop()
            self._told_ignoring = False
        self.get_logger().warning('stopped: holding the pose, ignoring chunks until ~/resume')
        return _succeeded(response, 'stopped: holding the last commanded pose')

    def _on_resume(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self._backend.failure:
            response.success, response.message = False, self._backend.failure
            return response
        with self._lock:
            fault = self._core.fault
            self._core.resume()
        message = 'resumed: following new chunks from the measured pose' + (
            f' after: {fault.describe()}' if fault else ''
        )
        self.get_logger().info(message)
        return _succeeded(response, message)

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
        }
        return level, message, values

    def _level_and_message(self) -> tuple[bytes, str]:
        core, backend = self._core, self._backend
        if self._loop.failure:
            return DiagnosticStatus.ERROR, self._loop.failure
        if backend.failure:
            return DiagnosticStatus.ERROR, backend.failure
        if not backend.ready:
            return DiagnosticStatus.WARN, backend.status
        state = core.state
        if state is ExecutorState.TRACKING_FAULT:
            return DiagnosticStatus.ERROR, f'{state.value}: {core.fault.describe()}'
        if state is ExecutorState.STALE_JOINT_STATES:
            return DiagnosticStatus.WARN, f'{state.value}: {", ".join(core.stale_arms)}'
        return (
            DiagnosticStatus.OK if state is ExecutorState.RUNNING else DiagnosticStatus.WARN,
            state.value,
        )

    def raise_other_threads(self) -> None:
        self._loop.raise_other_threads()

    def destroy_node(self) -> None:
        self._loop.stop()  # no tick may reach a backend whose publishers are being destroyed
        super().destroy_node()


def _succeeded(response: Trigger.Response, message: str) -> Trigger.Response:
    response.success, response.message = True, message
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
    return run_node('chunk_executor', __doc__, PARAMETERS, _process_node, argv, callback_threads=1)


if __name__ == '__main__':
    raise SystemExit(main())
