"""The leader arms (WidowX 250) as a source of targets for the followers, ROS-free.

Trossen's teleoperation copies the leader's six arm joints to the follower and maps the
gripper joint angle by its closed and open angles (Interbotix/aloha, constants.py:
LEADER2FOLLOWER_JOINT_FN, FOLLOWER_GRIPPER_JOINT_UNNORMALIZE_FN of
LEADER_GRIPPER_JOINT_NORMALIZE_FN).
Here the leader's angle becomes the policy's normalised opening and the chunk executor turns
it into the follower's motor angle with the robot profile's calibration: the same map, with the
executor's limits, tracking check and bring-up in between. The leader's joint states are also
the authors' actions (ALOHA's record_episodes.py writes them as /action), which the converter
takes when a bag has them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oft_policy_node import robot
from oft_policy_node.runtime.sensor_decoding import joint_values


def leader_target(
    names: Sequence[str], positions: Sequence[float], gripper: robot.LeaderGripper
) -> np.ndarray:
    """A leader's JointState (mapped by name) -> (7,): 6 arm joints (rad) and the opening."""
    values = joint_values(names, positions, (*robot.ARM_JOINTS, robot.GRIPPER))
    values[-1] = gripper.opening(values[-1])
    return values
