"""The safety layer under hypothesis: random, huge, NaN/inf and mis-shaped targets never
produce a command outside the joint limits, a step beyond the per-tick limit or a command
beyond the tracking tolerance of the measured pose, and nothing raises. The executor core's
rules under random event streams are in test_runtime_executor_core.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oft_policy_node import robot
from oft_policy_node.runtime.safety import (
    IS_GRIPPER,
    ChunkRejected,
    FutureStamp,
    SafetyFilter,
    SafetyLimits,
    validate_chunk,
)

D = robot.ACTION_DIM
RATE = robot.CONTROL_RATE_HZ
LIMITS = SafetyLimits.for_robot(RATE)
NAMES = robot.action_joint_names()

wild_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(-1e30, 1e30),
    st.floats(-4.0, 4.0),
)


def unit_pose(unit: list[float]) -> np.ndarray:
    return LIMITS.lower + np.array(unit) * (LIMITS.upper - LIMITS.lower)


@settings(max_examples=300, deadline=None)
@given(
    target=st.lists(wild_floats, min_size=D, max_size=D),
    previous_unit=st.lists(st.floats(0.0, 1.0), min_size=D, max_size=D),
    offset=st.lists(st.floats(-0.5, 0.5), min_size=D, max_size=D),
    step_scale=st.floats(0.01, 1.0),
)
def test_filter_keeps_limits_step_and_tracking_bound(target, previous_unit, offset, step_scale):
    previous = unit_pose(previous_unit)
    # The measured pose within the tolerance of the previous command, as the executor keeps it.
    measured = np.clip(
        previous + np.array(offset) * LIMITS.tracking_tolerance, LIMITS.lower, LIMITS.upper
    )
    filtered = SafetyFilter(LIMITS).apply(np.array(target), previous, measured, step_scale)
    if not np.isfinite(np.array(target, dtype=np.float64)).all():
        assert filtered is None
        return
    command = filtered.command
    assert command.shape == (D,) and np.isfinite(command).all()
    assert (command >= LIMITS.lower).all() and (command <= LIMITS.upper).all()
    assert (np.abs(command - previous) <= LIMITS.max_step * step_scale + 1e-12).all()
    gap = command - measured
    arm = ~IS_GRIPPER
    assert (np.abs(gap[arm]) <= LIMITS.tracking_tolerance[arm] + 1e-12).all()
    assert (gap[IS_GRIPPER] <= LIMITS.tracking_tolerance[IS_GRIPPER] + 1e-12).all()


def test_tracking_bound_clips_and_reports_beyond_the_tolerance():
    filter_ = SafetyFilter(SafetyLimits.for_robot(RATE, arm_tolerance=0.3))
    measured = np.zeros(D)
    measured[robot.arm_columns('left').stop - 1] = 0.5  # left gripper half open
    previous = measured.copy()
    previous[1] = 0.25  # left shoulder commanded 0.25 rad ahead of where it is
    target = previous.copy()
    target[1] = 1.0  # wants more: the step allows 0.25 + pi/25, the bound 0.3
    target[6] = 0.0  # closing the left gripper on an object: allowed whatever it measures
    filtered = filter_.apply(target, previous, measured)
    assert filtered.command[1] == pytest.approx(0.3)
    assert filtered.tracking_error[1] == pytest.approx(0.25 + math.pi / 25)
    assert filtered.beyond_tolerance.tolist() == [i == 1 for i in range(D)]
    assert filtered.command[6] == pytest.approx(0.5 - robot.GRIPPER_VELOCITY_LIMIT / 25)
    assert filtered.tracking_error[6] == 0.0  # the closing side never counts
    # Opening beyond the measured opening + 0.6 is clipped (a gripper that cannot open).
    previous[6], target[6], measured[6] = 0.7, 1.0, 0.1
    filtered = filter_.apply(target, previous, measured)
    assert filtered.command[6] == pytest.approx(0.7) and filtered.beyond_tolerance[6]


def test_validate_chunk_names_the_problem():
    good = np.zeros((2, D))
    assert validate_chunk(1.0, 0.04, NAMES, 2, good.ravel(), 1.0).actions.shape == (2, D)
    cases = [
        ((1.0, 0.04, NAMES[::-1], 2, good.ravel()), 'joint_names'),
        ((1.0, 0.0, NAMES, 2, good.ravel()), 'period 0.0'),
        ((math.nan, 0.04, NAMES, 2, good.ravel()), 'stamp nan'),
        ((1.0, 0.04, NAMES, 0, []), 'num_steps 0'),
        ((1.0, 0.04, NAMES, 3, good.ravel()), '28 actions do not fill num_steps x D = 3'),
        (
            (1.0, 0.04, NAMES, 2, np.where(np.eye(2, D) > 0, np.nan, 0.0).ravel()),
            '2 actions are NaN',
        ),
    ]
    for args, reason in cases:
        with pytest.raises(ChunkRejected, match=reason.replace('(', r'\(')):
            validate_chunk(*args, received=1.0)
    # A stamp ahead of the executor clock: within the tolerance it is accepted.
    assert validate_chunk(1.09, 0.04, NAMES, 2, good.ravel(), 1.0, 0.1).received == 1.0
    with pytest.raises(
        FutureStamp,
        match=r'stamp 1.200 s lies 0.200 s ahead of the executor '
        r'clock \(1.000 s\), more than max_future_stamp 0.1',
    ):
        validate_chunk(1.2, 0.04, NAMES, 2, good.ravel(), 1.0, 0.1)


def test_step_limit_is_velocity_over_rate():
    limits = SafetyLimits.for_robot(25.0, velocity_scale=0.5)
    assert limits.max_step[0] == pytest.approx(math.pi * 0.5 / 25.0)
    assert limits.max_step[6] == pytest.approx(robot.GRIPPER_VELOCITY_LIMIT * 0.5 / 25.0)
    with pytest.raises(ValueError, match='velocity_scale 1.5'):
        SafetyLimits.for_robot(25.0, velocity_scale=1.5)


def test_tracking_tolerances_per_joint_and_refusals():
    limits = SafetyLimits.for_robot(
        25.0, arm_tolerance=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], gripper_tolerance=0.7
    )
    assert limits.tracking_tolerance.tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] * 2
    with pytest.raises(ValueError, match=r'one or 6 finite numbers > 0 \(rad, waist'):
        SafetyLimits.for_robot(25.0, arm_tolerance=[0.1, 0.2])
    with pytest.raises(ValueError, match='one or 6 finite numbers'):
        SafetyLimits.for_robot(25.0, arm_tolerance=0.0)
    with pytest.raises(ValueError, match='gripper tracking tolerance nan'):
        SafetyLimits.for_robot(25.0, gripper_tolerance=float('nan'))
