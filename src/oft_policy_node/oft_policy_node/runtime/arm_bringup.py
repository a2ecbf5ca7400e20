"""Bring-up of the real ViperX follower arms before the executor sends a single command.

Every ALOHA deployment script prepares the follower arms the same way before it commands them
(Trossen's aloha `opening_ceremony` in scripts/dual_side_teleop.py and `setup_follower_bot` in
aloha/robot_utils.py; the authors' real_env.py calls the same setup): reboot the gripper motor
(it may be in an overload error from the last grasp), put the arm group in `position` mode and
the gripper in `current_based_position` with a current limit (so a closed gripper squeezes an
object with a bounded force instead of whatever mode the driver's YAML left it in, e.g.
`linear_position` in Trossen's follower config), then torque on. The calls are the services of
interbotix_xs_sdk's xs_sdk node (interbotix_ros_core, interbotix_xs_sdk/src/xs_sdk_obj.cpp:
`reboot_motors`, `set_operating_modes`, `set_motor_registers`, `torque_enable`) with the
request fields of interbotix_xs_msgs/srv (Reboot, OperatingModes, RegisterValues,
TorqueEnable); defaults as in InterbotixRobotXSCore.robot_set_operating_modes
(profile_type 'velocity', profile_velocity 0, profile_acceleration 0).

ROS-free: this module lists the calls in order; the interbotix backend makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oft_policy_node import robot

# Trossen's opening_ceremony sets the follower gripper's current_limit register to 300.
GRIPPER_CURRENT_LIMIT = 300


@dataclass(frozen=True)
class DriverCall:
    """One service call to an arm's xs_sdk."""

    arm: str
    service: str  # name under the arm's namespace, e.g. 'set_operating_modes'
    srv_type: str  # type in interbotix_xs_msgs.srv, e.g. 'OperatingModes'
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return robot.driver_service(self.arm, self.service)

    def describe(self) -> str:
        fields = ', '.join(f'{k}={v!r}' for k, v in self.request.items())
        return f'{self.name} ({fields})'


def _operating_mode(arm: str, cmd_type: str, name: str, mode: str) -> DriverCall:
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
    )


def _torque_on(arm: str) -> list[DriverCall]:
    return [
        DriverCall(
            arm,
            'torque_enable',
            'TorqueEnable',
            {'cmd_type': cmd_type, 'name': name, 'enable': True},
        )
        for cmd_type, name in (('group', 'arm'), ('single', robot.GRIPPER))
    ]


def follower_bringup(gripper_current_limit: int = GRIPPER_CURRENT_LIMIT) -> list[DriverCall]:
    """The calls in the order of Trossen's opening_ceremony: per arm reboot the gripper, set
    the operating modes and the gripper current limit; then torque on, arm by arm."""
    if not 0 < gripper_current_limit <= 2**31 - 1:
        raise ValueError(
            f'gripper_current_limit {gripper_current_limit!r} must be a positive '
            f'register value (Trossen uses {GRIPPER_CURRENT_LIMIT})'
        )
    calls = []
    for arm in robot.ARMS:
        calls += [
            DriverCall(
                arm,
                'reboot_motors',
                'Reboot',
                {
                    'cmd_type': 'single',
                    'name': robot.GRIPPER,
                    'enable': True,
                    'smart_reboot': False,
                },
            ),
            _operating_mode(arm, 'group', 'arm', 'position'),
            _operating_mode(arm, 'single', robot.GRIPPER, 'current_based_position'),
            DriverCall(
                arm,
                'set_motor_registers',
                'RegisterValues',
                {
                    'cmd_type': 'single',
                    'name': robot.GRIPPER,
                    'reg': 'current_limit',
                    'value': int(gripper_current_limit),
                },
            ),
        ]
    for arm in robot.ARMS:
        calls += _torque_on(arm)
    return calls


class BringupSequence:
    """Walks the calls one at a time: `current` is the call to make, `advance` after its
    response, `fail` with a reason stops it for good (nothing is ever commanded then)."""

    def __init__(self, calls: list[DriverCall]) -> None:
        self.calls = calls
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

    def advance(self) -> None:
        self._index += 1

    def fail(self, reason: str) -> None:
        self.failure = (
            f'bring-up stopped at {self.progress}, {self.calls[self._index].name}: '
            f'{reason}; nothing was commanded'
        )
