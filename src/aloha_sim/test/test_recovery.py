"""Recovery demos in real MuJoCo, without ROS: a grasp aimed beside the object misses it, and
the retry planned from where the arms are and the objects lie then completes the task; a
grasp that lifted its object gets no retry."""

from __future__ import annotations

import numpy as np
import pytest

from aloha_sim import recovery, scripted
from aloha_sim.physics import AlohaSim
from aloha_sim.scripted import ScriptedDemonstrator, Trajectory
from oft_policy_node import robot


def play(sim: AlohaSim, trajectory: Trajectory, rows: int | None = None) -> dict[str, np.ndarray]:
    return scripted.play(sim, trajectory, robot.CONTROL_RATE_HZ, rows)


def test_aimed_beside_moves_only_the_target_sideways_and_keeps_its_side():
    sim = AlohaSim('put_x_into_pot', 16, 16)
    for seed in range(40):
        instruction = sim.scene.instructions()[seed % 3]
        episode = sim.reset(seed, instruction)
        beside = recovery.aimed_beside(episode, sim.scene, np.random.default_rng(seed))
        target = sim.scene.target_object(instruction)
        before, after = episode.layout.positions, beside.layout.positions
        shift = np.subtract(after[target], before[target])
        assert np.hypot(*shift[:2]) == pytest.approx(recovery.MISS_DISTANCE)
        assert shift[2] == 0.0
        assert np.sign(after[target][0]) == np.sign(before[target][0])  # the same arm picks
        assert {k: v for k, v in after.items() if k != target} == {
            k: v for k, v in before.items() if k != target
        }
    sim.close()


@pytest.mark.parametrize(
    'scene, seed, instruction',
    [('put_x_into_pot', 1000, 'put red pepper into pot'), ('transfer_cube', 3, None)],
)
def test_a_missed_grasp_is_retried_from_where_the_arms_are(scene, seed, instruction):
    sim = AlohaSim(scene, 16, 16)
    demonstrator = ScriptedDemonstrator(sim.scene, sim.model)
    episode = sim.reset(seed, instruction)
    missed = demonstrator.plan(
        recovery.aimed_beside(episode, sim.scene, np.random.default_rng(seed))
    )
    at_check = round(recovery.LIFT_CHECK_S * robot.CONTROL_RATE_HZ)
    joints = play(sim, missed, at_check)
    objects = sim.state()['objects']
    assert not recovery.lifted(episode, sim.scene, objects)
    again = recovery.retry(demonstrator, episode, objects, joints)
    assert again is not None and again.ik_error_max < 0.02
    for arm in robot.ARMS:  # it starts where the arms were sent, without a jump
        np.testing.assert_allclose(again.commands[arm][0, :6], joints[arm][:6], atol=0.05)
    play(sim, again)
    sim.step(250)
    assert sim.success()
    sim.close()


def test_a_grasp_that_lifted_its_object_gets_no_retry():
    sim = AlohaSim('put_x_into_pot', 16, 16)
    demonstrator = ScriptedDemonstrator(sim.scene, sim.model)
    episode = sim.reset(3, 'put red pepper into pot')
    plan = demonstrator.plan(episode)
    joints = play(sim, plan, round(recovery.LIFT_CHECK_S * robot.CONTROL_RATE_HZ))
    objects = sim.state()['objects']
    assert recovery.lifted(episode, sim.scene, objects)
    assert recovery.retry(demonstrator, episode, objects, joints) is None
    sim.close()
