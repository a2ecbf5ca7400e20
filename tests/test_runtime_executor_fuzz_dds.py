"""A chunk_executor process on the wall clock beside a driver that follows its commands, fed
over DDS with hypothesis-generated chunks (random, huge, NaN/inf, mis-shaped, wrong names, any
stamp/period): every command it sends stays inside the joint limits and within the per-tick
step limit, it keeps commanding, counts the rejections, and still shuts down cleanly on
Ctrl-C."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oft_policy_node import robot
from oft_policy_node.runtime.safety import SafetyLimits
from tests.ros_fixtures import spin_until, spinning_node
from tests.runtime_rig import PERIOD, chunk_message

D = robot.ACTION_DIM
NAMES = robot.action_joint_names()
LIMITS = SafetyLimits.for_robot(robot.CONTROL_RATE_HZ)
float32s = st.one_of(st.floats(width=32), st.floats(-4.0, 4.0, width=32))


@st.composite
def hostile_chunk(draw) -> dict:
    num_steps = draw(st.integers(0, 30))
    size = draw(st.one_of(st.just(num_steps * D), st.integers(0, 30 * D)))
    return {
        'stamp_offset': draw(st.floats(-1.5, 0.3)),
        'period': draw(st.one_of(st.just(PERIOD), st.floats(-1.0, 1.0), st.just(float('nan')))),
        'joint_names': draw(st.sampled_from([NAMES, NAMES[::-1], NAMES[:7], []])),
        'num_steps': num_steps,
        'actions': np.array(
            draw(st.lists(float32s, min_size=size, max_size=size)), dtype=np.float32
        ),
    }


@pytest.fixture
def live_executor(rclpy_context, spawn):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from oft_msgs.msg import ActionChunk

    proc = spawn.python(
        '-m',
        'oft_policy_node.chunk_executor',
        '--ros-args',
        '-p',
        'diagnostics_period:=0.1',
        name='chunk_executor',
    )
    with spinning_node(rclpy_context, 'fuzzer') as (node, executor):
        commands: dict[str, list[tuple[float, np.ndarray]]] = {arm: [] for arm in robot.ARMS}
        for arm in robot.ARMS:
            node.create_subscription(
                JointState,
                robot.joint_positions_topic(arm),
                lambda m, arm=arm: commands[arm].append(
                    (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, np.array(m.position))
                ),
                200,
            )
        diagnostics: list[dict[str, str]] = []
        node.create_subscription(
            DiagnosticArray,
            '/diagnostics',
            lambda m: diagnostics.extend({kv.key: kv.value for kv in s.values} for s in m.status),
            10,
        )
        chunks = node.create_publisher(ActionChunk, robot.ACTION_CHUNK_TOPIC, 50)
        # A driver that follows every command (its own process), from a pose inside the limits.
        pose = np.tile([0.0, -0.5, 0.5, 0.0, 0.3, 0.0, 0.7], 2)
        arm = spawn.python(
            '-m', 'tests.peers.perfect_arm', json.dumps(pose.tolist()), name='perfect_arm'
        )
        assert spin_until(executor, lambda: commands['left'], timeout=20.0), spawn.output(
            proc
        ) + spawn.output(arm)
        yield node, executor, chunks, commands, diagnostics, proc, spawn


def policy_units(position: np.ndarray) -> np.ndarray:
    """A joint_positions command (6 joints, gripper motor angle) -> (7,) policy units."""
    return np.append(position[:6], robot.motor_to_normalized(position[6]))


def test_hostile_chunks_never_leave_the_limits(live_executor):
    node, executor, chunks, commands, diagnostics, proc, spawn = live_executor
    sent = []

    def handled() -> int:
        last = diagnostics[-1] if diagnostics else {}
        return int(last.get('accepted_chunks', 0)) + int(last.get('rejected_chunks', 0))

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(chunk=hostile_chunk())
    def publish(chunk: dict) -> None:
        now = node.get_clock().now().nanoseconds * 1e-9
        chunks.publish(
            chunk_message(
                now + chunk['stamp_offset'],
                chunk['actions'],
                chunk_id=len(sent) + 1,
                joint_names=chunk['joint_names'],
                period=chunk['period'],
                num_steps=chunk['num_steps'],
            )
        )
        sent.append(chunk)
        # Back-pressure: never more chunks in flight than the executor's subscription keeps
        # (depth 10), so a loaded machine that stalls the executor for a second loses none.
        assert spin_until(executor, lambda: handled() >= len(sent) - 5, timeout=20.0), (
            diagnostics[-1:],
            len(sent),
        )

    publish()
    # A well-formed chunk far beyond every limit: accepted, then clamped tick by tick.
    now = node.get_clock().now().nanoseconds * 1e-9
    beyond = np.tile(np.where(np.arange(D) % 2, LIMITS.upper + 5.0, LIMITS.lower - 5.0), (25, 1))
    chunks.publish(chunk_message(now, beyond, chunk_id=len(sent) + 1))
    sent.append(beyond)
    # It keeps commanding through all of that: a whole chunk's worth of ticks more per arm.
    before = {arm: len(commands[arm]) for arm in robot.ARMS}
    assert spin_until(
        executor,
        lambda: all(len(commands[arm]) >= before[arm] + 25 for arm in robot.ARMS),
        timeout=10.0,
    ), ('the executor stopped commanding', spawn.output(proc))
    assert proc.poll() is None, spawn.output(proc)
    assert spin_until(executor, lambda: handled() == len(sent), timeout=10.0), (
        diagnostics[-1:],
        len(sent),
    )
    assert int(diagnostics[-1]['rejected_chunks']) > 0
    assert int(diagnostics[-1]['clamped_commands']) > 0
    assert diagnostics[-1]['tracking_faults'] == '0'  # the arm follows: no false trip
    lower, upper = LIMITS.lower, LIMITS.upper
    for arm in robot.ARMS:
        columns = robot.arm_columns(arm)
        stamps = np.array([stamp for stamp, _ in commands[arm]])
        values = np.array([policy_units(position) for _, position in commands[arm]])  # (N, 7)
        assert (values >= lower[columns] - 1e-9).all() and (values <= upper[columns] + 1e-9).all()
        ticks_apart = np.maximum(np.round(np.diff(stamps) / PERIOD), 1.0)[:, None]  # (N-1, 1)
        steps = np.abs(np.diff(values, axis=0))  # (N-1, 7)
        assert (steps <= ticks_apart * LIMITS.max_step[columns] + 1e-9).all()
    assert spawn.stop(proc) == 0, spawn.output(proc)
