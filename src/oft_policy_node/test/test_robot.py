"""The robot description: layout, limits and gripper conversions."""

from __future__ import annotations

import numpy as np
import pytest

from oft_policy_node import robot


def test_action_layout_is_left_then_right_arm_joints_then_gripper():
    names = robot.action_joint_names()
    assert len(names) == robot.ACTION_DIM == 14
    assert names[:7] == [
        'follower_left/waist',
        'follower_left/shoulder',
        'follower_left/elbow',
        'follower_left/forearm_roll',
        'follower_left/wrist_angle',
        'follower_left/wrist_rotate',
        'follower_left/gripper',
    ]
    assert names[7] == 'follower_right/waist' and names[13] == 'follower_right/gripper'


def test_action_limits_match_vx300s():
    lower, upper = robot.action_limits()
    assert lower.shape == upper.shape == (14,)
    assert (lower[1], upper[1]) == (-1.850, 1.257)  # shoulder
    assert (lower[9], upper[9]) == (-1.763, 1.606)  # right elbow
    assert (lower[6], upper[6]) == (lower[13], upper[13]) == (0.0, 1.0)  # grippers
    assert np.all(lower < upper)


@pytest.mark.parametrize('opening', [0.0, 0.25, 1.0])
def test_gripper_conversions_round_trip(opening):
    assert robot.finger_to_normalized(robot.normalized_to_finger(opening)) == pytest.approx(
        opening
    )
    assert robot.motor_to_normalized(robot.normalized_to_motor(opening)) == pytest.approx(opening)


def test_gripper_conversion_end_points():
    assert robot.finger_to_normalized(0.0440) == pytest.approx(0.0)
    assert robot.finger_to_normalized(0.0579) == pytest.approx(1.0)
    assert robot.normalized_to_motor(0.0) == pytest.approx(0.6197)
    assert robot.normalized_to_motor(1.0) == pytest.approx(1.6214)


def test_unknown_arm_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="'middle'.*left"):
        robot.arm_namespace('middle')


def test_topics_follow_interbotix_and_realsense_names():
    assert robot.joint_states_topic('left') == '/follower_left/joint_states'
    assert robot.joint_group_topic('right') == '/follower_right/commands/joint_group'
    assert robot.joint_single_topic('left') == '/follower_left/commands/joint_single'
    assert robot.camera_topic('cam_high') == '/cam_high/camera/color/image_rect_raw'
