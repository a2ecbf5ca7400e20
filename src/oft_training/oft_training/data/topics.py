"""Which recorded topics become which of the 14 proprio / action dimensions, and how.

A `Channel` is one topic that fills some dimensions of the 14-D vector
[left 6 joints, left gripper, right 6 joints, right gripper]; per tick, each channel's value in
force fills its dimensions, and the channels of a set must cover all 14 exactly once. Action
sources differ between setups, so they are named sets (`ACTION_SOURCES`):

* `sim`: the simulation backend's commands (the chunk executor or the scripted demonstrator),
  sensor_msgs/JointState on `/follower_<arm>/commands/joint_positions`, 6 arm joints + `gripper`
  as motor angle.
* `interbotix`: what the Interbotix driver is commanded with, JointGroupCommand (group `arm`) on
  `commands/joint_group` + JointSingleCommand (`gripper`, motor angle) on `commands/joint_single`.
* `leader`: a real ALOHA's teleoperation, the leader arms' own joint_states; the leader gripper
  joint angle is normalised with the leader's closed/open angles (configurable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from oft_policy_node import robot

JOINT_STATE = 'sensor_msgs/msg/JointState'
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
STRING = 'std_msgs/msg/String'
JOINT_GROUP_COMMAND = 'interbotix_xs_msgs/msg/JointGroupCommand'
JOINT_SINGLE_COMMAND = 'interbotix_xs_msgs/msg/JointSingleCommand'
# interbotix_xs_msgs is not installable here; its two command messages, verbatim field lists.
INTERBOTIX_MSG_DEFINITIONS = {
    JOINT_GROUP_COMMAND: 'string name\nfloat32[] cmd\n',
    JOINT_SINGLE_COMMAND: 'string name\nfloat32 cmd\n',
}
# Leader gripper joint angles (rad) of the ROS 2 ALOHA (aloha/constants.py, ALOHA 2 leaders).
LEADER_GRIPPER_CLOSED, LEADER_GRIPPER_OPEN = robot.ALOHA2_LEADER.closed, robot.ALOHA2_LEADER.opened
JOINTS_PER_ARM = len(robot.ARM_JOINTS) + 1
# Where an episode's instruction may be recorded: the task's (simulation, recorder, teleop
# episode metadata) and the policy's active instruction (a policy-driven run).
INSTRUCTION_TOPICS = (robot.TASK_INSTRUCTION_TOPIC, robot.INSTRUCTION_TOPIC)


class ChannelError(ValueError):
    """A message that cannot fill its channel's dimensions (missing joint, wrong length)."""


@dataclass(frozen=True)
class Channel:
    """One topic filling `dims` of the 14-D vector; `decode(msg)` gives their values, or None
    for a message that is not meant for this channel (an Interbotix command to another group)."""

    topic: str
    msgtype: str
    dims: tuple[int, ...]
    decode: Callable[[object], np.ndarray | None]


def _arm_dims(arm: str) -> tuple[int, ...]:
    offset = robot.ARMS.index(arm) * JOINTS_PER_ARM
    return tuple(range(offset, offset + JOINTS_PER_ARM))


def _positions(msg: object, names: tuple[str, ...], topic: str) -> np.ndarray:
    """Positions of `names` from a JointState, looked up by name (never by position)."""
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ChannelError(f'{topic}: joint_state lacks joints {missing} (has {list(msg.name)})')
    position = np.asarray(msg.position, dtype=np.float64)
    if len(position) != len(msg.name):
        raise ChannelError(f'{topic}: {len(msg.name)} names but {len(position)} positions')
    return position[[index[n] for n in names]]


def _joint_state_channel(
    topic: str, arm: str, gripper_joint: str, to_opening: Callable[[np.ndarray], np.ndarray]
) -> Channel:
    names = (*robot.ARM_JOINTS, gripper_joint)

    def decode(msg: object) -> np.ndarray:
        values = _positions(msg, names, topic)
        values[-1] = to_opening(values[-1])
        return values

    return Channel(topic, JOINT_STATE, _arm_dims(arm), decode)


def proprio_channels() -> list[Channel]:
    """The follower arms' joint_states: 6 joints + gripper opening from the finger position."""
    return [
        _joint_state_channel(
            robot.joint_states_topic(arm), arm, robot.FINGER_JOINT, robot.finger_to_normalized
        )
        for arm in robot.ARMS
    ]


def _sim_channels() -> list[Channel]:
    return [
        _joint_state_channel(
            robot.joint_positions_topic(arm), arm, robot.GRIPPER, robot.motor_to_normalized
        )
        for arm in robot.ARMS
    ]


def _interbotix_channels() -> list[Channel]:
    channels = []
    for arm in robot.ARMS:
        dims = _arm_dims(arm)
        group_topic = robot.joint_group_topic(arm)

        def decode_group(msg: object, topic: str = group_topic) -> np.ndarray | None:
            if msg.name != 'arm':
                return None
            cmd = np.asarray(msg.cmd, dtype=np.float64)
            if len(cmd) != len(robot.ARM_JOINTS):
                raise ChannelError(
                    f'{topic}: group "arm" command has {len(cmd)} values, '
                    f'expected {len(robot.ARM_JOINTS)}'
                )
            return cmd

        def decode_single(msg: object) -> np.ndarray | None:
            if msg.name != robot.GRIPPER:
                return None
            return np.array([robot.motor_to_normalized(float(msg.cmd))])

        channels.append(Channel(group_topic, JOINT_GROUP_COMMAND, dims[:-1], decode_group))
        channels.append(
            Channel(robot.joint_single_topic(arm), JOINT_SINGLE_COMMAND, dims[-1:], decode_single)
        )
    return channels


def _leader_channels(closed: float, open_: float) -> list[Channel]:
    if open_ == closed:
        raise ValueError(f'leader gripper closed and open angles are equal ({closed})')
    return [
        _joint_state_channel(
            robot.leader_joint_states_topic(arm),
            arm,
            robot.GRIPPER,
            lambda angle: (angle - closed) / (open_ - closed),
        )
        for arm in robot.ARMS
    ]


ACTION_SOURCES = ('auto', 'sim', 'interbotix', 'leader')


def resolve_action_source(source: str, recorded: set[str]) -> tuple[str, str]:
    """(source, what it is) for a bag whose topics with messages are `recorded`. `auto`: the
    leader arms' joint states where recorded (what the operator commanded: the authors'
    actions, ALOHA's record_episodes.py `/action`), else the Interbotix commands, else the
    simulation backend's."""
    needs = {
        candidate: [channel.topic for channel in action_channels(candidate)]
        for candidate in ('leader', 'interbotix', 'sim')
    }
    what = {
        'leader': "the leader arms' joint states",
        'interbotix': 'the Interbotix commands',
        'sim': "the simulation backend's commands",
    }
    if source != 'auto':
        return source, what[source] + ' (--action-source)'
    for candidate, wanted in needs.items():
        if all(topic in recorded for topic in wanted):
            return candidate, what[candidate]
    raise ValueError(
        f'no actions in the bag: none of {what["leader"]} {needs["leader"]}, '
        f'{what["interbotix"]} or {what["sim"]} {needs["sim"]} were recorded'
    )


def action_channels(
    source: str, leader_gripper: tuple[float, float] = (LEADER_GRIPPER_CLOSED, LEADER_GRIPPER_OPEN)
) -> list[Channel]:
    """The channels of a named action source (see the module docstring); `leader_gripper` is
    the leader gripper's (closed, open) joint angle, used by the `leader` source only."""
    if source == 'sim':
        return _sim_channels()
    if source == 'interbotix':
        return _interbotix_channels()
    if source == 'leader':
        return _leader_channels(*leader_gripper)
    raise ValueError(f'unknown action source {source!r}; choose one of {ACTION_SOURCES}')


def check_coverage(channels: list[Channel], what: str) -> None:
    """Every one of the 14 dimensions filled by exactly one channel."""
    counts = np.zeros(robot.ACTION_DIM, dtype=int)
    for channel in channels:
        counts[list(channel.dims)] += 1
    if not np.all(counts == 1):
        raise ValueError(
            f'{what} channels must fill each of the {robot.ACTION_DIM} dimensions '
            f'once; fill counts per dimension: {counts.tolist()}'
        )
