"""A driver stand-in for both follower arms, as its own process: publishes joint_states in the
vx300s layout at 50 Hz (wall clock) and takes every joint_positions command as the new
position (a perfect arm), or with --still stays where it is whatever it is told (an arm torqued
off, or held). Killing it is a driver whose joint states stop.

    python -m tests.peers.perfect_arm '[0.0, -0.5, ...]' [--still]   # the (D,) start pose
"""

from __future__ import annotations

import json
import sys

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState

from oft_policy_node import robot
from tests.peers import spin_until_interrupted
from tests.runtime_rig import interbotix_joint_state


class PerfectArm(Node):
    def __init__(self, pose: np.ndarray, follow: bool = True) -> None:
        super().__init__('perfect_arm')
        self.pose = pose.copy()  # (D,) gripper as normalised opening
        self.follow = follow
        self._state_publishers = {
            arm: self.create_publisher(JointState, robot.joint_states_topic(arm), 10)
            for arm in robot.ARMS
        }
        for arm in robot.ARMS:
            self.create_subscription(
                JointState,
                robot.joint_positions_topic(arm),
                lambda msg, arm=arm: self._on_command(arm, msg),
                10,
            )
        self.create_timer(0.02, self._publish)

    def _on_command(self, arm: str, msg: JointState) -> None:
        if not self.follow:
            return
        columns = self.pose[robot.arm_columns(arm)]
        columns[:6] = msg.position[:6]
        columns[6] = robot.motor_to_normalized(msg.position[6])

    def _publish(self) -> None:
        for arm, publisher in self._state_publishers.items():
            publisher.publish(interbotix_joint_state(self.pose[robot.arm_columns(arm)]))


def main() -> None:
    pose = np.array(json.loads(sys.argv[1]), dtype=np.float64)
    spin_until_interrupted(lambda: PerfectArm(pose, follow='--still' not in sys.argv[2:]))


if __name__ == '__main__':
    main()
