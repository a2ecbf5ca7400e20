"""Conversions between ROS messages/time and the arrays of the ROS-free runtime."""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time

from oft_msgs.msg import ActionChunk, CommittedChunk
from oft_policy_node import robot
from oft_policy_node.runtime.action_prefix import PlayedChunk
from oft_policy_node.runtime.chunk_queue import Chunk


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_to_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def ns_to_stamp(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def seconds_to_stamp(seconds: float) -> Time:
    return ns_to_stamp(round(seconds * 1e9))


def arm_command(
    command: np.ndarray, arm: str, gripper: robot.GripperCalibration = robot.ALOHA2_GRIPPER
) -> tuple[list[float], float]:
    """The `arm`'s 6 joint targets (rad) and gripper motor angle (rad, by `gripper`'s
    calibration) from a (D,) command."""
    columns = command[robot.arm_columns(arm)]  # (7,)
    return [float(v) for v in columns[:-1]], float(gripper.normalized_to_motor(columns[-1]))


def action_chunk_msg(
    stamp: Time,
    actions: np.ndarray,
    chunk_id: int,
    instruction: str,
    period: float,
    inference_latency: float,
    joint_names: Sequence[str] | None = None,
    num_steps: int | None = None,
    prefix_steps: int = 0,
    prefix_chunk_id: int = 0,
) -> ActionChunk:
    """An ActionChunk of `actions` (K, D) in the robot layout, its first `prefix_steps` rows
    given from chunk `prefix_chunk_id`. `joint_names` and `num_steps` default to the robot's
    and K; tests override them to build malformed chunks."""
    actions = np.asarray(actions, dtype=np.float32)
    msg = ActionChunk(
        chunk_id=chunk_id,
        instruction=instruction,
        period=float(period),
        joint_names=list(robot.action_joint_names() if joint_names is None else joint_names),
        num_steps=actions.shape[0] if num_steps is None else num_steps,
        actions=actions.ravel().tolist(),
        inference_latency=float(inference_latency),
        prefix_steps=prefix_steps,
        prefix_chunk_id=prefix_chunk_id,
    )
    msg.header.stamp = stamp
    return msg


def committed_chunk_msg(
    now: Time, chunk: Chunk | None, row: int, cached: CommittedChunk | None
) -> CommittedChunk:
    """CommittedChunk of the chunk played at `row` (None: nothing plays). `cached`: the last
    message, whose actions are reused while the chunk stays the same (converting K * D floats
    every tick would cost the control loop more than the rest of its tick)."""
    msg = cached
    if chunk is None:
        msg = CommittedChunk()
    elif cached is None or cached.chunk_id != chunk.chunk_id:
        msg = CommittedChunk(
            chunk_id=chunk.chunk_id,
            chunk_stamp=seconds_to_stamp(chunk.stamp),
            period=chunk.period,
            num_steps=chunk.num_steps,
            actions=array('f', chunk.actions.astype(np.float32).ravel().tobytes()),
        )
    msg.header.stamp = now
    msg.row = row if chunk is not None else 0
    return msg


def played_chunk(msg: CommittedChunk, received: float) -> PlayedChunk:
    """A CommittedChunk as the policy's planner reads it (chunk_id 0: the executor holds).
    ValueError when its actions do not fill its rows."""
    if msg.chunk_id == 0:
        return PlayedChunk(0, 0.0, msg.period or 1.0, 0, np.zeros((0, robot.ACTION_DIM)), received)
    actions = np.asarray(msg.actions, dtype=np.float64)
    if actions.size != msg.num_steps * robot.ACTION_DIM or msg.num_steps < 1 or msg.period <= 0:
        raise ValueError(
            f'{actions.size} actions for {msg.num_steps} rows of {robot.ACTION_DIM}, period '
            f'{msg.period}'
        )
    return PlayedChunk(
        msg.chunk_id,
        stamp_to_seconds(msg.chunk_stamp),
        msg.period,
        msg.row,
        actions.reshape(msg.num_steps, robot.ACTION_DIM),
        received,
    )
