"""The executor core's safety rules, each tried against what would break it: stamps from the
future and the past, a policy that falls silent, bursts, a blocked, lagging or torqued-off
joint, a gripper closing on an object, an arm whose joint states stop, stop/resume; exact
expected values where the rule defines them, and a property test over random event streams
for every merge rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oft_policy_node import robot
from oft_policy_node.runtime.chunk_queue import MERGE_RULES, ChunkQueue
from oft_policy_node.runtime.executor_core import ExecutorCore, ExecutorRules, ExecutorState
from oft_policy_node.runtime.safety import IS_GRIPPER, SafetyFilter, SafetyLimits

D = robot.ACTION_DIM
K = robot.CHUNK_SIZE
PERIOD = 1.0 / robot.CONTROL_RATE_HZ
LIMITS = SafetyLimits.for_robot(robot.CONTROL_RATE_HZ)
NAMES = robot.action_joint_names()
# A pose well inside the limits: per arm 6 joints (rad), gripper half open.
POSE = np.tile([0.0, -0.5, 0.5, 0.0, 0.3, 0.0, 0.5], 2)
SHOULDER = NAMES.index('follower_left/shoulder')
TOLERANCE = LIMITS.tracking_tolerance[SHOULDER]  # rad, the default of every arm joint
LEFT_GRIPPER = NAMES.index('follower_left/gripper')


def make_core(
    merge_rule: str = 'newest', max_age: float = 1.0, ramp: int = 0, **rules
) -> ExecutorCore:
    return ExecutorCore(
        ChunkQueue(merge_rule, blend_decay=3.0, max_age=max_age),
        SafetyFilter(LIMITS),
        ExecutorRules(start_ramp_ticks=ramp, **rules),
    )


def measure(core: ExecutorCore, pose: np.ndarray, now: float) -> None:
    for arm in robot.ARMS:
        core.set_measured_arm(arm, pose[robot.arm_columns(arm)], now)


def started(core: ExecutorCore, now: float = 100.0) -> np.ndarray:
    measure(core, POSE, now)
    first = core.tick(now)
    np.testing.assert_array_equal(first.command, POSE)
    assert not first.fresh
    return first.command


def send(core: ExecutorCore, stamp: float, rows: np.ndarray, now: float) -> str | None:
    return core.receive_chunk(stamp, PERIOD, NAMES, len(rows), rows.ravel(), 0.3, now)


def drift(column: int, per_row: float, start: np.ndarray = POSE) -> np.ndarray:
    """(K, D): `start` with one column moving `per_row` each row."""
    rows = np.tile(start, (K, 1))
    rows[:, column] += per_row * np.arange(1, K + 1)
    return rows


def test_first_command_is_the_measured_pose_and_the_ramp_starts_slow():
    core = make_core(ramp=50)
    assert core.tick(99.96).command is None  # no pose yet: no command at all
    now = 100.0
    started(core, now)
    far = np.tile(POSE + 1.0, (K, 1))  # 1 rad away on every arm joint
    far[:, IS_GRIPPER] = POSE[IS_GRIPPER]
    send(core, now, far, now)
    commands = []
    for _ in range(24):
        now += PERIOD
        measure(core, core.last_command, now)  # a perfect arm
        commands.append(core.tick(now).command)
    steps = np.diff(np.vstack([POSE, commands]), axis=0)[:, 0]  # (24,) waist, rad per tick
    # Tick n of the ramp may move n/50 of the velocity limit: pi/25 * n/50 rad.
    np.testing.assert_allclose(steps, math.pi / 25 * np.arange(1, 25) / 50)


def test_ramp_duration_and_peak_speed_to_a_far_first_target():
    core = make_core(merge_rule='sync', ramp=50)
    now = 100.0
    started(core, now)
    far = np.tile(POSE, (60, 1))  # longer than the ramp takes
    far[:, :6] += 1.0
    send(core, now, far, now)
    pose, t = POSE.copy(), 0.0
    speeds = []
    while not np.allclose(pose[:6], POSE[:6] + 1.0):
        now += PERIOD
        t += PERIOD
        measure(core, pose, now)
        command = core.tick(now).command
        speeds.append(np.abs(command[:6] - pose[:6]).max() / PERIOD)
        pose = command
    # Tick n may move n/50 of pi/25 rad: after n ticks n(n+1)/2 * pi/1250 rad, >= 1 rad first
    # for n = 28 (1.12 s); the fastest tick is the 27th, at 27/50 of pi rad/s.
    assert t == pytest.approx(1.12)
    assert max(speeds) == pytest.approx(27 / 50 * math.pi, rel=1e-9)


@pytest.mark.parametrize('merge_rule', MERGE_RULES)
def test_future_stamps_are_rejected_whole_and_counted(merge_rule):
    core = make_core(merge_rule)
    now = 100.0
    started(core, now)
    reason = send(core, now + 5.0, drift(0, 0.01), now)
    assert 'lies 5.000 s ahead of the executor clock' in reason
    assert (core.future_chunks, core.rejected_chunks, core.accepted_chunks) == (1, 1, 0)
    for _ in range(10):
        now += PERIOD
        measure(core, POSE, now)
        assert not core.tick(now).fresh
    assert send(core, now + 0.09, drift(0, 0.01), now) is None  # within max_future_stamp


def test_chunks_before_the_clock_starts_are_ignored_not_judged():
    """Under use_sim_time the clock reads 0 until the first /clock: a stamp cannot be judged
    against it, so the chunk is ignored (counted), not rejected as from the future."""
    core = make_core('sync')
    reason = send(core, 130.0, drift(0, 0.01), 0.0)
    assert 'clock has not started' in reason
    assert (core.ignored_chunks, core.rejected_chunks, core.future_chunks) == (1, 0, 0)


def seconds_until_hold(merge_rule: str, stamp_offset: float, max_age: float) -> float:
    """One chunk arrives at t = 100 s stamped `stamp_offset` from then, the policy falls
    silent: how long after the arrival the arms still get fresh targets."""
    core = make_core(merge_rule, max_age=max_age)
    now = 100.0
    started(core, now)
    assert send(core, now + stamp_offset, drift(0, 0.002), now) is None
    last_fresh = now
    for _ in range(200):
        now += PERIOD
        measure(core, core.last_command, now)
        if core.tick(now).fresh:
            last_fresh = now
    return round(last_fresh - 100.0, 6)


@pytest.mark.parametrize('stamp_offset', [-0.2, 0.0, 0.09])
@pytest.mark.parametrize('merge_rule', MERGE_RULES)
def test_a_silent_policy_drives_the_arms_no_longer_than_the_bound(merge_rule, stamp_offset):
    """The bound: max_chunk_age after the last arrival; sync adds the rest of the chunk
    being played, (K - 1) periods."""
    max_age = 0.3
    bound = max_age + ((K - 1) * PERIOD if merge_rule == 'sync' else 0.0)
    held_after = seconds_until_hold(merge_rule, stamp_offset, max_age)
    assert held_after <= bound + 1e-9
    if merge_rule == 'sync':  # began at the next tick and played its K rows
        assert held_after == pytest.approx(K * PERIOD)
    elif stamp_offset < 0 and merge_rule == 'prefix':
        assert held_after == 0.0  # observed before the first command: never started
    elif stamp_offset < 0:
        assert held_after == pytest.approx(max_age + stamp_offset, abs=PERIOD)  # stamp age
    else:
        assert held_after == pytest.approx(max_age, abs=PERIOD)  # arrival age


def test_bursts_of_chunks_keep_the_bound_from_the_last_arrival():
    core = make_core('newest', max_age=0.3)
    now = 100.0
    started(core, now)
    for i in range(20):  # a burst: 20 chunks in one tick, each newer than the last
        send(core, now + 0.001 * i, drift(0, 0.002), now)
    fresh = []
    for _ in range(30):
        now += PERIOD
        measure(core, core.last_command, now)
        fresh.append(core.tick(now).fresh)
    assert len(core.queue) <= 8  # the queue keeps the newest few
    assert sum(fresh) == 7 and not any(fresh[8:])  # 0.04 .. 0.28 s after the arrival


def blocked_run(
    core: ExecutorCore, ticks: int, now: float = 100.0
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """The left shoulder is held in place while a chunk stream pushes it 0.05 rad per row;
    every other joint follows its command exactly. Returns commands, measured poses, now."""
    measured = POSE.copy()
    commands, poses = [], []
    for tick in range(ticks):
        if tick % 5 == 0:
            send(core, now, drift(SHOULDER, 0.05, start=core.last_command), now)
        now += PERIOD
        measure(core, measured, now)
        command = core.tick(now).command
        commands.append(command)
        poses.append(measured.copy())
        measured = np.where(np.arange(D) == SHOULDER, POSE, command)
    return commands, poses, now


def test_a_blocked_joint_trips_a_tracking_fault_and_holds_until_resume():
    core = make_core('newest')
    started(core)
    commands, poses, now = blocked_run(core, 30)
    gaps = np.abs(np.array(commands) - np.array(poses))[:, SHOULDER]
    assert gaps.max() <= TOLERANCE + 1e-12  # never beyond the tolerance of the measured pose
    assert core.state is ExecutorState.TRACKING_FAULT and core.tracking_faults == 1
    fault = core.fault
    assert fault.joint == 'follower_left/shoulder' and fault.ticks == 5
    # Held at the tolerance while the target runs on: the step-limited target is a step beyond.
    assert fault.error == pytest.approx(TOLERANCE + math.pi / 25)
    assert 'tracking error on follower_left/shoulder' in fault.describe()
    # Re-based on the measured pose: nothing keeps pushing against the obstacle.
    np.testing.assert_allclose(core.last_command[SHOULDER], POSE[SHOULDER])
    held = core.last_command
    ignored = core.ignored_chunks  # blocked_run's own chunks after the trip
    assert 'tracking fault; call ~/resume' in send(core, now, drift(0, 0.01), now)
    assert core.ignored_chunks == ignored + 1
    for _ in range(10):
        now += PERIOD
        measure(core, held, now)
        result = core.tick(now)
        assert not result.fresh
        np.testing.assert_array_equal(result.command, held)
    core.resume()
    assert core.state is ExecutorState.RUNNING and core.fault is None
    send(core, now, drift(0, 0.01, start=held), now)
    now += PERIOD
    assert core.tick(now).fresh


def test_a_lagging_arm_within_the_tolerance_never_trips():
    """A first-order arm that covers half the remaining gap per tick, driven at the velocity
    limit (pi/25 rad per tick): its lag settles at two steps, well inside the tolerance."""
    core = make_core('newest')
    now = 100.0
    started(core, now)
    measured = POSE.copy()
    for tick in range(100):
        if tick % 20 == 0:  # a target 2 rad on: the command moves at the velocity limit
            target = core.last_command + np.where(np.arange(D) == SHOULDER, 2.0, 0.0)
            send(core, now, np.tile(target, (K, 1)), now)
        now += PERIOD
        measure(core, measured, now)
        command = core.tick(now).command
        measured = measured + 0.5 * (command - measured)
    assert core.tracking_faults == 0
    assert core.tracking.peak_error[SHOULDER] == pytest.approx(2 * math.pi / 25, rel=0.05)


def test_the_gripper_closing_on_an_object_never_trips_and_keeps_its_grip():
    core = make_core('newest')
    now = 100.0
    started(core, now)
    measured = POSE.copy()
    close = np.tile(POSE, (K, 1))
    close[:, LEFT_GRIPPER] = 0.0
    for tick in range(100):
        if tick % 20 == 0:
            send(core, now, close, now)
        now += PERIOD
        measured[LEFT_GRIPPER] = 0.35  # the fingers stop on the object
        measure(core, measured, now)
        core.tick(now)
    assert core.tracking_faults == 0
    assert core.last_command[LEFT_GRIPPER] == 0.0  # still squeezing (the current limit caps it)
    # A shoulder fault now re-bases the arm but not the grip: the object is not dropped.
    commands, _, now = blocked_run(core, 30, now)
    assert core.state is ExecutorState.TRACKING_FAULT
    assert core.last_command[LEFT_GRIPPER] == 0.0


def test_a_gripper_that_cannot_open_trips():
    core = make_core('newest')
    now = 100.0
    started(core, now)
    measured = POSE.copy()
    measured[LEFT_GRIPPER] = 0.0  # jammed closed
    opened = np.tile(POSE, (K, 1))
    opened[:, LEFT_GRIPPER] = 1.0
    send(core, now, opened, now)
    for _ in range(30):
        now += PERIOD
        measure(core, measured, now)
        command = core.tick(now).command
        assert command[LEFT_GRIPPER] - measured[LEFT_GRIPPER] <= 0.6 + 1e-12
    assert core.fault.joint == 'follower_left/gripper'
    assert core.last_command[LEFT_GRIPPER] == 0.0  # re-based: stops pushing it open


def test_stale_joint_states_hold_and_recover_on_their_own():
    core = make_core('newest', max_joint_state_age=0.25, ramp=10)
    now = 100.0
    started(core, now)
    states_at = {arm: now for arm in robot.ARMS}
    fresh, states = [], []
    for tick in range(60):
        if tick % 10 == 0:
            send(core, now, drift(0, 0.01, start=core.last_command), now)
        now += PERIOD
        for arm in robot.ARMS:
            silent = arm == 'left' and 10 <= tick < 30  # the left driver stops for 0.8 s
            if not silent:
                core.set_measured_arm(arm, core.last_command[robot.arm_columns(arm)], now)
                states_at[arm] = now
        fresh.append(core.tick(now).fresh)
        states.append(core.state)
    # Silent from tick 10 (last state at tick 9): stale once more than 0.25 s has passed.
    first_hold = fresh.index(False)
    assert first_hold == 16  # tick 16 is 0.28 s after the left arm's last state
    assert set(states[16:30]) == {ExecutorState.STALE_JOINT_STATES}
    assert not any(fresh[16:30]) and all(fresh[30:])
    assert core.stale_events == 1 and core.tracking_faults == 0
    assert core.holds == 14


def test_a_late_tick_holds_and_the_next_one_judges_the_joint_states():
    """The executor process got no CPU (or sat in a blocked publish) for 0.5 s: its next tick
    runs before the joint states that arrived meanwhile are handled, so it holds without
    calling the driver silent. If states came in meanwhile, the next tick follows on (no stale
    event, no new start ramp); if the driver really is silent, the next tick holds as stale."""
    core = make_core('newest', max_joint_state_age=0.25)
    now = 100.0
    started(core, now)
    send(core, now, drift(0, 0.01), now)
    now += 0.5  # the late tick
    assert not core.tick(now).fresh and core.state is ExecutorState.RUNNING
    assert (core.late_ticks, core.stale_events) == (1, 0)
    measure(core, core.last_command, now)  # the queued states, handled after that tick
    now += PERIOD
    assert core.tick(now).fresh and core.stale_events == 0
    now += 0.5  # late again, and this time the driver is silent
    assert not core.tick(now).fresh and core.late_ticks == 2
    now += PERIOD
    assert not core.tick(now).fresh and core.state is ExecutorState.STALE_JOINT_STATES


def test_an_arm_moved_while_its_states_were_stale_trips_on_their_return():
    core = make_core('newest', max_joint_state_age=0.25)
    now = 100.0
    started(core, now)
    for _ in range(10):
        now += PERIOD
        core.set_measured_arm('right', POSE[robot.arm_columns('right')], now)
        core.tick(now)
    assert core.state is ExecutorState.STALE_JOINT_STATES
    pushed = POSE.copy()
    pushed[SHOULDER] += 0.7  # someone moved it, or it was torqued off and sagged
    now += PERIOD
    measure(core, pushed, now)
    result = core.tick(now)
    assert not result.fresh and core.state is ExecutorState.TRACKING_FAULT
    assert core.fault.joint == 'follower_left/shoulder' and core.fault.ticks == 0
    assert core.fault.error == pytest.approx(-0.7)
    assert 'when its joint states came back' in core.fault.describe()
    np.testing.assert_allclose(core.last_command, pushed)  # re-based where it is now


def test_stop_counts_ignored_chunks_and_resume_rebases():
    core = make_core('newest')
    now = 100.0
    started(core, now)
    core.stop()
    for _ in range(5):
        assert 'stopped; call ~/resume' in send(core, now, drift(0, 0.01), now)
    assert core.ignored_chunks == 5 and core.rejected_chunks == 0
    moved = POSE + 0.05
    measure(core, moved, now)
    core.resume()
    np.testing.assert_allclose(core.last_command[~IS_GRIPPER], moved[~IS_GRIPPER])
    np.testing.assert_allclose(core.last_command[IS_GRIPPER], POSE[IS_GRIPPER])  # more closed


@st.composite
def event_streams(draw) -> list[tuple]:
    """What a broken or hostile world does to the executor, one event per tick or so."""
    events = []
    for _ in range(draw(st.integers(5, 40))):
        kind = draw(
            st.sampled_from(
                [
                    'chunk',
                    'chunk',
                    'chunk',
                    'silence',
                    'block',
                    'unblock',
                    'states_stop',
                    'states_start',
                    'stop',
                    'resume',
                    'shove',
                ]
            )
        )
        if kind == 'chunk':
            events.append(
                (
                    'chunk',
                    draw(st.floats(-2.0, 2.0)),
                    draw(st.floats(-0.3, 0.3)),
                    draw(st.integers(1, 4)),
                )
            )
        elif kind in ('block', 'shove'):
            events.append((kind, draw(st.integers(0, D - 1)), draw(st.floats(-0.5, 0.5))))
        else:
            events.append((kind, draw(st.integers(1, 15))))
    return events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=event_streams(),
    merge_rule=st.sampled_from(MERGE_RULES),
    lag=st.floats(0.2, 1.0),
    ramp=st.sampled_from([0, 10, 50]),
)
def test_every_rule_holds_under_random_event_streams(events, merge_rule, lag, ramp):
    """Random chunk streams (stamps up to 2 s in the future or past, bursts), silences,
    blocked joints, shoves, drivers that stop publishing, stop/resume; an arm that covers
    `lag` of the gap per tick. Checked every tick:
    * commands inside the joint limits;
    * a command moves at most one (ramped) step, or towards the measured pose;
    * arm joints within their tolerance of the measured pose, grippers never more open than
      the measured opening + its tolerance (while the states are fresh);
    * no fresh target later than the bound after the last accepted chunk's arrival, none
      while stopped, faulted or stale, no accepted chunk stamped beyond max_future_stamp;
    * every tick after the first is fresh, a stall, a wait or a hold."""
    max_age, max_state_age = 0.3, 0.25
    core = make_core(merge_rule, max_age=max_age, ramp=ramp, max_joint_state_age=max_state_age)
    bound = max_age + ((K - 1) * PERIOD if merge_rule == 'sync' else 0.0)
    now = 100.0
    measured = POSE.copy()
    previous = started(core, now)
    blocked: set[int] = set()
    silent_ticks = 0
    last_arrival, states_at, known = -math.inf, now, POSE.copy()
    rng = np.random.default_rng(0)
    for event in events:
        ticks = 1
        if event[0] == 'chunk':
            _, offset, spread, burst = event
            for _ in range(burst):
                rows = previous + spread * rng.standard_normal((K, D)).cumsum(axis=0) / K
                before = core.accepted_chunks
                send(core, now + offset, rows, now)
                if core.accepted_chunks > before:
                    assert offset <= core.rules.max_future_stamp
                    last_arrival = now
        elif event[0] == 'block':
            blocked.add(event[1])
        elif event[0] == 'unblock':
            blocked.clear()
        elif event[0] == 'shove':
            measured[event[1]] += event[2]
        elif event[0] == 'states_stop':
            silent_ticks = event[1]
        elif event[0] == 'stop':
            core.stop()
        elif event[0] == 'resume':
            core.resume()
            previous = core.last_command
        else:
            ticks = event[1]
        for _ in range(ticks):
            now += PERIOD
            measured = np.clip(measured, LIMITS.lower, LIMITS.upper)
            if silent_ticks > 0:
                silent_ticks -= 1
            else:
                measure(core, measured, now)
                states_at, known = now, measured.copy()  # what the executor last measured
            state_before = core.state
            result = core.tick(now)
            command = result.command
            assert (command >= LIMITS.lower).all() and (command <= LIMITS.upper).all()
            step = np.abs(command - previous)
            towards = np.abs(command - known) <= np.abs(previous - known) + 1e-12
            assert ((step <= LIMITS.max_step + 1e-12) | towards).all()
            if result.fresh:
                assert now - last_arrival <= bound + 1e-9
                assert now - states_at <= max_state_age
                assert state_before in (ExecutorState.RUNNING, ExecutorState.STALE_JOINT_STATES)
                gap = command - known
                tolerance = LIMITS.tracking_tolerance
                assert (np.abs(gap[~IS_GRIPPER]) <= tolerance[~IS_GRIPPER] + 1e-9).all()
                assert (gap[IS_GRIPPER] <= tolerance[IS_GRIPPER] + 1e-9).all()
            previous = command
            following = np.array([i not in blocked for i in range(D)])
            measured = np.where(following, measured + lag * (command - measured), measured)
    # Every tick is one of these (the first command, from the measured pose, a starting one).
    held = core.stalls + core.waits + core.holds + core.starting_ticks
    assert core.fresh_ticks + held == core.ticks
