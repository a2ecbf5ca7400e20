"""The simulation training recipes' rendered data sets on real MuJoCo: pretrain_vision's
layouts carry their seeds' object positions, render_grounding pairs every instruction with the
object it names."""

from __future__ import annotations

import numpy as np
import pytest

from aloha_sim.physics import AlohaSim
from aloha_sim.scenes import PutXIntoPot
from oft_policy_node import robot


def test_rendered_layouts_carry_their_seeds_object_positions():
    from aloha_bringup.recipes.pretrain_vision import render_layouts

    data = render_layouts('put_x_into_pot', 4, first_seed=7, height=48, width=64)
    assert data.images.shape == (4, 48, 64, 3) and data.objects[0] == 'pot'
    layout = PutXIntoPot().sample_layout(9)
    np.testing.assert_allclose(data.positions[2], [layout.positions[o][:2] for o in data.objects])
    # Even views keep the start pose; odd ones move the arms, so they differ from the start view.
    sim = AlohaSim('put_x_into_pot', 48, 64)
    try:
        for k in (0, 1):
            sim.reset(7 + k)
            same = np.array_equal(sim.render('cam_high'), data.images[k])
            assert same == (k == 0)
    finally:
        sim.close()


def test_grounding_views_pair_each_instruction_with_its_object():
    from aloha_bringup.recipes.render_grounding import render_grounding
    from oft_training.grounding import GroundingSet

    data = render_grounding('put_x_into_pot', 4, first_seed=7, height=48, width=64)
    assert set(data.images) == set(robot.CAMERAS) and data.images['cam_high'].shape[0] == 4
    scene = PutXIntoPot()
    for instruction, target in zip(data.instructions, data.targets, strict=True):
        name = scene.target_item(instruction).name.replace(' ', '_')
        assert data.objects[target] == name
        np.testing.assert_allclose(
            data.target_xy(2, data.instructions.index(instruction)),
            scene.sample_layout(9).positions[name][:2],
        )
    # Proprio as convert reads it from joint_states: the start pose on even views, moved arms
    # on odd ones.
    sim = AlohaSim('put_x_into_pot', 48, 64)
    try:
        sim.reset(7)
        start = np.concatenate(
            [
                [
                    *sim.joint_state(arm).position[:6],
                    robot.finger_to_normalized(sim.joint_state(arm).position[7]),
                ]
                for arm in robot.ARMS
            ]
        )
    finally:
        sim.close()
    np.testing.assert_allclose(data.proprio[0], start, atol=1e-6)
    assert np.abs(data.proprio[1] - start).max() > 0.05
    with pytest.raises(ValueError, match='index objects'):
        GroundingSet(
            data.images, data.proprio, data.positions, data.objects, data.instructions, (0, 1, 9)
        )
