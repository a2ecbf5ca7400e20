"""Where the executor's commands go. Each backend sends one (D,) command per tick, both arms,
once it is `ready`.

* `joint_positions`: per arm a sensor_msgs/JointState with the 6 arm joints and `gripper`
  (motor angle, rad) on robot.joint_positions_topic(arm); the MuJoCo simulation consumes it.
  Ready at once.
* `interbotix`: per arm a JointGroupCommand (name `arm`, 6 values) and a JointSingleCommand
  (name `gripper`, motor angle) for interbotix_xs_sdk. Ready only after the bring-up
  (runtime/arm_bringup.py) has called every xs_sdk service in order; a call that is not served
  or not answered within `bringup_timeout` stops the bring-up for good, with the reason, and
  nothing is ever commanded. Its message package is imported only when this backend is chosen,
  so the rest of the stack runs without it.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState

from oft_policy_node import robot
from oft_policy_node.ros_conversions import arm_command
from oft_policy_node.runtime.arm_bringup import BringupSequence, follower_bringup

COMMAND_QOS_DEPTH = 10
BRINGUP_POLL_S = 0.05


class JointPositionsBackend:
    ready = True
    failure: str | None = None
    status = 'ready'

    def __init__(self, node: Node, params: Mapping[str, Any]) -> None:
        del params  # the simulation needs no bring-up
        self._publishers = {
            arm: node.create_publisher(
                JointState, robot.joint_positions_topic(arm), COMMAND_QOS_DEPTH
            )
            for arm in robot.ARMS
        }

    def send(self, command: np.ndarray, stamp: Time) -> None:
        for arm, publisher in self._publishers.items():
            joints, gripper = arm_command(command, arm)
            msg = JointState(name=[*robot.ARM_JOINTS, robot.GRIPPER], position=[*joints, gripper])
            msg.header.stamp = stamp
            publisher.publish(msg)


def _import_interbotix(kind: str) -> Any:
    try:
        return importlib.import_module(f'interbotix_xs_msgs.{kind}')
    except ImportError as error:
        raise RuntimeError(
            'backend "interbotix" needs the interbotix_xs_msgs package: source the '
            'Interbotix workspace (interbotix_ros_core) before starting the executor, or '
            'use backend:=joint_positions for the simulation'
        ) from error


class InterbotixBackend:
    def __init__(self, node: Node, params: Mapping[str, Any]) -> None:
        messages, services = _import_interbotix('msg'), _import_interbotix('srv')
        self._node = node
        self._group_type = messages.JointGroupCommand
        self._single_type = messages.JointSingleCommand
        self._publishers = {
            arm: (
                node.create_publisher(
                    self._group_type, robot.joint_group_topic(arm), COMMAND_QOS_DEPTH
                ),
                node.create_publisher(
                    self._single_type, robot.joint_single_topic(arm), COMMAND_QOS_DEPTH
                ),
            )
            for arm in robot.ARMS
        }
        self._sequence = BringupSequence(follower_bringup(params['gripper_current_limit']))
        self._timeout = params['bringup_timeout']
        self._clients = {}
        for call in self._sequence.calls:
            if call.name not in self._clients:
                self._clients[call.name] = node.create_client(
                    getattr(services, call.srv_type), call.name
                )
        self._future = None
        self._deadline = time.monotonic() + self._timeout
        # The driver answers in wall time whatever clock the node runs on (sim time stops).
        self._timer = node.create_timer(
            BRINGUP_POLL_S, self._step, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        node.get_logger().info(f'bring-up of the arms: {len(self._sequence.calls)} xs_sdk calls')

    @property
    def ready(self) -> bool:
        return self._sequence.done

    @property
    def failure(self) -> str | None:
        return self._sequence.failure

    @property
    def status(self) -> str:
        if self.failure:
            return self.failure
        call = self._sequence.current
        return 'ready' if call is None else f'bringing up {self._sequence.progress}: {call.name}'

    def _step(self) -> None:
        call = self._sequence.current
        if call is None:
            self._timer.cancel()
            return
        now = time.monotonic()
        if self._future is None:
            client = self._clients[call.name]
            if client.service_is_ready():
                request = client.srv_type.Request(**call.request)
                self._future = client.call_async(request)
                self._deadline = now + self._timeout
            elif now > self._deadline:
                self._fail(
                    f'the service is not offered after {self._timeout} s (is xs_sdk '
                    f'running in namespace /{robot.arm_namespace(call.arm)}?)'
                )
            return
        if self._future.done():
            error = self._future.exception()
            if error is not None:
                self._fail(f'the call raised {error!r}')
                return
            self._node.get_logger().info(f'bring-up {self._sequence.progress}: {call.describe()}')
            self._future = None
            self._sequence.advance()
            self._deadline = now + self._timeout
            if self._sequence.done:
                self._node.get_logger().info(
                    'bring-up done: the arms are in position mode, '
                    'the grippers current-limited, torque on'
                )
        elif now > self._deadline:
            self._fail(f'no response within {self._timeout} s')

    def _fail(self, reason: str) -> None:
        self._sequence.fail(reason)
        self._timer.cancel()
        if self._future is not None:
            self._future.cancel()
        self._node.get_logger().error(self._sequence.failure)

    def send(self, command: np.ndarray, stamp: Time) -> None:
        del stamp  # the Interbotix commands carry no header
        for arm, (group, single) in self._publishers.items():
            joints, gripper = arm_command(command, arm)
            group.publish(self._group_type(name='arm', cmd=joints))
            single.publish(self._single_type(name=robot.GRIPPER, cmd=gripper))


BACKENDS = {'joint_positions': JointPositionsBackend, 'interbotix': InterbotixBackend}
