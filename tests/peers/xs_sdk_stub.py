"""A stand-in for interbotix_xs_sdk's xs_sdk on both follower arms, over real DDS: it serves
the four bring-up services with the names and types the real node creates
(interbotix_xs_sdk/src/xs_sdk_obj.cpp: reboot_motors, set_operating_modes,
set_motor_registers, torque_enable under the arm's namespace), records every call and every
command with the time it arrived, and is a perfect arm: its joint_states (vx300s layout)
report the last commanded position. Needs the test build of interbotix_xs_msgs
(tests/interface_build.py)."""

from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState

from oft_policy_node import robot

SERVICE_TYPES = {
    'reboot_motors': 'Reboot',
    'set_operating_modes': 'OperatingModes',
    'set_motor_registers': 'RegisterValues',
    'torque_enable': 'TorqueEnable',
}


class XsSdkStub(Node):
    def __init__(
        self,
        context: object,
        pose: np.ndarray,
        omit: tuple[str, ...] = (),
        state_period: float = 0.02,
    ) -> None:
        """`pose` (D,) is where the arms stand (gripper as normalised opening); services named
        in `omit` are not offered (a driver that lacks them, or is not running)."""
        import interbotix_xs_msgs.msg as messages
        import interbotix_xs_msgs.srv as services

        super().__init__('xs_sdk_stub', context=context)
        self.pose = np.asarray(pose, dtype=np.float64).copy()
        self.calls: list[tuple[float, str, dict]] = []  # (monotonic s, service, request)
        self.commands: list[tuple[float, str, str, np.ndarray]] = []  # (s, arm, kind, cmd)
        self._states = {
            arm: self.create_publisher(JointState, robot.joint_states_topic(arm), 10)
            for arm in robot.ARMS
        }
        for arm in robot.ARMS:
            for service, type_name in SERVICE_TYPES.items():
                if service in omit:
                    continue
                srv_type = getattr(services, type_name)
                name = robot.driver_service(arm, service)
                self.create_service(
                    srv_type,
                    name,
                    lambda request, response, name=name: self._record(name, request, response),
                )
            self.create_subscription(
                messages.JointGroupCommand,
                robot.joint_group_topic(arm),
                lambda msg, arm=arm: self._on_group(arm, msg),
                50,
            )
            self.create_subscription(
                messages.JointSingleCommand,
                robot.joint_single_topic(arm),
                lambda msg, arm=arm: self._on_single(arm, msg),
                50,
            )
        self.create_timer(state_period, self._publish_states)

    def _record(self, name: str, request: object, response: object) -> object:
        fields = {field: getattr(request, field) for field in request.get_fields_and_field_types()}
        self.calls.append((time.monotonic(), name, fields))
        return response

    def _on_group(self, arm: str, msg: object) -> None:
        assert msg.name == 'arm', msg.name
        self.commands.append((time.monotonic(), arm, 'group', np.array(msg.cmd)))
        self.pose[robot.arm_columns(arm)][:6] = msg.cmd

    def _on_single(self, arm: str, msg: object) -> None:
        assert msg.name == robot.GRIPPER, msg.name
        self.commands.append((time.monotonic(), arm, 'single', np.array([msg.cmd])))
        self.pose[robot.arm_columns(arm).stop - 1] = robot.motor_to_normalized(msg.cmd)

    def _publish_states(self) -> None:
        from tests.runtime_rig import interbotix_joint_state

        for arm, publisher in self._states.items():
            publisher.publish(interbotix_joint_state(self.pose[robot.arm_columns(arm)]))

    def group_commands(self, arm: str) -> np.ndarray:
        """(N, 6) the arm commands received for `arm`, in order."""
        rows = [cmd for _, a, kind, cmd in self.commands if a == arm and kind == 'group']
        return np.array(rows).reshape(-1, len(robot.ARM_JOINTS))
