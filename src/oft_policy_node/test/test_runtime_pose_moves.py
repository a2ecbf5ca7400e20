"""Moves to a named pose (runtime/pose_moves.py) and the executor core's use of them: never
faster than asked, smooth at both ends, through the safety filter, chunks ignored meanwhile,
and broken by what should break them (a blocked arm, stop, stale joint states)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oft_policy_node import robot
from oft_policy_node.runtime.chunk_queue import ChunkQueue
from oft_policy_node.runtime.executor_core import ExecutorCore, ExecutorRules, ExecutorState
from oft_policy_node.runtime.pose_moves import PoseMove, both_arms
from oft_policy_node.runtime.safety import IS_GRIPPER, SafetyFilter, SafetyLimits

D = robot.ACTION_DIM
PERIOD = 1.0 / robot.CONTROL_RATE_HZ
NAMES = robot.action_joint_names()
SPEEDS = np.where(IS_GRIPPER, 1.0, 0.5)  # rad/s arm joints, opening/s grippers
SLEEP = both_arms([0.0, -1.8, 1.5, 0.0, 0.4, 0.0], 0.0)
START = both_arms([0.0, -0.96, 1.16, 0.0, -0.3, 0.0], 1.0)


def test_a_move_keeps_under_its_speeds_starts_and_ends_slowly_and_reaches_the_target():
    move = PoseMove('start pose', SLEEP, [START], SPEEDS, PERIOD, then='follow')
    samples = []
    while not move.done:
        samples.append(move.peek())
        move.advance()
    path = np.array([SLEEP, *samples])
    speed = np.abs(np.diff(path, axis=0)) / PERIOD  # (steps, D)
    assert (speed <= SPEEDS * (1 + 1e-9)).all()
    # The largest distance (shoulder 0.84 rad at 0.5 rad/s peak) sets the duration.
    assert move.duration == pytest.approx(math.ceil(0.84 / 0.5 * math.pi / 2 / PERIOD) * PERIOD)
    np.testing.assert_allclose(samples[-1], START, atol=1e-12)
    assert speed[0].max() < 0.05 * speed.max() and speed[-1].max() < 0.05 * speed.max()
    np.testing.assert_allclose(move.peek(), START)  # stays at the target once done


def test_a_short_move_still_takes_its_minimum_duration():
    move = PoseMove('start pose', START, [START + 0.001], SPEEDS, PERIOD, min_duration=1.0)
    assert move.duration == pytest.approx(1.0)


def test_a_pose_is_six_finite_joints():
    with pytest.raises(ValueError, match='6 finite joint values'):
        both_arms([0.0, 1.0], 1.0)
    with pytest.raises(ValueError, match='6 finite joint values'):
        both_arms([0.0, float('nan'), 0, 0, 0, 0], 1.0)


def make_core() -> ExecutorCore:
    return ExecutorCore(
        ChunkQueue('newest', blend_decay=3.0, max_age=1.0),
        SafetyFilter(SafetyLimits.for_robot(robot.CONTROL_RATE_HZ)),
        ExecutorRules(start_ramp_ticks=0),
    )


def perfect_arm_ticks(core: ExecutorCore, start: float, ticks: int) -> list[np.ndarray]:
    """Tick `ticks` times, the measured pose following each command."""
    commands = []
    for i in range(ticks):
        now = start + i * PERIOD
        command = core.tick(now).command
        commands.append(command)
        for arm in robot.ARMS:
            core.set_measured_arm(arm, command[robot.arm_columns(arm)], now + PERIOD / 2)
    return commands


def measure(core: ExecutorCore, pose: np.ndarray, now: float) -> None:
    for arm in robot.ARMS:
        core.set_measured_arm(arm, pose[robot.arm_columns(arm)], now)


def test_a_move_asked_before_the_pose_is_known_starts_from_the_first_command_then_follows():
    core = make_core()
    core.move_to('start pose', [START], SPEEDS, PERIOD, then='follow')
    assert core.state is ExecutorState.WAITING_FOR_POSE
    measure(core, SLEEP, 100.0)
    first = core.tick(100.0).command
    np.testing.assert_array_equal(first, SLEEP)  # the first command is still the measured pose
    assert core.state is ExecutorState.MOVING
    chunk = np.tile(SLEEP, (25, 1))
    reason = core.receive_chunk(100.0, PERIOD, NAMES, 25, chunk.ravel(), 0.1, 100.0)
    assert reason == 'the executor is moving to the start pose'
    assert core.ignored_chunks == 1
    ticks = round(core.move.duration / PERIOD)
    commands = perfect_arm_ticks(core, 100.0 + PERIOD, ticks)
    np.testing.assert_allclose(commands[-1], START, atol=1e-12)
    assert core.state is ExecutorState.RUNNING and core.moves_done == 1
    assert core.move_ticks == ticks
    assert (
        core.receive_chunk(
            101.0 + ticks * PERIOD, PERIOD, NAMES, 25, chunk.ravel(), 0.1, 101.0 + ticks * PERIOD
        )
        is None
    )


def test_a_move_then_stop_holds_until_resume():
    core = make_core()
    measure(core, START, 100.0)
    core.tick(100.0)
    core.move_to('sleep pose', [SLEEP], SPEEDS, PERIOD, then='stop')
    commands = perfect_arm_ticks(core, 100.04, round(core.move.duration / PERIOD) + 3)
    np.testing.assert_allclose(commands[-1], SLEEP, atol=1e-12)
    assert core.state is ExecutorState.STOPPED


def test_an_arm_blocked_mid_move_trips_a_tracking_fault_and_ends_the_move():
    core = make_core()
    measure(core, SLEEP, 100.0)
    core.tick(100.0)
    core.move_to('start pose', [START], SPEEDS, PERIOD, then='follow')
    now, faulted = 100.0, None
    for _ in range(200):  # the measured pose stays at SLEEP: something holds the arm
        now += PERIOD
        measure(core, SLEEP, now)
        core.tick(now)
        if core.state is ExecutorState.TRACKING_FAULT:
            faulted = core.fault
            break
    assert faulted is not None and core.move is None
    assert core.move_to('start pose', [START], SPEEDS, PERIOD) == (
        'tracking fault: call ~/resume first'
    )


def test_stop_ends_a_move_and_stale_joint_states_pause_it():
    core = make_core()
    measure(core, SLEEP, 100.0)
    core.tick(100.0)
    core.move_to('start pose', [START], SPEEDS, PERIOD, then='follow')
    commands = perfect_arm_ticks(core, 100.04, 10)
    core.tick(100.04 + 10 * PERIOD + 1.0)  # late: held without judging
    held = core.tick(100.04 + 11 * PERIOD + 1.0).command  # no state for 1 s: stale, held
    assert core.state is ExecutorState.STALE_JOINT_STATES
    np.testing.assert_array_equal(held, commands[-1])
    core.stop()
    assert core.state is ExecutorState.STOPPED and core.move is None


def test_a_move_through_waypoints_visits_each_and_ends_at_the_last():
    home = both_arms([0.0] * 6, 0.5)
    move = PoseMove('sleep pose', START, [home, SLEEP], SPEEDS, PERIOD)
    samples = []
    while not move.done:
        samples.append(move.peek())
        move.advance()
    assert any(np.allclose(sample, home, atol=1e-12) for sample in samples)
    np.testing.assert_allclose(samples[-1], SLEEP, atol=1e-12)
    speed = np.abs(np.diff(np.array([START, *samples]), axis=0)) / PERIOD
    assert (speed <= SPEEDS * (1 + 1e-9)).all()
