"""chunk_executor over real DDS, driven by a test rig that owns /clock: the commands equal the
time-indexed expectation of a scripted chunk stream (stale prefix skipped, the merge rules;
`sync` pauses for a fresh chunk and plays it from its first row), stalls hold the pose, the
watchdog fires, ~/stop and ~/resume work. The interbotix backend: test_real_robot_dds.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oft_policy_node import robot
from tests.runtime_rig import PERIOD, POSE, chunk_message, ramp, rig_factory

__all__ = ['rig_factory']  # the fixture, used by name


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
    assert rig.spin_until(
        lambda: rig.diagnostics and int(rig.diagnostics[-1]['fresh_ticks']) >= 20
    )
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
    assert rig.spin_until(
        lambda: rig.diagnostics and int(rig.diagnostics[-1]['fresh_ticks']) > robot.CHUNK_SIZE
    )
    counters = rig.diagnostics[-1]
    assert (int(counters['waits']), int(counters['stalls'])) == (3, stalls_before)


def test_prefix_splices_chunks_without_a_pause_or_a_jump(rig_factory):
    """The rig plays a policy that works as policy_node does with merge_rule prefix: it reads
    the executor's /chunk_executor/committed, observes, and one tick later publishes a chunk
    whose first 3 rows are the committed chunk's targets at its rows' times and whose other
    rows continue the same path (a model that learned to continue what it is given). The
    executor must follow the path at every tick: no held tick, no jump at a switch."""
    from oft_msgs.msg import CommittedChunk

    rig = rig_factory(merge_rule='prefix')
    committed: list[CommittedChunk] = []
    rig.node.create_subscription(
        CommittedChunk, robot.COMMITTED_CHUNK_TOPIC, committed.append, 100
    )
    rig.tick()
    start = rig.now

    def path(t: float | np.ndarray) -> np.ndarray:  # 0.004 per period on every joint
        steps = (np.asarray(t, dtype=float) - start) / PERIOD
        return (POSE + 0.004 * np.asarray(steps)[..., None]).astype(np.float32).astype(float)

    def chunk_from(stamp: float) -> np.ndarray:
        return path(stamp + PERIOD * np.arange(robot.CHUNK_SIZE))

    # The arms held while the first chunk was observed: it plays from its row 0 at the first
    # tick (none of its rows went by), so its rows are the path from that tick on.
    rig.publish_chunk(chunk_message(start, chunk_from(start + PERIOD), chunk_id=1))
    commands, chunk_id, pending = [], 1, None
    for tick in range(60):
        if pending is not None and tick == pending[0]:  # one tick of latency
            rig.publish_chunk(pending[1])
            pending = None
        commands.append((rig.now + PERIOD, rig.tick()))
        if tick % 8 == 7:  # observe now; give 3 rows of the chunk being played
            assert rig.spin_until(lambda: committed and committed[-1].header.stamp.sec > 0)
            played = committed[-1]
            assert played.chunk_id == chunk_id and played.num_steps == robot.CHUNK_SIZE
            played_rows = np.asarray(played.actions, dtype=float).reshape(robot.CHUNK_SIZE, -1)
            played_stamp = played.chunk_stamp.sec + played.chunk_stamp.nanosec * 1e-9
            stamp = rig.now
            rows = np.rint((stamp + PERIOD * np.arange(3) - played_stamp) / PERIOD).astype(int)
            actions = chunk_from(stamp)
            np.testing.assert_allclose(played_rows[rows], actions[:3], atol=1e-6)
            chunk_id += 1
            msg = chunk_message(stamp, actions, chunk_id=chunk_id)
            msg.prefix_steps, msg.prefix_chunk_id = 3, played.chunk_id
            pending = (tick + 1, msg)
    for now, command in commands:
        np.testing.assert_allclose(command, path(now), atol=1e-6)
    assert rig.spin_until(
        lambda: rig.diagnostics and int(rig.diagnostics[-1]['fresh_ticks']) >= 55
    )
    report = rig.diagnostics[-1]
    assert int(report['splices']) >= 6 and int(report['late_splices']) == 0
    held = (int(report['stalls']), int(report['waits']), int(report['restarts']))
    assert held == (0, 0, 0)
    # The largest step a target asked for: the same 0.004 rad at a switch as inside a chunk.
    assert float(report['switch_step_max']) == pytest.approx(0.004, abs=1e-5)
    assert float(report['chunk_step_max']) == pytest.approx(0.004, abs=1e-5)


@pytest.mark.parametrize('splice_fade', [0.0, 0.32])
def test_prefix_fades_out_the_step_a_chunk_takes_at_its_switch(rig_factory, splice_fade):
    """The model is given 3 rows of the played chunk and predicts the rest 0.1 above them: the
    step at its switch row that shook grasped objects loose (the pot policy's first predicted
    row lay up to 0.34 rad off at 0.32 s of latency). With splice_fade the commands start from
    the played row and reach the prediction linearly over splice_fade (8 rows), and the
    committed chunk the executor publishes carries those rows (what the next chunk is given);
    with 0 the step is commanded as predicted."""
    from oft_msgs.msg import CommittedChunk

    rig = rig_factory(merge_rule='prefix', splice_fade=splice_fade)
    committed: list[CommittedChunk] = []
    rig.node.create_subscription(
        CommittedChunk, robot.COMMITTED_CHUNK_TOPIC, committed.append, 100
    )
    rig.tick()
    rig.publish_chunk(chunk_message(rig.now, ramp(0.0), chunk_id=1))
    for _ in range(5):
        rig.tick()
    # Chunk 1 began at its row 0 on the first tick (the arms held while it was observed):
    # observed now, 4 rows into it.
    stamp = rig.now
    given = ramp(0.004 * 4)  # chunk 1's rows from now on
    predicted = given.copy()
    predicted[3:] += 0.1
    msg = chunk_message(stamp, predicted, chunk_id=2)
    msg.prefix_steps, msg.prefix_chunk_id = 3, 1
    commands = [rig.tick()]
    rig.publish_chunk(msg)
    commands += [rig.tick() for _ in range(14)]  # rows 1..15 of chunk 2
    rows = np.arange(1, 16)
    fade_rows = splice_fade / PERIOD
    shift = 0.1 * (np.minimum((rows - 3) / fade_rows, 1.0) if fade_rows else 1.0)
    expected = given[rows] + np.where(rows >= 3, shift, 0.0)[:, None]
    np.testing.assert_allclose(np.array(commands), expected, atol=1e-6)
    assert rig.spin_until(lambda: committed and committed[-1].chunk_id == 2)
    published = np.asarray(committed[-1].actions, dtype=float).reshape(robot.CHUNK_SIZE, -1)
    np.testing.assert_allclose(published[rows], expected, atol=1e-6)
    assert rig.spin_until(lambda: rig.diagnostics and int(rig.diagnostics[-1]['splices']) == 1)
    # Faded, the switch itself is the path's 0.004 and the steps after it 0.004 + 0.1 / 8.
    report = rig.diagnostics[-1]
    switch, inside = (0.004, 0.004 + 0.1 / fade_rows) if fade_rows else (0.104, 0.004)
    assert float(report['switch_step_max']) == pytest.approx(switch, abs=1e-5)
    assert float(report['chunk_step_max']) == pytest.approx(inside, abs=1e-5)


def test_empty_queue_and_watchdog_hold_the_pose_and_count_stalls(rig_factory):
    rig = rig_factory(max_chunk_age=0.18)
    rig.tick()
    for _ in range(10):  # no chunk yet: hold the measured pose
        np.testing.assert_allclose(rig.tick(), POSE, atol=1e-9)
    # The report at 0.4 s may come just before or just after that instant's tick (the loop has a
    # thread of its own): it counts the 8 holds before it at least, as starting ticks (no chunk
    # ever came: nothing stalled).
    assert rig.spin_until(
        lambda: rig.diagnostics and int(rig.diagnostics[-1]['starting_ticks']) >= 8
    )
    assert int(rig.diagnostics[-1]['stalls']) == 0

    a, stamp = ramp(0.0), rig.now
    rig.publish_chunk(chunk_message(stamp, a))
    followed = []
    for _ in range(10):
        followed.append(rig.tick())
    # Rows 1..4 are at most 0.16 s old; from 0.2 s on the watchdog refuses the chunk (which
    # still covers 1 s) and the executor holds the last commanded row.
    for command, row in zip(followed[:4], range(1, 5), strict=True):
        np.testing.assert_allclose(command, a[row], atol=1e-9)
    for command in followed[4:]:
        np.testing.assert_allclose(command, a[4], atol=1e-9)
    stalls_before = int(rig.diagnostics[-1]['stalls'])
    for _ in range(5):
        rig.tick()
    assert rig.spin_until(
        lambda: rig.diagnostics and int(rig.diagnostics[-1]['stalls']) > stalls_before
    )
    assert int(rig.diagnostics[-1]['fresh_ticks']) == 4


def test_stop_holds_and_ignores_chunks_until_resume(rig_factory):
    rig = rig_factory()
    rig.tick()
    a, stamp_a = ramp(0.0), rig.now
    rig.publish_chunk(chunk_message(stamp_a, a, chunk_id=1))
    rig.tick()
    held = rig.tick()
    np.testing.assert_allclose(held, a[2], atol=1e-9)

    from rcl_interfaces.msg import Log

    logged: list[Log] = []
    rig.node.create_subscription(Log, '/rosout', logged.append, 50)
    response = rig.call('/chunk_executor/stop')
    assert response.success, response.message
    for chunk_id in range(2, 7):  # ignored while stopped: counted, logged once
        rig.publish_chunk(chunk_message(rig.now, ramp(0.02), chunk_id=chunk_id))
    for _ in range(6):
        np.testing.assert_allclose(rig.tick(), held, atol=1e-9)
    assert rig.spin_until(
        lambda: (
            rig.diagnostics
            and rig.diagnostics[-1]['message'] == 'stopped'
            and rig.diagnostics[-1]['ignored_chunks'] == '5'
        )
    )
    about_chunks = [m for m in logged if m.name == 'chunk_executor' and m.function == '_on_chunk']
    assert len(about_chunks) == 1 and about_chunks[0].level == Log.WARN, [
        m.msg for m in about_chunks
    ]
    assert 'ignoring chunks (counted in ignored_chunks)' in about_chunks[0].msg

    assert rig.call('/chunk_executor/resume').success
    np.testing.assert_allclose(rig.tick(), held, atol=1e-9)  # the old chunk was dropped
    c, stamp_c = ramp(0.03), rig.now
    rig.publish_chunk(chunk_message(stamp_c, c, chunk_id=7))
    for _ in range(3):
        np.testing.assert_allclose(rig.tick(), c[row_at(stamp_c, rig.now)], atol=1e-9)


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
