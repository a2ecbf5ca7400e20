"""policy_node's side of real-time chunking over real DDS, as its own process with a `tiny`
checkpoint that takes an action prefix and min_chunk_latency 0.2 s: it holds each chunk until
its observation is 0.2 s old, reads the executor's /chunk_executor/committed, waits while the
played chunk has rows enough left, and gives the next chunk the played chunk's targets at its
rows' times, as many rows as its recent latencies' p90 in rows plus one."""

from __future__ import annotations

import numpy as np
import pytest

from oft_policy_node import robot
from oft_policy_node.runtime.action_prefix import LatencyWindow
from tests.test_runtime_policy_node_dds import INSTRUCTIONS, Feeder, start_policy_node

MAX_STEPS, MIN_LATENCY, PERIOD = 8, 0.2, 0.04


@pytest.fixture(scope='module')
def prefix_policy(tmp_path_factory):
    from oft_policy_node.model import OftPolicy
    from oft_policy_node.model.testing import random_policy

    directory = tmp_path_factory.mktemp('prefix_policy')
    plain = random_policy('tiny', instructions=INSTRUCTIONS)
    policy = OftPolicy(
        plain.config.replace(prefix_steps=MAX_STEPS),
        instructions=plain.instructions,
        stats=plain.stats,
    )
    checkpoint = policy.save_pretrained(directory / 'ckpt')
    proc, group = start_policy_node(directory, checkpoint, f'min_chunk_latency:={MIN_LATENCY}')
    yield proc, group
    assert group.stop(proc) == 0, group.output(proc)


def test_chunks_are_given_the_played_rows_and_wait_for_the_played_chunk(
    prefix_policy, rclpy_context
):
    from oft_msgs.msg import CommittedChunk

    feeder = Feeder(rclpy_context)
    committed = feeder.node.create_publisher(CommittedChunk, robot.COMMITTED_CHUNK_TOPIC, 10)
    try:
        proc, group = prefix_policy
        assert feeder.feed_until(lambda: feeder.chunks, timeout=60.0), group.output(proc)
        first = feeder.chunks[0]
        assert first.prefix_steps == 0  # nothing played yet: nothing given
        assert first.inference_latency >= MIN_LATENCY  # held until the observation was 0.2 s old
        stamp = first.header.stamp.sec + first.header.stamp.nanosec * 1e-9
        rows = np.arange(robot.CHUNK_SIZE, dtype=np.float32)[:, None] * 0.01 + np.zeros(14)

        def play(chunk_id: int, row: int) -> None:
            """The executor reports playing `chunk_id` (the rows and stamp of `first`, rows
            0.01 * row) at `row`."""
            msg = CommittedChunk(
                chunk_id=chunk_id,
                chunk_stamp=first.header.stamp,
                period=PERIOD,
                row=row,
                num_steps=robot.CHUNK_SIZE,
                actions=rows.astype(np.float32).ravel().tolist(),
            )
            msg.header.stamp = feeder.node.get_clock().now().to_msg()
            committed.publish(msg)

        # The two reports carry different ids, so a chunk tells which one it was planned
        # from. Inferences run one at a time, so a chunk started from the early report has an
        # id below the first one given the late report's rows, however long it took.
        early_id, late_id = first.chunk_id, first.chunk_id + 1000
        assert feeder.spin_until(lambda: committed.get_subscription_count() > 0, 30.0)

        # 20 rows left: far more than the latency's rows plus the slack, so no inference may
        # start from this report. Chunks still arrive from inferences that began before the
        # node had it or while a starved test let it go stale (plan_timeout: the node then
        # infers as without reports); those are given nothing.
        def early() -> bool:
            play(early_id, 4)
            return False

        feeder.feed_until(early, timeout=2.0)

        # 4 rows left: the next inference is observed now and given the played rows.
        def given_rows() -> list:
            return [c for c in feeder.chunks if c.prefix_chunk_id == late_id]

        def late() -> bool:
            play(late_id, 20)
            return bool(given_rows())

        assert feeder.feed_until(late, timeout=60.0), group.output(proc)
        given = given_rows()[0]
        before = [c for c in feeder.chunks if c.chunk_id < given.chunk_id]
        started_early = [c.chunk_id for c in before if c.prefix_chunk_id == early_id]
        assert not started_early, f'chunks {started_early} started with 20 rows left to play'
        # The p90 of the latencies of the chunks published before it (a loaded machine spreads
        # them), in rows, plus prefix_margin_rows.
        latencies = LatencyWindow()
        for chunk in before:
            latencies.add(chunk.inference_latency)
        d = min(MAX_STEPS, latencies.rows(PERIOD) + 1)
        assert given.prefix_steps == d, (given.prefix_steps, d)
        observed = given.header.stamp.sec + given.header.stamp.nanosec * 1e-9
        expected_rows = np.clip(
            np.rint((observed + PERIOD * np.arange(d) - stamp) / PERIOD), 0, 24
        ).astype(int)
        actions = np.asarray(given.actions).reshape(robot.CHUNK_SIZE, robot.ACTION_DIM)
        np.testing.assert_allclose(actions[:d], rows[expected_rows], atol=1e-6)
    finally:
        feeder.executor.shutdown()
        feeder.node.destroy_node()
