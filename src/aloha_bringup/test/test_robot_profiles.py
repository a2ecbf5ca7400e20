"""Robot profiles (config/robots): each shipped profile resolves into the nodes' namespaces,
gripper calibration, poses and cameras with the values of its source; a profile of one's own
works by path; a bad profile or a simulated robot the simulation is not is refused."""

from __future__ import annotations

import pytest
import yaml

from aloha_bringup.graph import CONFIG_DIR, resolve_graph
from aloha_bringup.robot_profile import camera_topics, load_profile, shipped_profiles
from oft_policy_node import robot

REAL = {'use_sim': 'false', 'backend': 'interbotix', 'checkpoint': '/ckpt'}


def nodes(**args: str) -> dict:
    return {n.name: n for n in resolve_graph({**REAL, **args})}


def test_the_shipped_profiles():
    assert shipped_profiles(CONFIG_DIR) == ['aloha1', 'aloha2']


@pytest.mark.parametrize(
    'profile, namespace, finger, motor, cameras',
    [
        # Interbotix/aloha constants.py; realsense-ros 4.55+ under Trossen's launch
        ('aloha2', 'follower', (0.0440, 0.0579), (0.6197, 1.6214), 'realsense_4_55'),
        # moojink/openvla-oft experiments/robot/aloha/constants.py; usb_cam topics
        ('aloha1', 'puppet', (0.01844, 0.05800), (-0.6213, 1.4910), 'usb_cam'),
    ],
)
def test_a_profile_sets_namespaces_gripper_and_cameras(profile, namespace, finger, motor, cameras):
    graph = nodes(robot=profile)
    executor, policy = graph['chunk_executor'], graph['policy_node']
    assert executor.parameters['gripper_finger_range'] == list(finger)
    assert executor.parameters['gripper_motor_range'] == list(motor)
    assert policy.parameters['gripper_finger_range'] == list(finger)
    assert executor.parameters['start_pose'] == list(robot.START_ARM_POSE)
    assert policy.parameters['camera_topics'] == camera_topics(cameras)
    remaps = dict(executor.remappings)
    for arm in robot.ARMS:
        for name in (
            robot.joint_states_topic(arm),
            robot.joint_group_topic(arm),
            robot.joint_single_topic(arm),
            robot.driver_service(arm, 'get_motor_registers'),
        ):
            assert remaps.get(name, name) == name.replace('follower_', f'{namespace}_'), name
    assert executor.stop_timeout == 20.0  # exit_timeout 15 s + 5 s before launch escalates


def test_aloha2_constants_leave_an_aloha1_gripper_more_than_half_open():
    """Why the profile matters: the motor angle aloha2 calls closed, on an ALOHA 1."""
    aloha1, aloha2 = (load_profile(name, CONFIG_DIR).gripper for name in ('aloha1', 'aloha2'))
    opening = aloha1.motor_to_normalized(aloha2.normalized_to_motor(0.0))
    assert opening == pytest.approx(0.587, abs=1e-3)


@pytest.mark.parametrize(
    'cameras, high',
    [
        ('realsense_4_55', '/cam_high/camera/color/image_rect_raw'),
        ('realsense_4_54', '/cam_high/color/image_rect_raw'),
        ('aloha_2_0', '/camera_high/camera/color/image_rect_raw'),
        ('usb_cam', '/usb_cam_high/image_raw'),
    ],
)
def test_camera_sets_and_the_compressed_transport(cameras, high):
    policy = nodes(cameras=cameras, image_transport='compressed')['policy_node']
    assert policy.parameters['camera_topics'][0] == high
    assert policy.parameters['image_transport'] == 'compressed'
    assert robot.image_topic(high, 'compressed') == f'{high}/compressed'


def test_launch_arguments_override_the_profile():
    graph = nodes(robot='aloha1', on_exit='sleep', left_namespace='arm_l')
    assert graph['chunk_executor'].parameters['on_exit'] == 'sleep'
    remaps = dict(graph['chunk_executor'].remappings)
    assert remaps['/follower_left/joint_states'] == '/arm_l/joint_states'
    assert remaps['/follower_right/joint_states'] == '/puppet_right/joint_states'


def test_a_profile_file_of_ones_own(tmp_path):
    data = yaml.safe_load((CONFIG_DIR / 'robots' / 'aloha2.yaml').read_text())
    data['gripper']['current_limit'] = 150
    data['arm_namespaces'] = {'left': 'lab_left', 'right': 'lab_right'}
    path = tmp_path / 'lab_aloha.yaml'
    path.write_text(yaml.safe_dump(data))
    data['cameras'] = {camera: f'/lab/{camera}/image' for camera in robot.CAMERAS}
    path.write_text(yaml.safe_dump(data))
    graph = nodes(robot=str(path))
    executor = graph['chunk_executor']
    assert graph['policy_node'].parameters['camera_topics'][0] == '/lab/cam_high/image'
    assert executor.parameters['gripper_current_limit'] == 150
    assert dict(executor.remappings)['/follower_left/torque_enable'] == '/lab_left/torque_enable'


@pytest.mark.parametrize(
    'change, message',
    [
        ({'on_exit': 'drop'}, 'on_exit must be one of'),
        ({'start_pose': [0.0, 1.0]}, 'start_pose needs 6 joint values'),
        ({'gripper': {'finger_open': 0.05}}, 'gripper needs'),
        ({'cameras': 3}, 'cameras: must be a str or mapping'),
        ({'cameras': {'cam_high': '/top'}}, 'lack'),
        ({'colour': 'red'}, "unknown field 'colour'"),
    ],
)
def test_a_bad_profile_is_refused_saying_why(tmp_path, change, message):
    data = {**yaml.safe_load((CONFIG_DIR / 'robots' / 'aloha2.yaml').read_text()), **change}
    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=message):
        nodes(robot=str(path))


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match=r"unknown robot 'aloha3'; shipped profiles: \['aloha1'"):
        nodes(robot='aloha3')
    with pytest.raises(ValueError, match="unknown camera set 'gopro'; known: "):
        nodes(cameras='gopro')


def test_the_simulation_is_aloha2_with_raw_images():
    with pytest.raises(ValueError, match='the simulation is the aloha2 robot'):
        resolve_graph({'robot': 'aloha1'})
    with pytest.raises(ValueError, match='the simulation publishes raw images'):
        resolve_graph({'image_transport': 'compressed'})
    assert resolve_graph({})  # the default: simulated aloha2
