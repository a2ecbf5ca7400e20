"""Where the executor's commands go. Each backend sends one (D,) command per tick, both arms.

* `joint_positions`: per arm a sensor_msgs/JointState with the 6 arm joints and `gripper`
  (motor angle, rad) on robot.joint_positions_topic(arm); the MuJoCo simulation consumes it.
* `interbotix`: per arm a JointGroupCommand (name `arm`, 6 values) and a JointSingleCommand
  (name `gripper`, motor angle) for interbotix_xs_sdk. Its message package is imported only
  when this backend is chosen, so the rest of the stack runs without it.
"""

from __future__ import annotations

import importlib

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.node import Node
from sensor_msgs.msg import JointState

from oft_policy_node import robot
from oft_policy_node.ros_conversions import arm_command

COMMAND_QOS_DEPTH = 10


class JointPositionsBackend:
    def __init__(self, node: Node) -> None:
        self._publishers = {arm: node.create_publisher(
            JointState, robot.joint_positions_topic(arm), COMMAND_QOS_DEPTH)
            for arm in robot.ARMS}

    def send(self, command: np.ndarray, stamp: Time) -> None:
        for arm, publisher in self._publishers.items():
            joints, gripper = arm_command(command, arm)
            msg = JointState(name=[*robot.ARM_JOINTS, robot.GRIPPER],
                             position=[*joints, gripper])
            msg.header.stamp = stamp
            publisher.publish(msg)


class InterbotixBackend:
    def __init__(self, node: Node) -> None:
        try:
            messages = importlib.import_module('interbotix_xs_msgs.msg')
        except ImportError as error:
            raise RuntimeError(
                'backend "interbotix" needs the interbotix_xs_msgs package: source the '
                'Interbotix workspace (interbotix_ros_core) before starting the executor, or '
                'use backend:=joint_positions for the simulation') from error
        self._group_type = messages.JointGroupCommand
        self._single_type = messages.JointSingleCommand
        self._publishers = {arm: (
            node.create_publisher(self._group_type, robot.joint_group_topic(arm),
                                  COMMAND_QOS_DEPTH),
            node.create_publisher(self._single_type, robot.joint_single_topic(arm),
                                  COMMAND_QOS_DEPTH)) for arm in robot.ARMS}

    def send(self, command: np.ndarray, stamp: Time) -> None:
        del stamp  # the Interbotix commands carry no header
        for arm, (group, single) in self._publishers.items():
            joints, gripper = arm_command(command, arm)
            group.publish(self._group_type(name='arm', cmd=joints))
            single.publish(self._single_type(name=robot.GRIPPER, cmd=gripper))


BACKENDS = {'joint_positions': JointPositionsBackend, 'interbotix': InterbotixBackend}
