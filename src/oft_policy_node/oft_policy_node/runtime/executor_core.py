"""The chunk executor without ROS: measured pose in, chunks in, one safe command per tick out.

The node (chunk_executor.py) only converts messages and drives `tick` from its timer. Rules:
* No command before both arms' measured pose is known; the first command is that pose (clipped
  into the limits), so starting the executor never makes the arms jump.
* Each tick takes the queue's target for now and passes it through the safety filter (limits,
  step, tracking bound). No valid target (queue empty, chunks expired or past the watchdog) ->
  the last command is repeated and a stall is counted (a wait instead while the `sync` merge
  rule holds for its next chunk; a starting tick before any chunk was played, since a policy
  not heard from yet, one still loading or still being discovered, leaves no gap in a stream).
* Chunks stamped ahead of the executor's clock by more than `max_future_stamp` are rejected
  whole; the queue's watchdog also bounds the time since arrival (chunk_queue.py).
* Start ramp: after the first command, after ~/resume and after joint states come back, the
  per-tick step limit rises linearly from 1/start_ramp_ticks of the velocity limit to all of it
  over start_ramp_ticks fresh ticks, so the first move to the policy's target is slow.
* Tracking error (tracking.py): a joint beyond its tolerance for `tracking_ticks` ticks trips a
  fault: the pose is re-based on the measured one, held, and no chunk is taken until `resume`.
* Stale joint states: no state from an arm for `max_joint_state_age` -> hold and count. A tick
  that comes later than that after the previous one (the executor starved of CPU, or blocked
  in a publish) holds without judging, since the states queued meanwhile are not handled yet;
  the next tick judges. The
  executor takes up again on its own when fresh states return, because it checks the held
  command against the fresh measured pose *before* anything moves: an arm that was moved
  meanwhile (pushed, torqued off, rebooted) trips the tracking fault, which waits for resume;
  otherwise the arm is where it was told to stay, and the start ramp applies again.
* `stop` holds the pose, drops queued chunks and ignores new ones until `resume`.
* `move_to` moves slowly to a named pose (pose_moves.py: the start pose before the policy, the
  sleep pose at the end) through the same safety filter and tracking check, ignoring chunks
  meanwhile; afterwards it follows chunks or holds until `resume`. A move asked for before the
  pose is known starts from the first command. Stale joint states pause it; `stop`, `resume`
  and a tracking fault end it.
Every held tick repeats the held pose and counts as a hold, never as a fresh target.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oft_policy_node import robot
from oft_policy_node.runtime.chunk_queue import ChunkQueue
from oft_policy_node.runtime.pose_moves import PoseMove
from oft_policy_node.runtime.safety import (
    IS_GRIPPER,
    ChunkRejected,
    FutureStamp,
    SafetyFilter,
    validate_chunk,
)
from oft_policy_node.runtime.tracking import TrackingFault, TrackingMonitor, rebase


class ExecutorState(enum.Enum):
    WAITING_FOR_POSE = 'waiting for joint states'
    RUNNING = 'running'
    STOPPED = 'stopped'
    TRACKING_FAULT = 'tracking fault'
    STALE_JOINT_STATES = 'joint states stale'
    MOVING = 'moving to a pose'


CLOCK_NOT_STARTED = 'the executor clock has not started (use_sim_time and no /clock yet)'
# States in which chunks are ignored until ~/resume.
NEEDS_RESUME = (ExecutorState.STOPPED, ExecutorState.TRACKING_FAULT)
# States in which chunks are ignored (counted, not an error of the policy).
IGNORING_CHUNKS = (*NEEDS_RESUME, ExecutorState.MOVING)


@dataclass(frozen=True)
class ExecutorRules:
    """The executor's time and tracking rules (the limits live in SafetyLimits)."""

    max_future_stamp: float = 0.1  # s a chunk's stamp may lie ahead of the executor's clock
    max_joint_state_age: float = 0.25  # s without a state from an arm before holding
    tracking_ticks: int = 5  # consecutive ticks beyond the tolerance that trip a fault
    start_ramp_ticks: int = 50  # fresh ticks of the start ramp (2 s at 25 Hz); 0 = none

    def __post_init__(self) -> None:
        for name in ('max_future_stamp', 'max_joint_state_age'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f'{name} {value!r} must be a finite number of seconds >= 0')
        if self.tracking_ticks < 1:
            raise ValueError(f'tracking_ticks {self.tracking_ticks!r} must be >= 1')
        if self.start_ramp_ticks < 0:
            raise ValueError(f'start_ramp_ticks {self.start_ramp_ticks!r} must be >= 0')


@dataclass(frozen=True)
class TickResult:
    command: np.ndarray | None  # (D,) robot units, None while the pose is unknown
    fresh: bool  # True when the command follows a chunk target, False when holding


class ExecutorCore:
    def __init__(
        self, queue: ChunkQueue, safety: SafetyFilter, rules: ExecutorRules | None = None
    ) -> None:
        self.queue = queue
        self.safety = safety
        self.rules = rules or ExecutorRules()
        self.tracking = TrackingMonitor(
            safety.limits.tracking_tolerance, self.rules.tracking_ticks
        )
        self._measured: dict[str, np.ndarray] = {}  # arm -> (7,)
        self._measured_at: dict[str, float] = {}  # arm -> executor clock (s) of its state
        self._last_tick: float | None = None  # executor clock (s) of the previous tick
        self._last_command: np.ndarray | None = None  # (D,)
        self._stopped = False
        self._stale: tuple[str, ...] = ()  # arms whose joint states are stale
        self._move: PoseMove | None = None
        self._pending_move: dict | None = None  # asked for before the first command
        self.move_ticks = 0
        self.moves_done = 0
        self._ramp_ticks = 0  # fresh ticks since the ramp (re)started
        self.fault: TrackingFault | None = None
        self.ticks = 0
        self.fresh_ticks = 0
        self.stalls = 0
        self.waits = 0  # held ticks of the `sync` merge rule's pause for the next chunk
        self.starting_ticks = 0  # ticks before the first chunk played, the first command too
        self.holds = 0  # held ticks of a rule: stopped, tracking fault, stale joint states
        self.accepted_chunks = 0
        self.rejected_chunks = 0
        self.future_chunks = 0  # rejected for a stamp ahead of the executor's clock
        self.ignored_chunks = 0  # arrived while stopped or after a tracking fault
        self.tracking_faults = 0
        self.stale_events = 0  # times an arm's joint states went stale
        self.late_ticks = 0  # held because the previous tick was longer ago than a state may be
        # The largest arm-joint step between consecutive targets (rad, before the safety
        # filter, which would hide a jump behind its step limit), where the playing chunk
        # changed and where it did not: a splice without a jump steps no more at a switch
        # than inside a chunk.
        self.switches = 0
        self.switch_step_max = 0.0
        self.chunk_step_max = 0.0
        self._previous = None  # (chunk, target) of the previous fresh tick
        self.last_rejection = ''
        self.inference_latency = float('nan')  # s, of the newest accepted chunk

    @property
    def state(self) -> ExecutorState:
        if self._last_command is None:
            return ExecutorState.WAITING_FOR_POSE
        if self.fault is not None:
            return ExecutorState.TRACKING_FAULT
        if self._move is not None or self._pending_move is not None:
            return ExecutorState.STALE_JOINT_STATES if self._stale else ExecutorState.MOVING
        if self._stopped:
            return ExecutorState.STOPPED
        return ExecutorState.STALE_JOINT_STATES if self._stale else ExecutorState.RUNNING

    @property
    def move(self) -> PoseMove | None:
        return self._move

    @property
    def stale_arms(self) -> tuple[str, ...]:
        return self._stale

    @property
    def has_measured_pose(self) -> bool:
        return set(self._measured) == set(robot.ARMS)

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._last_command is None else self._last_command.copy()

    def measured_pose(self) -> np.ndarray:
        """(D,) the newest measured pose of both arms (known only once has_measured_pose)."""
        return np.concatenate([self._measured[arm] for arm in robot.ARMS])

    def set_measured_arm(self, arm: str, state: np.ndarray, now: float) -> None:
        """The measured (7,) pose of one arm (6 joints in rad + gripper opening 0..1) as it
        arrived at `now` (s, executor clock: the stamp of the message is the driver's)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (len(robot.ARM_JOINTS) + 1,) or not np.isfinite(state).all():
            raise ValueError(
                f'measured pose of the {arm} arm must be 7 finite values, got {state!r}'
            )
        self._measured[arm] = state
        self._measured_at[arm] = now

    def _stale_arms(self, now: float) -> tuple[str, ...]:
        return tuple(
            arm
            for arm in robot.ARMS
            if now - self._measured_at[arm] > self.rules.max_joint_state_age
        )

    def receive_chunk(
        self,
        stamp: float,
        period: float,
        joint_names: Sequence[str],
        num_steps: int,
        actions: Sequence[float] | np.ndarray,
        inference_latency: float,
        now: float,
        chunk_id: int = 0,
        prefix_steps: int = 0,
        prefix_of: int = 0,
    ) -> str | None:
        """Validate and queue a chunk that arrived at `now` (s, executor clock); returns the
        rejection reason, or None when accepted. `prefix_steps` / `prefix_of`: the rows given
        from chunk `prefix_of` (the `prefix` merge rule)."""
        if self.state in NEEDS_RESUME:
            self.ignored_chunks += 1
            return f'the executor is {self.state.value}; call ~/resume'
        if self.state is ExecutorState.MOVING:
            self.ignored_chunks += 1
            return f'the executor is moving to the {self._move_name()}'
        if now <= 0.0:  # use_sim_time before the first /clock: no time to judge a stamp by
            self.ignored_chunks += 1
            return CLOCK_NOT_STARTED
        try:
            chunk = validate_chunk(
                stamp,
                period,
                joint_names,
                num_steps,
                actions,
                now,
                self.rules.max_future_stamp,
                chunk_id,
                prefix_steps,
                prefix_of,
            )
        except ChunkRejected as error:
            self.rejected_chunks += 1
            self.future_chunks += isinstance(error, FutureStamp)
            self.last_rejection = str(error)
            return self.last_rejection
        self.queue.push(chunk)
        self.accepted_chunks += 1
        self.inference_latency = float(inference_latency)
        return None

    def _move_name(self) -> str:
        return self._move.name if self._move else self._pending_move['name']

    def move_to(
        self,
        name: str,
        waypoints: list[np.ndarray],
        speeds: np.ndarray,
        period: float,
        then: str = 'stop',
        min_duration: float = 1.0,
    ) -> str | None:
        """Move through `waypoints` (each (D,), clipped into the limits as the motors' own
        position limits would) at most at `speeds` (D,, per second); then follow chunks or stop.
        Returns why it cannot (a tracking fault waits for resume)."""
        if self.fault is not None:
            return f'{self.state.value}: call ~/resume first'
        self.queue.clear()
        self._stopped = False
        self._pending_move = {
            'name': name,
            'waypoints': [
                self.safety.clip_to_limits(np.asarray(w, dtype=np.float64)) for w in waypoints
            ],
            'speeds': np.asarray(speeds, dtype=np.float64),
            'period': period,
            'then': then,
            'min_duration': min_duration,
        }
        self._move = None
        if self._last_command is not None:
            self._begin_move()
        return None

    def _begin_move(self) -> None:
        self._move = PoseMove(start=self._last_command.copy(), **self._pending_move)
        self._pending_move = None
        self.tracking.reset()

    def _end_move(self) -> None:
        then = self._move.then
        self._move = None
        self.moves_done += 1
        self._stopped = then == 'stop'
        self._restart()

    def stop(self) -> None:
        self._stopped = True
        self._move = self._pending_move = None
        self.queue.clear()

    def resume(self) -> None:
        """Leave stop and tracking fault. The held pose is re-based on the measured one, so
        whatever moved the arm meanwhile is not undone at full speed; the ramp starts again."""
        self._stopped = False
        self.fault = None
        self._move = self._pending_move = None
        if self._last_command is not None and self.has_measured_pose:
            self._last_command = self.safety.clip_to_limits(
                rebase(self._last_command, self.measured_pose())
            )
        self._restart()

    def _restart(self) -> None:
        self._ramp_ticks = 0
        self.tracking.reset()

    def _trip(self, fault: TrackingFault) -> None:
        self.fault = fault
        self._move = self._pending_move = None
        self.tracking_faults += 1
        self.queue.clear()
        self._last_command = self.safety.clip_to_limits(
            rebase(self._last_command, self.measured_pose())
        )

    def _ramp_scale(self) -> float:
        ramp = self.rules.start_ramp_ticks
        return 1.0 if ramp == 0 else min(1.0, (self._ramp_ticks + 1) / ramp)

    def _hold(self) -> TickResult:
        self.holds += 1
        return TickResult(self._last_command.copy(), fresh=False)

    def _record_step(self, target: np.ndarray) -> None:
        source = self.queue.source
        if self._previous is not None:
            chunk, previous = self._previous
            step = float(np.abs(target - previous)[~IS_GRIPPER].max())
            if source is not chunk:
                self.switches += 1
                self.switch_step_max = max(self.switch_step_max, step)
            else:
                self.chunk_step_max = max(self.chunk_step_max, step)
        self._previous = (source, target.copy())

    def tick(self, now: float) -> TickResult:
        """The command for time `now` (s on the node clock)."""
        self.ticks += 1
        late = (
            self._last_tick is not None and now - self._last_tick > self.rules.max_joint_state_age
        )
        self._last_tick = now
        if self._last_command is None:
            self.starting_ticks += 1  # before the first command: nothing to hold yet
            if not self.has_measured_pose or self._stale_arms(now):
                return TickResult(None, fresh=False)
            self._last_command = self.safety.clip_to_limits(self.measured_pose())
            self.queue.clear(idle_since=now)  # the arms hold from this first command on
            self._restart()
            if self._pending_move is not None:
                self._begin_move()
            return TickResult(self._last_command.copy(), fresh=False)
        if late:
            # The executor itself did not run for longer than a joint state may be old (CPU
            # starvation, a blocked publish): the states that arrived meanwhile are not handled
            # yet, so this tick cannot tell a silent driver; it holds and the next one judges.
            self.late_ticks += 1
            return self._hold()
        if self._note_stale(now):
            return self._hold()
        if self._stale:  # fresh states again: check where the arms are before moving them
            self._stale = ()
            self._restart()
            if self.fault is None:
                fault = self.tracking.gap_fault(self._last_command, self.measured_pose())
                if fault is not None:
                    self._trip(fault)
        if self.state in NEEDS_RESUME:
            return self._hold()
        if self._move is not None:
            return self._move_tick()
        target = self.queue.target(now)
        filtered = (
            None
            if target is None
            else self.safety.apply(
                target, self._last_command, self.measured_pose(), self._ramp_scale()
            )
        )
        if filtered is None:
            if target is None and self.queue.waiting:
                self.waits += 1
            elif self.fresh_ticks == 0:
                self.starting_ticks += 1
            else:
                self.stalls += 1
            return TickResult(self._last_command.copy(), fresh=False)
        fault = self.tracking.update(filtered)
        if fault is not None:
            self._trip(fault)
            return self._hold()
        self._record_step(target)
        self._ramp_ticks += 1
        self.fresh_ticks += 1
        self._last_command = filtered.command
        return TickResult(filtered.command.copy(), fresh=True)

    def hold_tick(self, now: float) -> None:
        """A tick on which nothing may be sent (the driver is being checked or brought up
        again, another node commands the arms): nothing moves on, but stale joint states are
        noticed, so the arms are checked against the held pose before anything moves again."""
        self.ticks += 1
        self._last_tick = now
        if self._last_command is None:
            return
        self.holds += 1
        self._note_stale(now)

    def _note_stale(self, now: float) -> bool:
        """Whether an arm's joint states are stale at `now`; counts each time they become so."""
        stale = self._stale_arms(now)
        if stale:
            self.stale_events += not self._stale
            self._stale = stale
        return bool(stale)

    def _move_tick(self) -> TickResult:
        """The next sample of the move, through the safety filter: a sample the step or the
        tracking bound had to clip is sent as clipped and tried again on the next tick."""
        target = self._move.peek()
        filtered = self.safety.apply(target, self._last_command, self.measured_pose())
        fault = self.tracking.update(filtered)
        if fault is not None:
            self._trip(fault)
            return self._hold()
        self.move_ticks += 1
        self._last_command = filtered.command
        if np.allclose(filtered.command, target, rtol=0.0, atol=1e-9):
            self._move.advance()
            if self._move.done:
                self._end_move()
        return TickResult(filtered.command.copy(), fresh=False)
