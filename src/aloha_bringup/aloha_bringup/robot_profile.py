"""Robot profiles: what differs between ALOHAs, as configuration (config/robots/<name>.yaml),
resolved into the nodes' parameters and the arm namespaces.

A profile names the arm namespaces, the gripper calibration (finger position and motor angle
of a closed and an open follower gripper), the gripper current limit, the start and sleep
poses, the cameras (a set of robot.CAMERA_SETS by name, or a mapping of the model's cameras to
topics) and what the executor does on exit. `robot:=<name>` picks one of
the shipped profiles, `robot:=/path/to/my_robot.yaml` a profile of your own (copy one).
ROS-free: aloha_bringup.graph reads it for both ros2 launch and run_graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from oft_policy_node import robot

ON_EXIT = ('sleep', 'hold')
_FIELDS = {
    'description': str,
    'arm_namespaces': dict,
    'gripper': dict,
    'start_pose': list,
    'start_gripper': float,
    'sleep_pose': list,
    'sleep_gripper': float,
    'cameras': (str, dict),
    'on_exit': str,
}
_GRIPPER_FIELDS = ('finger_closed', 'finger_open', 'motor_closed', 'motor_open', 'current_limit')


@dataclass(frozen=True)
class RobotProfile:
    name: str
    description: str
    arm_namespaces: dict[str, str]  # arm -> namespace
    gripper: robot.GripperCalibration
    gripper_current_limit: int
    start_pose: list[float]  # 6 arm joints (rad), both arms
    start_gripper: float  # opening 0..1 at the start pose
    sleep_pose: list[float]
    sleep_gripper: float
    cameras: str | dict[str, str]  # a set of robot.CAMERA_SETS, or camera -> topic
    on_exit: str

    def executor_parameters(self) -> dict[str, Any]:
        g = self.gripper
        return {
            'gripper_finger_range': [g.finger_closed, g.finger_open],
            'gripper_motor_range': [g.motor_closed, g.motor_open],
            'gripper_current_limit': self.gripper_current_limit,
            'start_pose': list(self.start_pose),
            'start_gripper': self.start_gripper,
            'sleep_pose': list(self.sleep_pose),
            'sleep_gripper': self.sleep_gripper,
            'on_exit': self.on_exit,
        }


def robots_dir(config: Path) -> Path:
    return config / 'robots'


def shipped_profiles(config: Path) -> list[str]:
    return sorted(p.stem for p in robots_dir(config).glob('*.yaml'))


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f'cannot read {what} {path}: {error}') from error
    if not isinstance(data, dict):
        raise ValueError(f'{what} {path} must be a YAML mapping')
    return data


def load_profile(name_or_path: str, config: Path) -> RobotProfile:
    """A shipped profile by name (config/robots/<name>.yaml) or a profile file by path."""
    path = Path(name_or_path)
    if path.suffix not in ('.yaml', '.yml'):
        path = robots_dir(config) / f'{name_or_path}.yaml'
        if not path.is_file():
            raise ValueError(
                f'unknown robot {name_or_path!r}; shipped profiles: '
                f'{shipped_profiles(config)}, or robot:=/path/to/profile.yaml'
            )
    data = _read_yaml(path, 'robot profile')
    problems = [
        f'{key}: missing' if key not in data else f'{key}: must be a {_kind_name(kind)}'
        for key, kind in _FIELDS.items()
        if key not in data or not isinstance(data[key], (int, float) if kind is float else kind)
    ]
    problems += [f'unknown field {key!r}' for key in data if key not in _FIELDS]
    if problems:
        raise ValueError(f'robot profile {path}: ' + '; '.join(problems))
    gripper = data['gripper']
    missing = [key for key in _GRIPPER_FIELDS if key not in gripper]
    if missing or set(data['arm_namespaces']) != set(robot.ARMS):
        raise ValueError(
            f'robot profile {path}: gripper needs {list(_GRIPPER_FIELDS)} (missing {missing}) '
            f'and arm_namespaces one namespace per arm {list(robot.ARMS)}'
        )
    if data['on_exit'] not in ON_EXIT:
        raise ValueError(f'robot profile {path}: on_exit must be one of {ON_EXIT}')
    for key in ('start_pose', 'sleep_pose'):
        if len(data[key]) != len(robot.ARM_JOINTS):
            raise ValueError(
                f'robot profile {path}: {key} needs {len(robot.ARM_JOINTS)} joint values '
                f'({", ".join(robot.ARM_JOINTS)})'
            )
    return RobotProfile(
        name=path.stem,
        description=data['description'],
        arm_namespaces={arm: str(data['arm_namespaces'][arm]) for arm in robot.ARMS},
        gripper=robot.GripperCalibration(*(float(gripper[key]) for key in _GRIPPER_FIELDS[:4])),
        gripper_current_limit=int(gripper['current_limit']),
        start_pose=[float(v) for v in data['start_pose']],
        start_gripper=float(data['start_gripper']),
        sleep_pose=[float(v) for v in data['sleep_pose']],
        sleep_gripper=float(data['sleep_gripper']),
        cameras=data['cameras'],
        on_exit=data['on_exit'],
    )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return ' or '.join({'dict': 'mapping'}.get(k.__name__, k.__name__) for k in kinds)


def camera_topics(cameras: str | dict[str, str]) -> list[str]:
    """The raw topics of a camera set (a name of robot.CAMERA_SETS, or camera -> topic) in
    the model's camera order (robot.CAMERAS)."""
    if isinstance(cameras, str):
        if cameras not in robot.CAMERA_SETS:
            raise ValueError(
                f'unknown camera set {cameras!r}; known: {sorted(robot.CAMERA_SETS)}, or a '
                f'mapping of {list(robot.CAMERAS)} to topics in the robot profile'
            )
        cameras = robot.CAMERA_SETS[cameras]
    missing = [camera for camera in robot.CAMERAS if camera not in cameras]
    if missing:
        raise ValueError(f'the cameras {dict(cameras)} lack {missing}')
    return [str(cameras[camera]) for camera in robot.CAMERAS]
