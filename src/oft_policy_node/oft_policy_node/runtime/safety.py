"""The safety layer between the policy and the motors (the Interbotix driver checks nothing).

Two gates:
* `validate_chunk`: a chunk is accepted whole or rejected whole, with a reason: wrong joint
  names or order, wrong shape, no rows, a period that is not a positive finite number, any
  NaN/inf, and a stamp ahead of the executor's clock by more than `max_future_stamp` (an
  observation cannot come from the future: the publisher's clock is ahead of ours, or it lies).
  A rejected chunk never reaches the queue.
* `SafetyFilter.apply`: every command is clipped to the joint limits (grippers to 0..1), moves
  at most `max_step` per tick from the previous command (the velocity limit times the period,
  scaled down during the start ramp), and stays within `tracking_tolerance` of the measured
  pose (LeRobot's `max_relative_target`): a blocked, lagging or torqued-off arm cannot let the
  command run away from where the arm really is. Grippers are bounded on one side only: a
  gripper that is more open than commanded is closing on an object, which is its job (its
  force is bounded by the current limit the bring-up sets), so only a command more open than
  the measured opening plus the tolerance is clipped. A non-finite target is refused (the
  caller holds the pose).

ROS-free; vectors are in the action layout of robot.py, (D,) = 14.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oft_policy_node import robot
from oft_policy_node.runtime.chunk_queue import Chunk

# Defaults that suit the vx300s at 25 Hz, from measurement in the MuJoCo ALOHA with the committed
# pot policy: over 36 episodes the step-limited command led the measured arm joints by at most
# 0.30 rad, and by 0.27 rad for 5 ticks in a row (a wrist_angle; forearm_roll 0.22), in one
# process; through the graph a joint state is up to a tick older, one more step (0.13 rad) at
# full speed, and 0.3 tripped a false fault on a forearm roll (docs/runtime.md). The grippers
# led by up to 0.52 while opening, 0.29 for 5 ticks.
ARM_TRACKING_TOLERANCE = 0.5  # rad, per arm joint
GRIPPER_TRACKING_TOLERANCE = 0.6  # normalised opening, the opening side only


class ChunkRejected(ValueError):
    """A chunk the executor must not use; the message says why."""


class FutureStamp(ChunkRejected):
    """A chunk stamped ahead of the executor's clock by more than the tolerance."""


def validate_chunk(
    stamp: float,
    period: float,
    joint_names: Sequence[str],
    num_steps: int,
    actions: Sequence[float] | np.ndarray,
    received: float,
    max_future_stamp: float = math.inf,
    chunk_id: int = 0,
    prefix_steps: int = 0,
    prefix_of: int = 0,
) -> Chunk:
    """Check a chunk that arrived at `received` (s, executor clock) against the robot's
    action layout and the clock, and build a `Chunk`."""
    expected = robot.action_joint_names()
    if list(joint_names) != expected:
        raise ChunkRejected(
            f'joint_names {list(joint_names)} differ from the robot layout {expected}'
        )
    if not (math.isfinite(period) and period > 0.0):
        raise ChunkRejected(f'period {period!r} must be a finite number of seconds > 0')
    if not math.isfinite(stamp):
        raise ChunkRejected(f'stamp {stamp!r} is not a finite time')
    if stamp - received > max_future_stamp:
        raise FutureStamp(
            f'stamp {stamp:.3f} s lies {stamp - received:.3f} s ahead of the '
            f'executor clock ({received:.3f} s), more than max_future_stamp '
            f'{max_future_stamp} s: are the policy and robot clocks synchronised?'
        )
    if num_steps < 1:
        raise ChunkRejected(f'num_steps {num_steps} must be >= 1')
    flat = np.asarray(actions, dtype=np.float64).ravel()
    if flat.size != num_steps * len(expected):
        raise ChunkRejected(
            f'{flat.size} actions do not fill num_steps x D = {num_steps} x {len(expected)}'
        )
    if not np.isfinite(flat).all():
        raise ChunkRejected(f'{int((~np.isfinite(flat)).sum())} actions are NaN or infinite')
    if not 0 <= prefix_steps < num_steps:
        raise ChunkRejected(
            f'prefix_steps {prefix_steps} must leave a predicted row of num_steps {num_steps}'
        )
    return Chunk(
        stamp=stamp,
        period=period,
        actions=flat.reshape(num_steps, len(expected)),
        received=received,
        chunk_id=chunk_id,
        prefix_steps=prefix_steps,
        prefix_of=prefix_of,
    )


def _per_dimension(arm: Sequence[float] | float, gripper: float) -> np.ndarray:
    """(D,) from one value per arm joint (or one for all six) and one for the grippers."""
    arm = np.broadcast_to(np.asarray(arm, dtype=np.float64), (len(robot.ARM_JOINTS),))
    return np.tile(np.append(arm, gripper), len(robot.ARMS))


@dataclass(frozen=True)
class SafetyLimits:
    lower: np.ndarray  # (D,)
    upper: np.ndarray  # (D,)
    max_step: np.ndarray  # (D,) per tick, > 0
    tracking_tolerance: np.ndarray  # (D,) > 0: arm joints both ways, grippers opening only

    @classmethod
    def for_robot(
        cls,
        rate_hz: float,
        velocity_scale: float = 1.0,
        arm_tolerance: Sequence[float] | float = ARM_TRACKING_TOLERANCE,
        gripper_tolerance: float = GRIPPER_TRACKING_TOLERANCE,
    ) -> SafetyLimits:
        """The vx300s limits with the velocity limits scaled by `velocity_scale` (0, 1];
        `arm_tolerance` is one value per arm joint (waist .. wrist_rotate) or one for all."""
        if not (math.isfinite(rate_hz) and rate_hz > 0.0):
            raise ValueError(f'rate_hz {rate_hz!r} must be a finite number > 0')
        if not (math.isfinite(velocity_scale) and 0.0 < velocity_scale <= 1.0):
            raise ValueError(f'velocity_scale {velocity_scale!r} must be in (0, 1]')
        arm = np.atleast_1d(np.asarray(arm_tolerance, dtype=np.float64))
        if arm.shape not in ((1,), (len(robot.ARM_JOINTS),)) or not (
            np.isfinite(arm).all() and (arm > 0.0).all()
        ):
            raise ValueError(
                f'tracking tolerance {arm_tolerance!r} must be one or '
                f'{len(robot.ARM_JOINTS)} finite numbers > 0 (rad, '
                f'{", ".join(robot.ARM_JOINTS)})'
            )
        if not (math.isfinite(gripper_tolerance) and gripper_tolerance > 0.0):
            raise ValueError(
                f'gripper tracking tolerance {gripper_tolerance!r} must be a finite number > 0'
            )
        lower, upper = robot.action_limits()
        return cls(
            lower,
            upper,
            robot.velocity_limits() * velocity_scale / rate_hz,
            _per_dimension(arm, gripper_tolerance),
        )


GRIPPER_COLUMNS = np.array([robot.arm_columns(arm).stop - 1 for arm in robot.ARMS])
IS_GRIPPER = np.isin(np.arange(robot.ACTION_DIM), GRIPPER_COLUMNS)  # (D,) bool


def tracking_error(command: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """(D,) how far `command` leads `measured`, signed; for grippers only a command more open
    than measured counts (closing on an object is the gripper's job), else 0."""
    lead = command - measured
    return np.where(IS_GRIPPER, np.maximum(lead, 0.0), lead)


@dataclass(frozen=True)
class Filtered:
    command: np.ndarray  # (D,) within the limits, the step and the tracking bounds
    beyond_tolerance: np.ndarray  # (D,) bool: the measured-pose bound had to clip
    tracking_error: np.ndarray  # (D,) how far the step-limited target was from measured
    # (signed, target - measured; for grippers only the opening side counts, else 0)


class SafetyFilter:
    """Clamps targets into the limits, the per-tick step and the tracking bound; counts what it
    changed."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self.clamped_commands = 0  # commands that differed from their target

    def clip_to_limits(self, pose: np.ndarray) -> np.ndarray:
        return np.clip(pose, self.limits.lower, self.limits.upper)

    def tracking_bounds(self, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where a command may lie given the measured pose (D,): arm joints measured +- the
        tolerance; grippers anything up to the measured opening + the tolerance."""
        tolerance = self.limits.tracking_tolerance
        return (np.where(IS_GRIPPER, -np.inf, measured - tolerance), measured + tolerance)

    def apply(
        self,
        target: np.ndarray,
        previous: np.ndarray,
        measured: np.ndarray,
        step_scale: float = 1.0,
    ) -> Filtered | None:
        """The command for `target` (D,) after `previous` (D,, within limits), given the
        `measured` pose (D,); the step limit is scaled by `step_scale` in (0, 1] (the start
        ramp). None if the target is not a finite (D,) vector."""
        target = np.asarray(target, dtype=np.float64)
        if target.shape != self.limits.lower.shape or not np.isfinite(target).all():
            return None
        max_step = self.limits.max_step * step_scale
        stepped = previous + np.clip(self.clip_to_limits(target) - previous, -max_step, max_step)
        low, high = self.tracking_bounds(measured)
        command = self.clip_to_limits(np.clip(stepped, low, high))
        error = tracking_error(stepped, measured)
        if not np.array_equal(command, target):
            self.clamped_commands += 1
        return Filtered(command, (stepped < low) | (stepped > high), error)
