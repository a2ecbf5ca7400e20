"""Bring-up of the real ViperX follower arms before the executor sends a single command, the
read-back that proves it took, and the torque-off at the end.

What every ALOHA script does first (Trossen's `opening_ceremony`, Interbotix/aloha
scripts/dual_side_teleop.py; the authors' `setup_puppet_bot`, experiments/robot/aloha/
robot_utils.py): reboot the gripper motor (it may be in an overload error from the last grasp),
put the arm in `position` and the gripper in `current_based_position` mode with a current
limit (a closed gripper then squeezes with a bounded force instead of whatever the driver's
YAML left it in: `linear_position` in Trossen's follower config), torque on.

The current limit as the hardware accepts it. The calls are interbotix_xs_sdk's services
(interbotix_ros_core, interbotix_xs_sdk/src/xs_sdk_obj.cpp); their driver (interbotix_xs_driver
src/xs_driver.cpp, set_motor_registers) hands the register name to Dynamixel Workbench's
`itemWrite`, ignores its result and always answers. Workbench looks the name up exactly,
case-sensitively (dynamixel_workbench_toolbox dynamixel_tool.cpp, getControlItem: strlen +
memcmp; the X-series names in dynamixel_item.cpp), so Trossen's `current_limit` is never found.
`Current_Limit` (address 38 of the XM430-W350 and XM540-W270 control tables) is EEPROM, which a
servo accepts only with Torque Enable (64) at 0 (ROBOTIS e-manual, XM430-W350, "Control Table
of EEPROM Area"; otherwise Access Error 0x07, again unseen). `set_operating_modes` torques the
joint off, writes the mode, torques it on (xs_driver.cpp, set_operating_modes), and a mode
switch sets Goal_Current (102) to Current_Limit (e-manual, Operating Mode (11)). Hence per arm:
reboot the gripper; arm to `position`; gripper torque off; write `Current_Limit`; gripper to
`current_based_position` (torque back on, Goal_Current = the new limit). Then torque on, and
read back with `get_motor_registers` every register and mode the bring-up set; a value that
differs (or a read that returns nothing) stops the bring-up, saying which, and nothing is
commanded.

ROS-free: this module lists the calls and checks the answers; the interbotix backend makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from oft_policy_node import robot

# Dynamixel Workbench control-table item names (X series, dynamixel_item.cpp), exact case.
CURRENT_LIMIT = 'Current_Limit'  # address 38, EEPROM, unit 2.69 mA
OPERATING_MODE = 'Operating_Mode'  # address 11, EEPROM
TORQUE_ENABLE = 'Torque_Enable'  # address 64, RAM
# Operating Mode (11) values of the X series (e-manual): 3 position, 5 current-based position.
MODE_VALUES = {'position': 3, 'current_based_position': 5}
# Current_Limit range of the XM430-W350, the vx300s gripper motor (e-manual: 0 ~ 1,193).
GRIPPER_CURRENT_LIMIT_MAX = 1193
# What a Trossen ALOHA runs with: Current_Limit 200 in interbotix_xsarm_control's
# config/aloha_vx300s.yaml (humble, jazzy), written at every driver start (load_configs); the
# authors' ALOHA README sets the same 200 by hand. Trossen's scripts also ask for 300 with the
# name `current_limit`, which never lands (see above).
GRIPPER_CURRENT_LIMIT = 200
ARM_GROUP = 'arm'


@dataclass(frozen=True)
class DriverCall:
    """One service call to an arm's xs_sdk; `expect`: a read-back, every returned value must
    equal it."""

    arm: str
    service: str  # name under the arm's namespace, e.g. 'set_operating_modes'
    srv_type: str  # type in interbotix_xs_msgs.srv, e.g. 'OperatingModes'
    request: dict[str, Any] = field(default_factory=dict)
    expect: int | None = None
    namespace: str = ''  # '' = the follower's; leader_<arm> for a leader arm

    @property
    def name(self) -> str:
        if self.namespace:
            return f'/{self.namespace}/{self.service}'
        return robot.driver_service(self.arm, self.service)

    def describe(self) -> str:
        fields = ', '.join(f'{k}={v!r}' for k, v in self.request.items())
        return f'{self.name} ({fields})'

    def mismatch(self, values: Sequence[int]) -> str | None:
        """Why a read-back's answer is wrong, or None."""
        if self.expect is None:
            return None
        values = list(values)
        if values and all(value == self.expect for value in values):
            return None
        what = f'{self.request["cmd_type"]} {self.request["name"]} {self.request["reg"]}'
        return (
            f'read back {what} = {values}, expected {self.expect}: the driver did not take '
            f'the setting (no such register, an EEPROM write with torque on, or a failed '
            f'read)'
        )


def _operating_mode(
    arm: str, cmd_type: str, name: str, mode: str, namespace: str = ''
) -> DriverCall:
    # profile values as InterbotixRobotXSCore.robot_set_operating_modes defaults them
    return DriverCall(
        arm,
        'set_operating_modes',
        'OperatingModes',
        {
            'cmd_type': cmd_type,
            'name': name,
            'mode': mode,
            'profile_type': 'velocity',
            'profile_velocity': 0,
            'profile_acceleration': 0,
        },
        namespace=namespace,
    )


def _torque(arm: str, cmd_type: str, name: str, enable: bool, namespace: str = '') -> DriverCall:
    return DriverCall(
        arm,
        'torque_enable',
        'TorqueEnable',
        {'cmd_type': cmd_type, 'name': name, 'enable': enable},
        namespace=namespace,
    )


def _read_back(
    arm: str, cmd_type: str, name: str, reg: str, expect: int, namespace: str = ''
) -> DriverCall:
    return DriverCall(
        arm,
        'get_motor_registers',
        'RegisterValues',
        {'cmd_type': cmd_type, 'name': name, 'reg': reg, 'value': 0},
        expect=expect,
        namespace=namespace,
    )


def check_current_limit(limit: int) -> None:
    if not 0 < limit <= GRIPPER_CURRENT_LIMIT_MAX:
        raise ValueError(
            f'gripper_current_limit {limit!r} must be in 1..{GRIPPER_CURRENT_LIMIT_MAX} '
            f'(Current_Limit of the XM430-W350, 2.69 mA per unit; ALOHA: '
            f'{GRIPPER_CURRENT_LIMIT})'
        )


def follower_bringup(
    gripper_current_limit: int = GRIPPER_CURRENT_LIMIT, arms: Sequence[str] = robot.ARMS
) -> list[DriverCall]:
    """The calls for `arms`, in order: the modes and the limit per arm, torque on, read-backs."""
    check_current_limit(gripper_current_limit)
    gripper = robot.GRIPPER
    calls = []
    for arm in arms:
        calls += [
            DriverCall(
                arm,
                'reboot_motors',
                'Reboot',
                {'cmd_type': 'single', 'name': gripper, 'enable': True, 'smart_reboot': False},
            ),
            _operating_mode(arm, 'group', ARM_GROUP, 'position'),
            _torque(arm, 'single', gripper, False),  # EEPROM is writable only with torque off
            DriverCall(
                arm,
                'set_motor_registers',
                'RegisterValues',
                {
                    'cmd_type': 'single',
                    'name': gripper,
                    'reg': CURRENT_LIMIT,
                    'value': int(gripper_current_limit),
                },
            ),
            # after the limit: the mode switch torques on and sets Goal_Current to the limit
            _operating_mode(arm, 'single', gripper, 'current_based_position'),
        ]
    for arm in arms:
        calls += [_torque(arm, 'group', ARM_GROUP, True), _torque(arm, 'single', gripper, True)]
    for arm in arms:
        calls += [
            _read_back(arm, 'single', gripper, CURRENT_LIMIT, int(gripper_current_limit)),
            _read_back(
                arm, 'single', gripper, OPERATING_MODE, MODE_VALUES['current_based_position']
            ),
            _read_back(arm, 'group', ARM_GROUP, OPERATING_MODE, MODE_VALUES['position']),
            _read_back(arm, 'group', ARM_GROUP, TORQUE_ENABLE, 1),
            _read_back(arm, 'single', gripper, TORQUE_ENABLE, 1),
        ]
    return calls


def read_backs(
    gripper_current_limit: int = GRIPPER_CURRENT_LIMIT, arms: Sequence[str] = robot.ARMS
) -> list[DriverCall]:
    """Only the read-backs of `follower_bringup`: whether a driver still has the settings."""
    return [
        call for call in follower_bringup(gripper_current_limit, arms) if call.expect is not None
    ]


def leader_bringup(arms: Sequence[str] = robot.ARMS) -> list[DriverCall]:
    """The leader arms made free to move, as Trossen's opening_ceremony leaves them
    (Interbotix/aloha scripts/dual_side_teleop.py: arm and gripper in `position`, then the
    gripper's and, without gravity compensation, the arm's torque off), read back."""
    calls = []
    for arm in arms:
        namespace = f'leader_{arm}'
        calls += [
            _operating_mode(arm, 'group', ARM_GROUP, 'position', namespace),
            _operating_mode(arm, 'single', robot.GRIPPER, 'position', namespace),
            _torque(arm, 'group', ARM_GROUP, False, namespace),
            _torque(arm, 'single', robot.GRIPPER, False, namespace),
            _read_back(arm, 'group', ARM_GROUP, TORQUE_ENABLE, 0, namespace),
            _read_back(arm, 'single', robot.GRIPPER, TORQUE_ENABLE, 0, namespace),
            _read_back(
                arm, 'single', robot.GRIPPER, OPERATING_MODE, MODE_VALUES['position'], namespace
            ),
        ]
    return calls


def torque_off(arms: Sequence[str] = robot.ARMS) -> list[DriverCall]:
    """Torque off, arm group and gripper: only ever at the sleep pose, where the arms rest."""
    return [
        call
        for arm in arms
        for call in (
            _torque(arm, 'group', ARM_GROUP, False),
            _torque(arm, 'single', robot.GRIPPER, False),
        )
    ]


class DriverSequence:
    """Walks the calls one at a time: `current` is the call to make, `answered` with its
    response's read-back values (a mismatch fails it), `fail` with a reason stops it for good."""

    def __init__(self, calls: list[DriverCall], purpose: str = 'bring-up') -> None:
        self.calls = calls
        self.purpose = purpose
        self._index = 0
        self.failure: str | None = None

    @property
    def current(self) -> DriverCall | None:
        return None if self.done or self.failure else self.calls[self._index]

    @property
    def done(self) -> bool:
        return self._index >= len(self.calls)

    @property
    def progress(self) -> str:
        return f'{min(self._index + 1, len(self.calls))}/{len(self.calls)}'

    def answered(self, values: Sequence[int] = ()) -> None:
        problem = self.calls[self._index].mismatch(values)
        if problem:
            self.fail(problem)
        else:
            self._index += 1

    def fail(self, reason: str) -> None:
        self.failure = (
            f'{self.purpose} stopped at {self.progress}, {self.calls[self._index].describe()}: '
            f'{reason}; nothing is commanded'
        )
