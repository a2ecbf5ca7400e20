"""Failure categories from the simulation's ground truth: scripted episodes in real MuJoCo,
played as planned and broken on purpose (another instruction, a gripper that never closes,
one that opens during the carry, arms that never move), each must land in its category."""

from __future__ import annotations

import numpy as np
import pytest

from aloha_bringup.evaluation.closed_loop_metrics import StateSample, episode_measures
from aloha_bringup.evaluation.failure_modes import (
    BESIDE_POT,
    DROPPED,
    GRASP_MISSED,
    HANDOVER_MISSED,
    HELD_AT_TIME_OUT,
    NO_APPROACH,
    SUCCESS,
    UNSTABLE,
    WRONG_OBJECT,
    still_seconds,
)
from aloha_sim.physics import AlohaSim
from aloha_sim.scenes import get_scene
from aloha_sim.scripted import ScriptedDemonstrator
from oft_policy_node import robot

SEED = 3
GREEN, RED = 'put green pepper into pot', 'put red pepper into pot'


def play(commands: dict[str, np.ndarray], seed: int, instruction: str) -> list[StateSample]:
    """Play per-arm command rows (T, 7) at the control rate; the state after every tick."""
    sim = AlohaSim('put_x_into_pot', 16, 16)
    try:
        sim.reset(seed, instruction)
        steps = max(1, round(1.0 / (robot.CONTROL_RATE_HZ * sim.timestep)))
        samples = []
        for i in range(len(commands['left'])):
            for arm in robot.ARMS:
                sim.set_command(arm, commands[arm][i])
            sim.step(steps)
            state = sim.state()
            samples.append(StateSample(round(sim.time, 4), state['grasp'], state['objects']))
        return samples
    finally:
        sim.close()


@pytest.fixture(scope='module')
def plan():
    sim = AlohaSim('put_x_into_pot', 16, 16)
    try:
        demonstrator = ScriptedDemonstrator(sim.scene, sim.model)
        return demonstrator.plan(sim.reset(SEED, GREEN))
    finally:
        sim.close()


def mode(
    samples: list[StateSample],
    instruction: str = GREEN,
    success: bool = False,
    unstable: bool = False,
    scene: str = 'put_x_into_pot',
) -> str:
    """The category as the evaluators record it (episode_measures)."""
    measures = episode_measures(get_scene(scene), instruction, samples, success, 0.05, unstable)
    return measures['failure_mode']


def active_arm(plan) -> str:
    moves = {arm: np.ptp(plan.commands[arm][:, :6], axis=0).max() for arm in robot.ARMS}
    return max(moves, key=moves.get)


def test_the_plan_played_is_a_success_and_wrong_for_another_instruction(plan):
    samples = play(plan.commands, SEED, GREEN)
    assert mode(samples, GREEN, success=True) == SUCCESS
    # Had it been told "red", the same episode went for the wrong object first.
    assert mode(samples, RED) == WRONG_OBJECT
    assert mode(samples, GREEN, unstable=True) == UNSTABLE


def test_a_gripper_that_never_closes_misses_the_grasp(plan):
    commands = {arm: rows.copy() for arm, rows in plan.commands.items()}
    arm = active_arm(plan)
    commands[arm][:, 6] = commands[arm][:, 6].max()  # open all the way through
    assert mode(play(commands, SEED, GREEN)) == GRASP_MISSED


def test_opening_during_the_carry_drops_it_and_stopping_there_holds_it(plan):
    arm = active_arm(plan)
    carry = int(4.6 * robot.CONTROL_RATE_HZ)  # between the lift (4.2 s) and the pot (5.4 s)
    dropped = {a: rows.copy() for a, rows in plan.commands.items()}
    dropped[arm][carry:, 6] = dropped[arm][:, 6].max()
    assert mode(play(dropped, SEED, GREEN)) == DROPPED
    held = {a: rows[:carry] for a, rows in plan.commands.items()}  # time out mid-carry
    assert mode(play(held, SEED, GREEN)) == HELD_AT_TIME_OUT


def test_arms_that_never_move_never_approach(plan):
    still = {arm: np.repeat(rows[:1], 50, axis=0) for arm, rows in plan.commands.items()}
    samples = play(still, SEED, GREEN)
    assert mode(samples) == NO_APPROACH
    assert still_seconds(samples) == pytest.approx(samples[-1].t - samples[0].t, abs=1e-6)


def synthetic(lift_to: tuple[float, float], pot=(0.0, 0.6, 0.0)) -> list[StateSample]:
    """The target picked at (0.2, 0.5), lifted and let go at `lift_to` (x, y)."""
    grasp = {'left': (0.2, 0.5, 0.03), 'right': (-0.3, 0.0, 0.3)}
    objects = {'pot': pot, 'red_pepper': (-0.2, 0.4, 0.022), 'yellow_corn': (-0.1, 0.3, 0.02)}
    path = [(0.2, 0.5, 0.022), (0.2, 0.5, 0.1), (*lift_to, 0.1), (*lift_to, 0.022)]
    return [
        StateSample(0.1 * i, grasp, {**objects, 'green_pepper': p}) for i, p in enumerate(path)
    ]


def test_where_a_lifted_target_came_down_decides_dropped_or_beside_the_pot():
    assert mode(synthetic((0.1, 0.5))) == DROPPED  # 14 cm from the pot's centre
    assert mode(synthetic((0.0, 0.71))) == BESIDE_POT  # 11 cm: just past the 8 cm rim
    cube = [
        StateSample(0.0, {'right': (0.0, 0.5, 0.02)}, {'box': (0.0, 0.5, 0.02)}),
        StateSample(0.1, {'right': (0.0, 0.5, 0.2)}, {'box': (0.0, 0.5, 0.2)}),
    ]
    cube_task = get_scene('transfer_cube').default_instruction
    assert mode(cube, cube_task, scene='transfer_cube') == HANDOVER_MISSED
    assert mode(cube + cube[:1], cube_task, scene='transfer_cube') == DROPPED


def test_still_seconds_is_the_longest_stretch_within_a_centimetre():
    def at(t: float, x: float) -> StateSample:
        return StateSample(t, {'left': (x, 0.0, 0.0)}, {})

    samples = [at(0.0, 0.0), at(1.0, 0.005), at(2.0, 0.009), at(3.0, 0.05), at(3.5, 0.055)]
    assert still_seconds(samples) == 2.0  # 0-2 s within 1 cm of the start; then 0.5 s
