"""Conversions between ROS messages/time and the arrays of the ROS-free runtime."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time

from oft_msgs.msg import ActionChunk
from oft_policy_node import robot


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_to_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def ns_to_stamp(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def seconds_to_stamp(seconds: float) -> Time:
    return ns_to_stamp(round(seconds * 1e9))


def arm_command(command: np.ndarray, arm: str) -> tuple[list[float], float]:
    """The `arm`'s 6 joint targets (rad) and gripper motor angle (rad) from a (D,) command."""
    columns = command[robot.arm_columns(arm)]  # (7,)
    return [float(v) for v in columns[:-1]], float(robot.normalized_to_motor(columns[-1]))


def action_chunk_msg(
    stamp: Time,
    actions: np.ndarray,
    chunk_id: int,
    instruction: str,
    period: float,
    inference_latency: float,
    joint_names: Sequence[str] | None = None,
    num_steps: int | None = None,
) -> ActionChunk:
    """An ActionChunk of `actions` (K, D) in the robot layout. `joint_names` and `num_steps`
    default to the robot's and K; tests override them to build malformed chunks."""
    actions = np.asarray(actions, dtype=np.float32)
    msg = ActionChunk(
        chunk_id=chunk_id,
        instruction=instruction,
        period=float(period),
        joint_names=list(robot.action_joint_names() if joint_names is None else joint_names),
        num_steps=actions.shape[0] if num_steps is None else num_steps,
        actions=actions.ravel().tolist(),
        inference_latency=float(inference_latency),
    )
    msg.header.stamp = stamp
    return msg
