"""A stand-in for interbotix_xs_sdk's xs_sdk on both follower arms, over real DDS, built from
the driver's source and the Dynamixel control tables (not from this project's bring-up):

* Services with the names and types xs_sdk creates (interbotix_ros_core, interbotix_xs_sdk/src/
  xs_sdk_obj.cpp: reboot_motors, set_operating_modes, set_motor_registers,
  get_motor_registers, torque_enable under the arm's namespace; interbotix_xs_msgs/srv).
* Behind them `ServoBank`, the servos' registers, which outlive a driver restart as real
  servos do. As interbotix_xs_driver (src/xs_driver.cpp) and Dynamixel Workbench
  (dynamixel_workbench_toolbox) behave:
  - register names are looked up exactly (dynamixel_tool.cpp getControlItem: strlen + memcmp);
    an unknown name writes nothing and reads back an empty list;
  - `set_motor_registers` ignores whether the write took and answers anyway (xs_driver.cpp
    set_motor_registers); EEPROM items (Operating_Mode 11, Current_Limit 38) take a write only
    with Torque_Enable 0 (e-manual, XM430-W350 / XM540-W270; else Access Error, unseen);
  - `set_operating_modes` torques the joint off, writes the mode, torques it on; a mode switch
    sets Goal_Current to Current_Limit (e-manual, Operating Mode 11);
  - `reboot_motors` clears RAM (Goal_Current back to Current_Limit) and torques on with enable;
  - at start the driver writes the motor YAML's EEPROM values (aloha_vx300s.yaml: gripper
    Current_Limit 200, load_configs) and applies its modes: arm `position`, gripper
    `linear_position` (Trossen's follower modes YAML), torque on.
* A perfect arm: joint_states (vx300s layout) report the last commanded position. A gripper
  command that arrives while the driver has the gripper in `linear_position` is read as metres
  between the fingers, as the real driver would: it is recorded in `misread_commands`.

`restart()` is a driver restart: a new node (new DDS endpoints) over the same servos.
Needs the test build of interbotix_xs_msgs (tests/interface_build.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState

from oft_policy_node import robot

SERVICE_TYPES = {
    'reboot_motors': 'Reboot',
    'set_operating_modes': 'OperatingModes',
    'set_motor_registers': 'RegisterValues',
    'get_motor_registers': 'RegisterValues',
    'torque_enable': 'TorqueEnable',
}
# Operating Mode (11) per xs_driver mode name; linear_position and position both run the servo
# in position control (3), the driver converts the gripper's units.
MODE_REGISTER = {
    'current': 0,
    'velocity': 1,
    'position': 3,
    'linear_position': 3,
    'ext_position': 4,
    'current_based_position': 5,
    'pwm': 16,
}
EEPROM = ('Operating_Mode', 'Current_Limit')
# XM430-W350 / XM540-W270 defaults of the items the stub models (e-manual control tables).
FACTORY = {'Torque_Enable': 0, 'Operating_Mode': 3, 'Current_Limit': 1193, 'Goal_Current': 1193}
ARM_GROUP = ('waist', 'shoulder', 'elbow', 'forearm_roll', 'wrist_angle', 'wrist_rotate')
# The follower's driver configuration at start (Trossen's aloha config, aloha_vx300s.yaml).
YAML_MODES = {'arm': 'position', robot.GRIPPER: 'linear_position'}
YAML_EEPROM = {robot.GRIPPER: {'Current_Limit': 200}}


@dataclass
class ServoBank:
    """The registers of one arm's servos, by joint name (they survive a driver restart)."""

    registers: dict[str, dict[str, int]] = field(
        default_factory=lambda: {joint: dict(FACTORY) for joint in (*ARM_GROUP, robot.GRIPPER)}
    )
    rejected_writes: list[tuple[str, str, int]] = field(default_factory=list)

    def write(self, joint: str, reg: str, value: int) -> bool:
        servo = self.registers[joint]
        if reg not in servo or (reg in EEPROM and servo['Torque_Enable']):
            self.rejected_writes.append((joint, reg, value))
            return False
        servo[reg] = int(value)
        if reg == 'Operating_Mode':
            servo['Goal_Current'] = servo['Current_Limit']
        return True

    def read(self, joint: str, reg: str) -> int | None:
        return self.registers[joint].get(reg)


class XsSdkStub(Node):
    def __init__(
        self,
        context: object,
        pose: np.ndarray,
        omit: tuple[str, ...] = (),
        state_period: float = 0.02,
        servos: dict[str, ServoBank] | None = None,
        arm_namespaces: dict[str, str] | None = None,
        gripper: robot.GripperCalibration = robot.ALOHA2_GRIPPER,
        ignore_writes: bool = False,
        arms: tuple[str, ...] = robot.ARMS,
    ) -> None:
        """`pose` (D,) is where the arms stand (gripper as normalised opening); services named
        in `omit` are not offered (a driver that lacks them, or is not running); `servos` the
        arms' servos (new ones if None); `arm_namespaces` per arm ('follower_<arm>' if None);
        `ignore_writes`: set_motor_registers answers but writes nothing; `arms`: the arms this
        driver serves (one xs_sdk per arm on a real ALOHA)."""
        import interbotix_xs_msgs.msg as messages
        import interbotix_xs_msgs.srv as services

        super().__init__(f'xs_sdk_{"_".join(arms)}', context=context)
        self.arms = arms
        self._context = context
        self._options = {
            'omit': omit,
            'state_period': state_period,
            'arm_namespaces': arm_namespaces,
            'gripper': gripper,
            'ignore_writes': ignore_writes,
            'arms': arms,
        }
        self.pose = np.asarray(pose, dtype=np.float64).copy()
        self.servos = servos or {arm: ServoBank() for arm in robot.ARMS}
        self.namespaces = arm_namespaces or {arm: robot.arm_namespace(arm) for arm in robot.ARMS}
        self.gripper = gripper
        self.ignore_writes = ignore_writes
        self.calls: list[tuple[float, str, dict]] = []  # (monotonic s, service, request)
        self.commands: list[tuple[float, str, str, np.ndarray]] = []  # (s, arm, kind, cmd)
        self.misread_commands: list[tuple[str, float]] = []  # gripper cmds read as metres
        self.modes = {arm: dict.fromkeys((*ARM_GROUP, robot.GRIPPER)) for arm in robot.ARMS}
        for arm in arms:
            self._start_driver(arm)
        self._states = {
            arm: self.create_publisher(JointState, f'/{self.namespaces[arm]}/joint_states', 10)
            for arm in arms
        }
        for arm in arms:
            for service, type_name in SERVICE_TYPES.items():
                if service in omit:
                    continue
                name = f'/{self.namespaces[arm]}/{service}'
                handler = getattr(self, f'_{service}')
                self.create_service(
                    getattr(services, type_name),
                    name,
                    lambda request, response, arm=arm, name=name, handler=handler: self._serve(
                        arm, name, handler, request, response
                    ),
                )
            self.create_subscription(
                messages.JointGroupCommand,
                f'/{self.namespaces[arm]}/commands/joint_group',
                lambda msg, arm=arm: self._on_group(arm, msg),
                50,
            )
            self.create_subscription(
                messages.JointSingleCommand,
                f'/{self.namespaces[arm]}/commands/joint_single',
                lambda msg, arm=arm: self._on_single(arm, msg),
                50,
            )
        self.create_timer(state_period, self._publish_states)

    def restart(self) -> XsSdkStub:
        """This driver stops and a new one starts over the same servos at the same pose."""
        pose, servos = self.pose, self.servos
        self.destroy_node()
        return XsSdkStub(self._context, pose, servos=servos, **self._options)

    # ---- the driver ---------------------------------------------------------------------
    def _joints(self, cmd_type: str, name: str) -> list[str]:
        return list(ARM_GROUP) if cmd_type == 'group' and name == 'arm' else [name]

    def _start_driver(self, arm: str) -> None:
        bank = self.servos[arm]
        for joint in (*ARM_GROUP, robot.GRIPPER):
            bank.registers[joint]['Torque_Enable'] = 0  # the ping at start torques off
        for joint, values in YAML_EEPROM.items():
            for reg, value in values.items():
                bank.write(joint, reg, value)
        self._set_modes(arm, list(ARM_GROUP), YAML_MODES['arm'])
        self._set_modes(arm, [robot.GRIPPER], YAML_MODES[robot.GRIPPER])

    def _set_modes(self, arm: str, joints: list[str], mode: str) -> None:
        bank = self.servos[arm]
        for joint in joints:
            bank.registers[joint]['Torque_Enable'] = 0
            bank.write(joint, 'Operating_Mode', MODE_REGISTER[mode])
            self.modes[arm][joint] = mode
            bank.registers[joint]['Torque_Enable'] = 1

    def _serve(self, arm: str, name: str, handler, request: object, response: object) -> object:
        fields = {f: getattr(request, f) for f in request.get_fields_and_field_types()}
        self.calls.append((time.monotonic(), name, fields))
        handler(arm, request, response)
        return response

    def _reboot_motors(self, arm: str, request: object, response: object) -> None:
        bank = self.servos[arm]
        for joint in self._joints(request.cmd_type, request.name):
            registers = bank.registers[joint]
            registers['Goal_Current'] = registers['Current_Limit']  # RAM cleared
            registers['Torque_Enable'] = int(bool(request.enable))

    def _set_operating_modes(self, arm: str, request: object, response: object) -> None:
        self._set_modes(arm, self._joints(request.cmd_type, request.name), request.mode)

    def _set_motor_registers(self, arm: str, request: object, response: object) -> None:
        if self.ignore_writes:
            return
        for joint in self._joints(request.cmd_type, request.name):
            self.servos[arm].write(joint, request.reg, request.value)  # result unchecked

    def _get_motor_registers(self, arm: str, request: object, response: object) -> None:
        values = [
            self.servos[arm].read(j, request.reg)
            for j in self._joints(request.cmd_type, request.name)
        ]
        response.values = [] if None in values else values

    def _torque_enable(self, arm: str, request: object, response: object) -> None:
        for joint in self._joints(request.cmd_type, request.name):
            self.servos[arm].registers[joint]['Torque_Enable'] = int(bool(request.enable))

    # ---- the arm ------------------------------------------------------------------------
    def _on_group(self, arm: str, msg: object) -> None:
        assert msg.name == 'arm', msg.name
        self.commands.append((time.monotonic(), arm, 'group', np.array(msg.cmd)))
        if all(self.servos[arm].registers[j]['Torque_Enable'] for j in ARM_GROUP):
            self.pose[robot.arm_columns(arm)][:6] = msg.cmd

    def _on_single(self, arm: str, msg: object) -> None:
        assert msg.name == robot.GRIPPER, msg.name
        self.commands.append((time.monotonic(), arm, 'single', np.array([msg.cmd])))
        if self.modes[arm][robot.GRIPPER] == 'linear_position':
            self.misread_commands.append((arm, float(msg.cmd)))
            return
        if self.servos[arm].registers[robot.GRIPPER]['Torque_Enable']:
            self.pose[robot.arm_columns(arm).stop - 1] = self.gripper.motor_to_normalized(msg.cmd)

    def _publish_states(self) -> None:
        for arm, publisher in self._states.items():
            arm_pose = self.pose[robot.arm_columns(arm)]
            finger = float(self.gripper.normalized_to_finger(arm_pose[6]))
            publisher.publish(
                JointState(
                    name=list(robot.INTERBOTIX_JOINT_STATE_ORDER),
                    position=[
                        *map(float, arm_pose[:6]),
                        float(self.gripper.normalized_to_motor(arm_pose[6])),
                        finger,
                        -finger,
                    ],
                )
            )

    def group_commands(self, arm: str) -> np.ndarray:
        """(N, 6) the arm commands received for `arm`, in order."""
        rows = [cmd for _, a, kind, cmd in self.commands if a == arm and kind == 'group']
        return np.array(rows).reshape(-1, len(robot.ARM_JOINTS))

    def gripper_commands(self, arm: str) -> np.ndarray:
        """(N,) the gripper motor angles received for `arm`, in order."""
        return np.array(
            [cmd[0] for _, a, kind, cmd in self.commands if a == arm and kind == 'single']
        )
