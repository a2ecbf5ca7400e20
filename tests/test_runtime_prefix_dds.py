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

        def play(row: int) -> None:
            """The executor reports chunk `first` at `row` (its rows: 0.01 * row)."""
            msg = CommittedChunk(
                chunk_id=first.chunk_id,
                chunk_stamp=first.header.stamp,
                period=PERIOD,
                row=row,
                num_steps=robot.CHUNK_SIZE,
                actions=rows.astype(np.float32).ravel().tolist(),
            )
            msg.header.stamp = feeder.node.get_clock().now().to_msg()
            committed.publish(msg)

        # 20 rows left: far more than the latency's rows plus the slack. No inference starts
        # (after the one that may have started before the first report arrived).
        def early() -> bool:
            play(4)
            return False

        feeder.feed_until(early, timeout=0.8)
        count = len(feeder.chunks)
        feeder.feed_until(early, timeout=1.5)
        assert len(feeder.chunks) == count, 'a chunk started while the played one had 20 rows left'

        # 4 rows left: the next one is observed and given the played rows.
        def late() -> bool:
            play(20)
            return len(feeder.chunks) > count

        assert feeder.feed_until(late, timeout=30.0), group.output(proc)
        given = feeder.chunks[count]
        # The p90 of the latencies so far (a loaded machine spreads them), in rows, plus
        # prefix_margin_rows.
        latencies = LatencyWindow()
        for chunk in feeder.chunks[:count]:
            latencies.add(chunk.inference_latency)
        d = min(MAX_STEPS, latencies.rows(PERIOD) + 1)
        assert given.prefix_steps == d and given.prefix_chunk_id == first.chunk_id
        observed = given.header.stamp.sec + given.header.stamp.nanosec * 1e-9
        expected_rows = np.clip(
            np.rint((observed + PERIOD * np.arange(d) - stamp) / PERIOD), 0, 24
        ).astype(int)
        actions = np.asarray(given.actions).reshape(robot.CHUNK_SIZE, robot.ACTION_DIM)
        np.testing.assert_allclose(actions[:d], rows[expected_rows], atol=1e-6)
    finally:
        feeder.executor.shutdown()
        feeder.node.destroy_node()
