"""The teleop node's ROS-free parts: the leader pose as the followers' target (Trossen's
leader -> follower gripper map through the normalised opening), dropped camera frames, one bag
per episode that holds what was written while it was open."""

from __future__ import annotations

import numpy as np
import pytest

from aloha_bringup.recording import BagWriter
from aloha_bringup.teleop.episodes import EpisodeBags, FrameCounter, teleop_topics
from aloha_bringup.teleop.leader import leader_target
from oft_policy_node import robot
from tests.bag_reading import bag_messages


def test_a_leader_pose_is_the_followers_target_with_trossens_gripper_map():
    names = [*robot.INTERBOTIX_JOINT_STATE_ORDER]
    joints = [0.1, -0.5, 0.6, 0.0, 0.3, -0.2]
    leader = robot.ALOHA2_LEADER
    for opening in (0.0, 0.25, 1.0):
        target = leader_target(names, [*joints, leader.angle(opening), 0.0, 0.0], leader)
        np.testing.assert_allclose(target[:6], joints)
        # Trossen: LEADER2FOLLOWER_JOINT_FN(x) = FOLLOWER_UNNORMALIZE(LEADER_NORMALIZE(x))
        follower = robot.ALOHA2_GRIPPER.normalized_to_motor(target[6])
        expected = 0.6197 + (leader.angle(opening) + 0.0552) / (0.8298 + 0.0552) * (
            1.6214 - 0.6197
        )
        assert follower == pytest.approx(expected)
    with pytest.raises(ValueError, match="joints \\['gripper'\\] are missing"):
        leader_target(list(robot.ARM_JOINTS), joints, leader)


def test_dropped_frames_are_the_missing_periods():
    frames = FrameCounter(['cam_high'], rate_hz=10.0)
    for t in (0.0, 0.1, 0.2, 0.5, 0.6, 0.65):  # 0.3 and 0.4 never came; 0.65 is jitter
        frames.add('cam_high', int(t * 1e9))
    assert frames.frames['cam_high'] == 6 and frames.dropped['cam_high'] == 2


def test_one_bag_per_episode_with_what_was_written_while_it_was_open(tmp_path):
    topics = teleop_topics([robot.camera_topic(c) for c in robot.CAMERAS], 'raw')
    assert robot.leader_joint_states_topic('left') in topics
    cameras = {robot.camera_topic(c): c for c in robot.CAMERAS}
    bags = EpisodeBags(tmp_path, topics, cameras, 30.0, 'aloha2')
    instruction_cdr = _string_cdr('x')
    bags.write(robot.TASK_INSTRUCTION_TOPIC, 1, instruction_cdr)  # no episode: dropped
    with pytest.raises(ValueError, match='needs its instruction'):
        bags.start('  ', 0)
    first = bags.start('put green pepper into pot', 10)
    with pytest.raises(RuntimeError, match='still being recorded'):
        bags.start('again', 11)
    bags.write(robot.TASK_INSTRUCTION_TOPIC, 12, instruction_cdr)
    assert 'episode 1' in bags.live_line(2_000_000_010)
    path, counts = bags.end()
    assert path == first and counts[robot.TASK_INSTRUCTION_TOPIC] == 1
    second = bags.start('put red pepper into pot', 20)
    bags.end()
    assert second.name.startswith('episode_002_')
    assert len(bag_messages(first)[robot.TASK_INSTRUCTION_TOPIC]) == 1
    with pytest.raises(RuntimeError, match='no episode'):
        bags.end()


def _string_cdr(text: str) -> bytes:
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    msg = store.types['std_msgs/msg/String'](data=text)
    return bytes(store.serialize_cdr(msg, 'std_msgs/msg/String'))


def test_the_bag_writer_knows_the_project_and_interbotix_types(tmp_path):
    writer = BagWriter(
        tmp_path / 'bag',
        {
            robot.ACTION_CHUNK_TOPIC: 'oft_msgs/msg/ActionChunk',
            robot.joint_group_topic('left'): 'interbotix_xs_msgs/msg/JointGroupCommand',
        },
    )
    assert writer.close() == {robot.ACTION_CHUNK_TOPIC: 0, robot.joint_group_topic('left'): 0}
