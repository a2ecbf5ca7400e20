"""Tracking error: when the commanded pose keeps pulling away from the measured one.

The safety filter already keeps every command within the tracking tolerance of the measured
pose; this module decides when that has gone on too long to be a lag. A joint whose
step-limited target lies beyond the tolerance for `trip_ticks` consecutive ticks is blocked,
lagging badly or torqued off (ros2_controllers' JointTrajectoryController aborts on its path
tolerance for the same reason): the executor then re-bases on the measured pose, holds and
waits for ~/resume.

ROS-free; vectors are (D,) in the action layout of robot.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oft_policy_node import robot
from oft_policy_node.runtime.safety import IS_GRIPPER, Filtered, tracking_error


@dataclass(frozen=True)
class TrackingFault:
    joint: str  # e.g. follower_left/shoulder
    error: float  # target - measured (rad; grippers: normalised opening)
    tolerance: float
    ticks: int  # consecutive ticks beyond the tolerance; 0: found when states came back

    def describe(self) -> str:
        unit = '' if self.joint.endswith(robot.GRIPPER) else ' rad'
        when = f'for {self.ticks} ticks' if self.ticks else 'when its joint states came back'
        return (
            f'tracking error on {self.joint}: the target was {self.error:+.3f}{unit} from '
            f'the measured pose {when} (tolerance {self.tolerance}{unit}); holding the '
            f'measured pose until ~/resume'
        )


def rebase(command: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """The pose to hold after a fault, (D,): the measured arm joints (nothing left pushing
    against an obstacle: no wind-up) and, per gripper, the more closed of command and
    measurement (a gripper holding an object keeps its grip; a jammed one stops pushing)."""
    return np.where(IS_GRIPPER, np.minimum(command, measured), measured)


class TrackingMonitor:
    """Counts consecutive ticks beyond the tolerance per joint; reports the first trip."""

    def __init__(self, tolerance: np.ndarray, trip_ticks: int) -> None:
        if trip_ticks < 1:
            raise ValueError(f'tracking trip_ticks {trip_ticks!r} must be >= 1')
        self.tolerance = tolerance  # (D,)
        self.trip_ticks = trip_ticks
        self._beyond = np.zeros(robot.ACTION_DIM, dtype=np.int64)  # (D,) consecutive ticks
        self.peak_error = np.zeros(robot.ACTION_DIM)  # (D,) largest |error| seen

    def reset(self) -> None:
        self._beyond[:] = 0

    def update(self, filtered: Filtered) -> TrackingFault | None:
        self.peak_error = np.maximum(self.peak_error, np.abs(filtered.tracking_error))
        self._beyond = np.where(filtered.beyond_tolerance, self._beyond + 1, 0)
        joint = int(np.argmax(self._beyond))
        if self._beyond[joint] < self.trip_ticks:
            return None
        return TrackingFault(
            robot.action_joint_names()[joint],
            float(filtered.tracking_error[joint]),
            float(self.tolerance[joint]),
            int(self._beyond[joint]),
        )

    def gap_fault(self, command: np.ndarray, measured: np.ndarray) -> TrackingFault | None:
        """A fault if `command` is already beyond the tolerance of `measured` (used when joint
        states come back after a silence, before anything moves)."""
        error = tracking_error(command, measured)
        beyond = np.abs(error) > self.tolerance
        if not beyond.any():
            return None
        joint = int(np.argmax(np.abs(error) - self.tolerance))
        return TrackingFault(
            robot.action_joint_names()[joint], float(error[joint]), float(self.tolerance[joint]), 0
        )
