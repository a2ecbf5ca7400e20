"""The ROS-free simulator core on real MuJoCo: joint layout and units, commands, cameras,
seeded resets, instructions and success checks."""

from __future__ import annotations

import numpy as np
import pytest

from aloha_sim.physics import AlohaSim, command_from_named
from aloha_sim.scenes import POT_ITEMS, PutXIntoPot, get_scene
from oft_policy_node import robot


@pytest.fixture(scope='module')
def sim():
    sim = AlohaSim('put_x_into_pot', 48, 64)
    yield sim
    sim.close()


def test_joint_state_layout_and_gripper_units(sim):
    sim.reset(seed=1)
    for opening in (1.0, 0.0):
        for arm in robot.ARMS:
            command = [0.0, -0.5, 0.5, 0.0, 0.3, 0.0, robot.normalized_to_motor(opening)]
            sim.set_command(arm, command)
        sim.step(1000)  # 2 s: the servos settle
        for arm in robot.ARMS:
            state = sim.joint_state(arm)
            assert state.position.shape == (len(robot.INTERBOTIX_JOINT_STATE_ORDER),)
            np.testing.assert_allclose(state.position[:6], command[:6], atol=0.03)
            finger = state.position[robot.INTERBOTIX_JOINT_STATE_ORDER.index('left_finger')]
            # The published finger position maps back through the robot's own conversion.
            assert robot.finger_to_normalized(finger) == pytest.approx(opening, abs=0.1)
            assert state.position[8] == pytest.approx(-finger)
            assert robot.motor_to_normalized(state.position[6]) == pytest.approx(opening, abs=0.1)
            np.testing.assert_allclose(sim.command(arm), command, atol=1e-9)


def test_bad_commands_are_rejected_and_the_target_kept(sim):
    sim.reset(seed=0)
    before = sim.command('left')
    with pytest.raises(ValueError, match='not finite'):
        sim.set_command('left', [np.nan] * 7)
    with pytest.raises(ValueError, match=r'shape \(6,\)'):
        sim.set_command('left', [0.0] * 6)
    with pytest.raises(ValueError, match='unknown arm'):
        sim.set_command('middle', [0.0] * 7)
    np.testing.assert_array_equal(sim.command('left'), before)


def test_named_commands_any_order_and_errors():
    names = ['gripper', *reversed(robot.ARM_JOINTS)]
    values = [1.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.5]
    np.testing.assert_array_equal(
        command_from_named(names, values), [1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0]
    )
    with pytest.raises(ValueError, match=r"missing \['gripper'\]"):
        command_from_named(list(robot.ARM_JOINTS), [0.0] * 6)
    with pytest.raises(ValueError, match='not finite'):
        command_from_named(names, [float('inf')] + values[1:])


def test_cameras_render_rgb8_of_the_configured_size(sim):
    sim.reset(seed=0)
    for cam in robot.CAMERAS:
        image = sim.render(cam)
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        assert image.std() > 5  # a real view, not a blank frame
    with pytest.raises(ValueError, match='unknown camera'):
        sim.render('cam_low')


def test_wrist_camera_sees_the_grasped_side():
    """The left wrist view changes when its gripper opens: the fingers are in view."""
    sim = AlohaSim('transfer_cube', 96, 128)
    sim.reset(seed=0)
    views = []
    for opening in (0.0, 1.0):
        sim.set_command('left', [*sim.command('left')[:6], robot.normalized_to_motor(opening)])
        sim.step(500)
        views.append(sim.render('cam_left_wrist').astype(np.int16))
    sim.close()
    assert np.abs(views[0] - views[1]).mean() > 1.0


def test_seeded_layouts_are_reproducible_and_differ():
    scene = get_scene('put_x_into_pot')
    assert scene.sample_layout(7) == scene.sample_layout(7)
    assert scene.sample_layout(7) != scene.sample_layout(8)
    for seed in range(20):
        positions = scene.sample_layout(seed).positions
        items = [
            np.array(positions[name.replace(' ', '_')][:2]) for name in (i.name for i in POT_ITEMS)
        ]
        gaps = [np.linalg.norm(a - b) for k, a in enumerate(items) for b in items[:k]]
        assert min(gaps) >= PutXIntoPot.min_item_gap


def test_instructions_are_checked_with_a_hint(sim):
    episode = sim.reset(seed=0, instruction='  Put RED pepper into pot ')
    assert episode.instruction == 'put red pepper into pot'
    with pytest.raises(ValueError, match="Did you mean 'put red pepper into pot'"):
        sim.reset(seed=0, instruction='put red peper into pot')
    with pytest.raises(ValueError, match="unknown scene 'insertio'.*Did you mean 'insertion'"):
        get_scene('insertio')


def test_pot_success_follows_the_instructed_object(sim):
    sim.reset(seed=2, instruction='put yellow corn into pot')
    assert not sim.success()
    pot = sim.data.mocap_pos[sim.model.body('pot').mocapid[0]].copy()
    corn = sim.model.body('yellow_corn').jntadr[0]
    adr = sim.model.jnt_qposadr[corn]
    sim.data.qpos[adr : adr + 3] = pot + [0, 0, 0.03]  # drop the corn into the pot
    sim.step(500)
    assert sim.success()
    sim.reset(seed=2, instruction='put green pepper into pot')
    sim.data.qpos[adr : adr + 3] = pot + [0, 0, 0.03]  # the corn in the pot is not the pepper
    sim.step(500)
    assert not sim.success()


def test_place_arm_moves_it_at_once_and_refuses_bad_poses(sim):
    sim.reset(seed=2)
    joints = np.array([0.3, -0.6, 0.8, 0.1, -0.2, 0.4])
    sim.place_arm('right', joints, 0.25)
    state = sim.joint_state('right')
    np.testing.assert_allclose(state.position[:6], joints, atol=1e-9)
    assert robot.motor_to_normalized(state.position[6]) == pytest.approx(0.25, abs=1e-6)
    np.testing.assert_allclose(sim.command('right')[:6], joints)  # and holds it
    with pytest.raises(ValueError, match='6 finite joint angles'):
        sim.place_arm('right', [np.nan] * 6, 0.5)
    with pytest.raises(ValueError, match='unknown arm'):
        sim.place_arm('middle', joints, 0.5)
    np.testing.assert_allclose(sim.joint_state('right').position[:6], joints, atol=1e-9)
