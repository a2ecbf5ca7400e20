"""The safety layer between the policy and the motors (the Interbotix driver checks nothing).

Two gates:
* `validate_chunk`: a chunk is accepted whole or rejected whole, with a reason: wrong joint
  names or order, wrong shape, no rows, a period that is not a positive finite number, and any
  NaN/inf. A rejected chunk never reaches the queue.
* `SafetyFilter.apply`: every command is clipped to the joint limits (grippers to 0..1) and moves
  at most `max_step` per tick from the previous command (the velocity limit times the period).
  A non-finite target is refused (the caller holds the pose).

ROS-free; vectors are in the action layout of robot.py, (D,) = 14.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oft_policy_node import robot
from oft_policy_node.runtime.chunk_queue import Chunk


class ChunkRejected(ValueError):
    """A chunk the executor must not use; the message says why."""


def validate_chunk(stamp: float, period: float, joint_names: Sequence[str], num_steps: int,
                   actions: Sequence[float] | np.ndarray) -> Chunk:
    """Check a received chunk against the robot's action layout and build a `Chunk`."""
    expected = robot.action_joint_names()
    if list(joint_names) != expected:
        raise ChunkRejected(f'joint_names {list(joint_names)} differ from the robot layout '
                            f'{expected}')
    if not (math.isfinite(period) and period > 0.0):
        raise ChunkRejected(f'period {period!r} must be a finite number of seconds > 0')
    if not math.isfinite(stamp):
        raise ChunkRejected(f'stamp {stamp!r} is not a finite time')
    if num_steps < 1:
        raise ChunkRejected(f'num_steps {num_steps} must be >= 1')
    flat = np.asarray(actions, dtype=np.float64).ravel()
    if flat.size != num_steps * len(expected):
        raise ChunkRejected(f'{flat.size} actions do not fill num_steps x D = '
                            f'{num_steps} x {len(expected)}')
    if not np.isfinite(flat).all():
        raise ChunkRejected(f'{int((~np.isfinite(flat)).sum())} actions are NaN or infinite')
    return Chunk(stamp=stamp, period=period, actions=flat.reshape(num_steps, len(expected)))


@dataclass(frozen=True)
class SafetyLimits:
    lower: np.ndarray  # (D,)
    upper: np.ndarray  # (D,)
    max_step: np.ndarray  # (D,) per tick, > 0

    @classmethod
    def for_robot(cls, rate_hz: float, velocity_scale: float = 1.0) -> SafetyLimits:
        """The vx300s limits with the velocity limits scaled by `velocity_scale` (0, 1]."""
        if not (math.isfinite(rate_hz) and rate_hz > 0.0):
            raise ValueError(f'rate_hz {rate_hz!r} must be a finite number > 0')
        if not (math.isfinite(velocity_scale) and 0.0 < velocity_scale <= 1.0):
            raise ValueError(f'velocity_scale {velocity_scale!r} must be in (0, 1]')
        lower, upper = robot.action_limits()
        return cls(lower, upper, robot.velocity_limits() * velocity_scale / rate_hz)


class SafetyFilter:
    """Clamps targets into the limits and the per-tick step; counts what it changed."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self.clamped_commands = 0  # commands that differed from their target

    def clip_to_limits(self, pose: np.ndarray) -> np.ndarray:
        return np.clip(pose, self.limits.lower, self.limits.upper)

    def apply(self, target: np.ndarray, previous: np.ndarray) -> np.ndarray | None:
        """The command for `target` (D,) after `previous` (D,, within limits); None if the
        target is not a finite (D,) vector."""
        target = np.asarray(target, dtype=np.float64)
        if target.shape != self.limits.lower.shape or not np.isfinite(target).all():
            return None
        step = np.clip(self.clip_to_limits(target) - previous,
                       -self.limits.max_step, self.limits.max_step)
        command = self.clip_to_limits(previous + step)
        if not np.array_equal(command, target):
            self.clamped_commands += 1
        return command
