"""Slow, bounded moves to a named pose (the start pose before the policy, the sleep pose at the
end), sampled once per control tick.

Trossen's ALOHA scripts move between poses with `move_arms` / `move_grippers`
(Interbotix/aloha, aloha/robot_utils.py): a straight line in joint space over a fixed
`move_time`, sent at DT. Here the path is the same straight line but its duration follows from
the distance: a cosine speed profile (zero speed at both ends, so the arm is not jerked into
and out of the move) whose peak stays under `speeds`, and never shorter than `min_duration`.
The executor sends each sample through its safety filter (limits, step, tracking bound), so a
blocked arm trips a tracking fault mid-move like anywhere else.

ROS-free; poses are (D,) in the executor's units (arm joints in rad, grippers 0..1 opening).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from oft_policy_node import robot

# The cosine profile's peak speed is pi/2 times its mean speed.
PEAK_TO_MEAN = math.pi / 2
# Wall seconds the executor's exit (the move to the sleep pose) may take by default: the
# chunk_executor parameter's default, and what whoever stops the executor waits for before
# escalating (the launch graph, the test fixtures). With sim time slowed, the move's wall time
# grows with it.
EXIT_TIMEOUT = 15.0


def both_arms(arm_pose: list[float] | np.ndarray, gripper: float) -> np.ndarray:
    """(D,) from one arm's 6 joint values (used for both arms, as Trossen's START_ARM_POSE is)
    and a gripper opening."""
    arm_pose = np.asarray(arm_pose, dtype=np.float64)
    if arm_pose.shape != (len(robot.ARM_JOINTS),) or not np.isfinite(arm_pose).all():
        raise ValueError(
            f'a pose is {len(robot.ARM_JOINTS)} finite joint values '
            f'({", ".join(robot.ARM_JOINTS)}), got {arm_pose.tolist()!r}'
        )
    return np.tile(np.append(arm_pose, gripper), len(robot.ARMS))


@dataclass
class PoseMove:
    """The way from `start` through `waypoints` (each (D,)), one straight segment after another
    (Trossen's sleep goes home first, then to sleep); `then` says what the executor does after
    the last sample: 'follow' chunks or 'stop' (hold until ~/resume)."""

    name: str
    start: np.ndarray
    waypoints: list[np.ndarray]
    speeds: np.ndarray  # (D,) peak speed per dimension, per second
    period: float  # s per tick
    then: str = 'stop'
    min_duration: float = 1.0  # s per segment
    _path: np.ndarray = field(init=False, repr=False)
    _index: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.then not in ('follow', 'stop'):
            raise ValueError(f"then must be 'follow' or 'stop', got {self.then!r}")
        segments, here = [], np.asarray(self.start, dtype=np.float64)
        for waypoint in self.waypoints:
            segments.append(self._segment(here, waypoint))
            here = waypoint
        self._path = np.concatenate(segments)  # (steps, D)

    def _segment(self, start: np.ndarray, target: np.ndarray) -> np.ndarray:
        distance = np.abs(target - start)
        duration = max(
            float(np.max(distance / self.speeds)) * PEAK_TO_MEAN, self.min_duration, self.period
        )
        steps = math.ceil(duration / self.period - 1e-9)
        phase = np.arange(1, steps + 1) / steps  # (steps,) in (0, 1]
        progress = (1.0 - np.cos(math.pi * phase)) / 2.0
        return start + progress[:, None] * (target - start)

    @property
    def target(self) -> np.ndarray:
        return self._path[-1].copy()

    @property
    def duration(self) -> float:
        return len(self._path) * self.period

    @property
    def done(self) -> bool:
        return self._index >= len(self._path)

    def peek(self) -> np.ndarray:
        """The sample to send next (the target once done)."""
        return self._path[min(self._index, len(self._path) - 1)].copy()

    def advance(self) -> None:
        self._index += 1
