"""Scripted demonstrators on real MuJoCo physics, without ROS: success rate per scene over
10 seeded episodes (the 50-episode measurement is bench/bench_sim_scripted.py)."""

from __future__ import annotations

import numpy as np
import pytest
from oft_policy_node import robot

from aloha_bringup.scripted_demo_node import instruction_for
from aloha_bringup.sim.aloha_sim import AlohaSim
from aloha_bringup.sim.scripted import ScriptedDemonstrator, run_episode

EPISODES = 10


@pytest.mark.slow
@pytest.mark.parametrize('scene', ['transfer_cube', 'insertion', 'put_x_into_pot'])
def test_scripted_success_rate(scene):
    sim = AlohaSim(scene, 48, 64)
    demonstrator = ScriptedDemonstrator(sim.scene, sim.model)
    wins = [run_episode(sim, demonstrator, 1000 + k, instruction_for(scene, k, None))
            for k in range(EPISODES)]
    sim.close()
    assert sum(wins) / EPISODES >= 0.9, f'{scene}: {sum(wins)}/{EPISODES} successes'


def test_plans_are_reachable_and_within_limits():
    sim = AlohaSim('put_x_into_pot', 48, 64)
    demonstrator = ScriptedDemonstrator(sim.scene, sim.model)
    trajectory = demonstrator.plan(sim.reset(3, 'put yellow corn into pot'))
    sim.close()
    assert trajectory.ik_error_max < 0.02
    assert np.allclose(np.diff(trajectory.times), 1.0 / robot.CONTROL_RATE_HZ)
    for arm in robot.ARMS:
        commands = trajectory.commands[arm]  # (T, 7)
        for j, joint in enumerate(robot.ARM_JOINTS):
            limit = robot.ARM_LIMITS[joint]
            assert limit.lower - 1e-3 <= commands[:, j].min()
            assert commands[:, j].max() <= limit.upper + 1e-3
        openings = robot.motor_to_normalized(commands[:, 6])
        assert openings.min() >= -1e-9 and openings.max() <= 1 + 1e-9
