"""chunk_executor over real DDS, driven by a test rig that owns /clock: the commands equal the
time-indexed expectation of a scripted chunk stream (stale prefix skipped, the merge rules;
`sync` pauses for a fresh chunk and plays it from its first row), stalls hold the pose, the
watchdog fires, ~/stop and ~/resume work, and the interbotix backend sends the driver's
messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oft_policy_node import robot
from tests.runtime_rig import PERIOD, ExecutorRig, chunk_message

# A pose well inside the limits, (D,): per arm 6 joints (rad) and the gripper opening.
POSE = np.array([0.1, -0.2, 0.3, 0.05, -0.1, 0.2, 0.5, -0.1, 0.25, -0.3, 0.0, 0.15, -0.2, 0.4])


def ramp(offset: float, k: int = robot.CHUNK_SIZE) -> np.ndarray:
    """A chunk (K, D) that starts at POSE + offset and moves 0.004 per row: every row differs,
    and no step comes near the per-tick limit, so the expected command is the target itself."""
    rows = POSE + offset + 0.004 * np.arange(k)[:, None]
    return rows.astype(np.float32).astype(np.float64)  # what survives the float32 message


def make_rig(rclpy_context, **params) -> ExecutorRig:
    from rclpy.parameter import Parameter

    from oft_policy_node.chunk_executor import ChunkExecutor

    overrides = [Parameter('use_sim_time', value=True), Parameter('diagnostics_period', value=0.2),
                 *(Parameter(name, value=value) for name, value in params.items())]
    node = ChunkExecutor(context=rclpy_context, parameter_overrides=overrides)
    rig = ExecutorRig(rclpy_context, node)
    rig.wait_for_subscribers()
    rig.publish_clock()
    rig.publish_pose(POSE)
    assert rig.spin_until(lambda: node._core.has_measured_pose), 'joint states never arrived'
    return rig


@pytest.fixture
def rig_factory(rclpy_context):
    rigs: list[ExecutorRig] = []

    def factory(**params) -> ExecutorRig:
        rigs.append(make_rig(rclpy_context, **params))
        return rigs[-1]

    yield factory
    for rig in rigs:
        rig.close()


def row_at(stamp: float, now: float) -> int:
    return round((now - stamp) / PERIOD)


@pytest.mark.parametrize('merge_rule', ['newest', 'blend', 'commit'])
def test_commands_follow_the_time_indexed_chunk_stream(rig_factory, merge_rule):
    decay = 8.0
    rig = rig_factory(merge_rule=merge_rule, blend_decay=decay)
    np.testing.assert_allclose(rig.tick(), POSE, atol=1e-9)  # the first command: measured pose

    # Chunk A was predicted from an observation 5 ticks ago: rows 0..5 are stale.
    a, stamp_a = ramp(0.0), rig.now - 5 * PERIOD
    rig.publish_chunk(chunk_message(stamp_a, a, chunk_id=1))
    for _ in range(3):
        command = rig.tick()
        assert row_at(stamp_a, rig.now) >= 6
        np.testing.assert_allclose(command, a[row_at(stamp_a, rig.now)], atol=1e-9)

    # Chunk B overlaps A from now on; its first two rows are stale.
    b, stamp_b = ramp(0.05), rig.now - 2 * PERIOD
    rig.publish_chunk(chunk_message(stamp_b, b, chunk_id=2))
    for _ in range(6):
        command = rig.tick()
        row_a, row_b = row_at(stamp_a, rig.now), row_at(stamp_b, rig.now)
        if merge_rule == 'commit':  # A plays on to its end; B waits its turn
            np.testing.assert_allclose(command, a[row_a], atol=1e-9)
            continue
        if merge_rule == 'newest':
            expected = b[row_b]
        else:
            weight_a = math.exp(-decay * (stamp_b - stamp_a))  # B weighs 1
            expected = (weight_a * a[row_a] + b[row_b]) / (weight_a + 1.0)
        np.testing.assert_allclose(command, expected, atol=1e-9)
        assert not np.allclose(command, a[row_a], atol=1e-4)  # B changed the command


def test_sync_pauses_for_a_chunk_observed_after_the_last_row(rig_factory):
    rig = rig_factory(merge_rule='sync')
    rig.tick()
    # A was observed 5 ticks ago; sync plays it from row 0 anyway (no rows lost to latency).
    a = ramp(0.0)
    rig.publish_chunk(chunk_message(rig.now - 5 * PERIOD, a, chunk_id=1))
    for row in range(robot.CHUNK_SIZE):
        np.testing.assert_allclose(rig.tick(), a[row], atol=1e-9)
    assert rig.spin_until(lambda: int(rig.diagnostics[-1]['fresh_ticks']) >= 20)
    stalls_before = int(rig.diagnostics[-1]['stalls'])
    last_row_time = rig.now
    # B was observed before A's last row: the executor holds A's last row and waits.
    rig.publish_chunk(chunk_message(last_row_time - PERIOD, ramp(0.05), chunk_id=2))
    for _ in range(3):
        np.testing.assert_allclose(rig.tick(), a[-1], atol=1e-9)
    c = ramp(0.01)
    rig.publish_chunk(chunk_message(last_row_time + PERIOD, c, chunk_id=3))
    for row in range(10):  # two diagnostics periods (0.2 s): a report after C began
        np.testing.assert_allclose(rig.tick(), c[row], atol=1e-9)
    assert rig.spin_until(lambda: int(rig.diagnostics[-1]['fresh_ticks']) > robot.CHUNK_SIZE)
    counters = rig.diagnostics[-1]
    assert (int(counters['waits']), int(counters['stalls'])) == (3, stalls_before)


def test_empty_queue_and_watchdog_hold_the_pose_and_count_stalls(rig_factory):
    rig = rig_factory(max_chunk_age=0.18)
    rig.tick()
    for _ in range(5):  # no chunk yet: hold the measured pose
        np.testing.assert_allclose(rig.tick(), POSE, atol=1e-9)
    assert rig.spin_until(lambda: rig.diagnostics and int(rig.diagnostics[-1]['stalls']) >= 4)

    a, stamp = ramp(0.0), rig.now
    rig.publish_chunk(chunk_message(stamp, a))
    followed = []
    for _ in range(10):
        followed.append(rig.tick())
    # Rows 1..4 are at most 0.16 s old; from 0.2 s on the watchdog refuses the chunk (which
    # still covers 1 s) and the executor holds the last commanded row.
    for command, row in zip(followed[:4], range(1, 5)):
        np.testing.assert_allclose(command, a[row], atol=1e-9)
    for command in followed[4:]:
        np.testing.assert_allclose(command, a[4], atol=1e-9)
    stalls_before = int(rig.diagnostics[-1]['stalls'])
    for _ in range(5):
        rig.tick()
    assert rig.spin_until(lambda: int(rig.diagnostics[-1]['stalls']) > stalls_before)
    assert int(rig.diagnostics[-1]['fresh_ticks']) == 4


def test_stop_holds_and_ignores_chunks_until_resume(rig_factory):
    rig = rig_factory()
    rig.tick()
    a, stamp_a = ramp(0.0), rig.now
    rig.publish_chunk(chunk_message(stamp_a, a, chunk_id=1))
    rig.tick()
    held = rig.tick()
    np.testing.assert_allclose(held, a[2], atol=1e-9)

    response = rig.call('/chunk_executor/stop')
    assert response.success, response.message
    rig.publish_chunk(chunk_message(rig.now, ramp(0.02), chunk_id=2))  # ignored while stopped
    for _ in range(6):
        np.testing.assert_allclose(rig.tick(), held, atol=1e-9)
    assert rig.spin_until(lambda: rig.diagnostics and rig.diagnostics[-1]['message'] == 'stopped'
                          and rig.diagnostics[-1]['ignored_chunks'] == '1')

    assert rig.call('/chunk_executor/resume').success
    np.testing.assert_allclose(rig.tick(), held, atol=1e-9)  # the old chunk was dropped
    c, stamp_c = ramp(0.03), rig.now
    rig.publish_chunk(chunk_message(stamp_c, c, chunk_id=3))
    for _ in range(3):
        np.testing.assert_allclose(rig.tick(), c[row_at(stamp_c, rig.now)], atol=1e-9)


def test_interbotix_backend_sends_group_and_single_commands(rclpy_context, monkeypatch):
    from tests.interface_build import load_test_interface

    load_test_interface('interbotix_xs_msgs', monkeypatch)
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand

    rig = make_rig(rclpy_context, backend='interbotix')
    try:
        received = {(arm, kind): [] for arm in robot.ARMS for kind in ('group', 'single')}
        for arm in robot.ARMS:
            rig.node.create_subscription(JointGroupCommand, robot.joint_group_topic(arm),
                                         received[arm, 'group'].append, 50)
            rig.node.create_subscription(JointSingleCommand, robot.joint_single_topic(arm),
                                         received[arm, 'single'].append, 50)

        def tick_and_collect() -> dict:
            counts = {key: len(msgs) for key, msgs in received.items()}
            rig.now_ns += 40_000_000
            rig.publish_clock()
            assert rig.spin_until(lambda: all(len(msgs) > counts[key]
                                              for key, msgs in received.items()))
            return {key: msgs[-1] for key, msgs in received.items()}

        def check(sent: dict, pose: np.ndarray) -> None:
            for arm in robot.ARMS:
                expected = pose[robot.arm_columns(arm)]
                group, single = sent[arm, 'group'], sent[arm, 'single']
                assert group.name == 'arm' and single.name == 'gripper'
                np.testing.assert_allclose(group.cmd, expected[:6], atol=1e-6)  # float32
                assert single.cmd == pytest.approx(robot.normalized_to_motor(expected[6]),
                                                   abs=1e-6)

        assert rig.spin_until(lambda: all(rig.node.count_subscribers(t) for arm in robot.ARMS
                                          for t in (robot.joint_group_topic(arm),
                                                    robot.joint_single_topic(arm))))
        rig.spin_until(lambda: False, timeout=0.3)  # drain a command of the start-up clock
        check(tick_and_collect(), POSE)
        a, stamp = ramp(0.0), rig.now
        rig.publish_chunk(chunk_message(stamp, a))
        check(tick_and_collect(), a[1])
    finally:
        rig.close()


def test_writable_parameters_are_validated(rig_factory):
    from rclpy.parameter import Parameter

    rig = rig_factory()
    node = rig.executor_node
    rejected = node.set_parameters([Parameter('merge_rule', value='mean')])[0]
    assert not rejected.successful and "merge_rule='mean' must be one of" in rejected.reason
    assert not node.set_parameters([Parameter('max_chunk_age', value=0.0)])[0].successful
    assert node.set_parameters([Parameter('merge_rule', value='blend')])[0].successful
    assert node._core.queue.merge_rule == 'blend'
    read_only = node.set_parameters([Parameter('rate_hz', value=50.0)])[0]
    assert not read_only.successful
