"""The chunk executor without ROS: measured pose in, chunks in, one safe command per tick out.

The node (chunk_executor.py) only converts messages and drives `tick` from its timer. Rules:
* No command before both arms' measured pose is known; the first command is that pose (clipped
  into the limits), so starting the executor never makes the arms jump.
* Each tick takes the queue's target for now and passes it through the safety filter. No valid
  target (queue empty, chunks expired or past the watchdog) -> the last command is repeated and
  a stall is counted (a wait instead while the `sync` merge rule holds for its next chunk).
* `stop` holds the pose, drops queued chunks and ignores new ones until `resume`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oft_policy_node import robot
from oft_policy_node.runtime.chunk_queue import ChunkQueue
from oft_policy_node.runtime.safety import ChunkRejected, SafetyFilter, validate_chunk


class ExecutorState(enum.Enum):
    WAITING_FOR_POSE = 'waiting for joint states'
    RUNNING = 'running'
    STOPPED = 'stopped'


@dataclass(frozen=True)
class TickResult:
    command: np.ndarray | None  # (D,) robot units, None while the pose is unknown
    fresh: bool  # True when the command follows a chunk target, False when holding


class ExecutorCore:
    def __init__(self, queue: ChunkQueue, safety: SafetyFilter) -> None:
        self.queue = queue
        self.safety = safety
        self._measured: dict[str, np.ndarray] = {}  # arm -> (7,)
        self._last_command: np.ndarray | None = None  # (D,)
        self._stopped = False
        self.ticks = 0
        self.fresh_ticks = 0
        self.stalls = 0
        self.waits = 0  # held ticks of the `sync` merge rule's pause for the next chunk
        self.accepted_chunks = 0
        self.rejected_chunks = 0
        self.ignored_chunks = 0  # arrived while stopped
        self.last_rejection = ''
        self.inference_latency = float('nan')  # s, of the newest accepted chunk

    @property
    def state(self) -> ExecutorState:
        if self._last_command is None:
            return ExecutorState.WAITING_FOR_POSE
        return ExecutorState.STOPPED if self._stopped else ExecutorState.RUNNING

    @property
    def has_measured_pose(self) -> bool:
        return set(self._measured) == set(robot.ARMS)

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._last_command is None else self._last_command.copy()

    def set_measured_arm(self, arm: str, state: np.ndarray) -> None:
        """The measured (7,) pose of one arm: 6 joints (rad) + gripper opening (0..1)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (len(robot.ARM_JOINTS) + 1,) or not np.isfinite(state).all():
            raise ValueError(f'measured pose of the {arm} arm must be 7 finite values, '
                             f'got {state!r}')
        self._measured[arm] = state

    def receive_chunk(self, stamp: float, period: float, joint_names: Sequence[str],
                      num_steps: int, actions: Sequence[float] | np.ndarray,
                      inference_latency: float) -> str | None:
        """Validate and queue a chunk; returns the rejection reason, or None when accepted."""
        if self._stopped:
            self.ignored_chunks += 1
            return 'the executor is stopped; call ~/resume'
        try:
            chunk = validate_chunk(stamp, period, joint_names, num_steps, actions)
        except ChunkRejected as error:
            self.rejected_chunks += 1
            self.last_rejection = str(error)
            return self.last_rejection
        self.queue.push(chunk)
        self.accepted_chunks += 1
        self.inference_latency = float(inference_latency)
        return None

    def stop(self) -> None:
        self._stopped = True
        self.queue.clear()

    def resume(self) -> None:
        self._stopped = False

    def tick(self, now: float) -> TickResult:
        """The command for time `now` (s on the node clock)."""
        self.ticks += 1
        if self._last_command is None:
            if not self.has_measured_pose:
                return TickResult(None, fresh=False)
            pose = np.concatenate([self._measured[arm] for arm in robot.ARMS])
            self._last_command = self.safety.clip_to_limits(pose)
            return TickResult(self._last_command.copy(), fresh=False)
        target = None if self._stopped else self.queue.target(now)
        command = None if target is None else self.safety.apply(target, self._last_command)
        if command is None:
            if target is None and self.queue.waiting:
                self.waits += 1
            else:
                self.stalls += 1
            return TickResult(self._last_command.copy(), fresh=False)
        self.fresh_ticks += 1
        self._last_command = command
        return TickResult(command.copy(), fresh=True)
