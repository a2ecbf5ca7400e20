"""The safety layer and the executor core under hypothesis: random, huge, NaN/inf and
mis-shaped chunks never produce a command outside the joint limits or a step beyond the
per-tick limit, and nothing raises."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oft_policy_node import robot
from oft_policy_node.runtime.chunk_queue import ChunkQueue
from oft_policy_node.runtime.executor_core import ExecutorCore
from oft_policy_node.runtime.safety import ChunkRejected, SafetyFilter, SafetyLimits, \
    validate_chunk

D = robot.ACTION_DIM
RATE = robot.CONTROL_RATE_HZ
LIMITS = SafetyLimits.for_robot(RATE)
NAMES = robot.action_joint_names()

wild_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                        st.floats(-1e30, 1e30), st.floats(-4.0, 4.0))


@st.composite
def received_chunks(draw) -> dict:
    """What a broken or hostile policy might publish: any stamp offset, period, shape, names."""
    num_steps = draw(st.integers(0, 30))
    size = draw(st.one_of(st.just(num_steps * D), st.integers(0, 40 * D)))
    return {'stamp_offset': draw(st.one_of(st.floats(-2.0, 0.5), st.just(float('nan')))),
            'period': draw(st.one_of(st.just(0.04), st.floats(-1.0, 1.0),
                                     st.just(float('inf')))),
            'joint_names': draw(st.one_of(st.just(NAMES), st.just(NAMES[::-1]),
                                          st.just(NAMES[:7]))),
            'num_steps': num_steps,
            'actions': draw(st.lists(wild_floats, min_size=size, max_size=size))}


def assert_safe(command: np.ndarray, previous: np.ndarray) -> None:
    assert command.shape == (D,) and np.isfinite(command).all()
    assert (command >= LIMITS.lower).all() and (command <= LIMITS.upper).all()
    assert (np.abs(command - previous) <= LIMITS.max_step + 1e-12).all()


@settings(max_examples=300, deadline=None)
@given(target=st.lists(wild_floats, min_size=D, max_size=D),
       previous_unit=st.lists(st.floats(0.0, 1.0), min_size=D, max_size=D))
def test_filter_keeps_limits_and_step(target, previous_unit):
    previous = LIMITS.lower + np.array(previous_unit) * (LIMITS.upper - LIMITS.lower)
    command = SafetyFilter(LIMITS).apply(np.array(target), previous)
    if not np.isfinite(np.array(target, dtype=np.float64)).all():
        assert command is None
    else:
        assert_safe(command, previous)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(received_chunks(), min_size=1, max_size=6),
       merge_rule=st.sampled_from(['newest', 'blend', 'commit', 'sync']),
       start=st.lists(st.floats(-5.0, 5.0), min_size=D, max_size=D))
def test_executor_core_survives_any_chunk_stream(chunks, merge_rule, start):
    core = ExecutorCore(ChunkQueue(merge_rule, blend_decay=3.0), SafetyFilter(LIMITS))
    for arm in robot.ARMS:
        core.set_measured_arm(arm, np.array(start)[robot.arm_columns(arm)])
    now = 100.0
    previous = core.tick(now).command  # the measured pose clipped into the limits
    assert_safe(previous, previous)
    for chunk in chunks:
        core.receive_chunk(now + chunk['stamp_offset'], chunk['period'], chunk['joint_names'],
                           chunk['num_steps'], chunk['actions'], 0.3)
        for _ in range(3):
            now += 1.0 / RATE
            command = core.tick(now).command
            assert_safe(command, previous)
            previous = command
    assert core.accepted_chunks + core.rejected_chunks == len(chunks)
    assert core.fresh_ticks + core.stalls + core.waits == core.ticks - 1


def test_validate_chunk_names_the_problem():
    good = np.zeros((2, D))
    assert validate_chunk(1.0, 0.04, NAMES, 2, good.ravel()).actions.shape == (2, D)
    cases = [((1.0, 0.04, NAMES[::-1], 2, good.ravel()), 'joint_names'),
             ((1.0, 0.0, NAMES, 2, good.ravel()), 'period 0.0'),
             ((math.nan, 0.04, NAMES, 2, good.ravel()), 'stamp nan'),
             ((1.0, 0.04, NAMES, 0, []), 'num_steps 0'),
             ((1.0, 0.04, NAMES, 3, good.ravel()), '28 actions do not fill num_steps x D = 3'),
             ((1.0, 0.04, NAMES, 2, np.where(np.eye(2, D) > 0, np.nan, 0.0).ravel()),
              '2 actions are NaN')]
    for args, reason in cases:
        with pytest.raises(ChunkRejected, match=reason.replace('(', r'\(')):
            validate_chunk(*args)


def test_step_limit_is_velocity_over_rate():
    limits = SafetyLimits.for_robot(25.0, velocity_scale=0.5)
    assert limits.max_step[0] == pytest.approx(math.pi * 0.5 / 25.0)
    assert limits.max_step[6] == pytest.approx(robot.GRIPPER_VELOCITY_LIMIT * 0.5 / 25.0)
    with pytest.raises(ValueError, match='velocity_scale 1.5'):
        SafetyLimits.for_robot(25.0, velocity_scale=1.5)


def test_first_command_is_the_measured_pose_and_moves_in_steps():
    core = ExecutorCore(ChunkQueue(), SafetyFilter(LIMITS))
    assert core.tick(0.0).command is None  # no pose yet: no command at all
    pose = np.full(D, 0.1)
    for arm in robot.ARMS:
        core.set_measured_arm(arm, pose[robot.arm_columns(arm)])
    first = core.tick(0.04)
    np.testing.assert_array_equal(first.command, pose)
    assert not first.fresh
    far = np.full((25, D), 1.0)  # 0.9 rad away: reached in steps of pi/25
    assert core.receive_chunk(0.04, 0.04, NAMES, 25, far.ravel(), 0.3) is None
    second = core.tick(0.08).command
    np.testing.assert_allclose(second[:6], 0.1 + math.pi / 25)
    assert second[6] == pytest.approx(0.1 + robot.GRIPPER_VELOCITY_LIMIT / 25)
    assert core.safety.clamped_commands == 1
