"""The policy node's side of real-time chunking, without ROS: the latency in rows, the given
rows for an observation, and when the next inference starts."""

from __future__ import annotations

import numpy as np
import pytest

from oft_policy_node.runtime.action_prefix import LatencyWindow, PlayedChunk, PrefixPlanner

PERIOD = 0.04


def committed(chunk_id: int = 3, stamp: float = 10.0, row: int = 0, now: float = 10.0):
    """A chunk whose row i holds i in every column, as the executor reports it."""
    actions = np.arange(25, dtype=float)[:, None] * np.ones(14)
    return PlayedChunk(chunk_id, stamp, PERIOD, row, actions, now)


def planner(
    latencies: tuple[float, ...] = (), max_steps: int = 10, margin_rows: int = 0
) -> PrefixPlanner:
    plan = PrefixPlanner(max_steps, PERIOD, slack_rows=2, margin_rows=margin_rows)
    for seconds in latencies:
        plan.latency.add(seconds)
    return plan


def test_the_latency_in_rows_is_its_p90_rounded_up():
    window = LatencyWindow(size=10, quantile=0.9)
    assert window.rows(PERIOD) == 0  # nothing measured: nothing given
    for seconds in [0.05] * 9 + [0.30]:
        window.add(seconds)
    # p90 of nine 0.05 and one 0.30 lies between them (linear): 0.075 s -> 2 rows.
    assert window.rows(PERIOD) == 2
    for _ in range(10):
        window.add(0.32)  # the older ones leave the window
    assert window.rows(PERIOD) == 8
    assert planner((0.5,), max_steps=6).steps() == 6  # never more than the model takes
    assert planner((0.11,), margin_rows=1).steps() == 4  # a row beyond the latency's 3
    assert planner(margin_rows=1).steps() == 0  # no latency measured: nothing given


def test_given_rows_are_the_committed_targets_at_the_new_chunk_times():
    plan = planner((0.11,))  # 3 rows
    rows, source = plan.prefix(committed(stamp=10.0), observed=10.2, now=10.21)
    assert source == 3
    np.testing.assert_array_equal(rows[:, 0], [5.0, 6.0, 7.0])  # rows at 10.20, 10.24, 10.28
    rows, _ = plan.prefix(committed(stamp=10.0, now=10.9), observed=10.95, now=10.96)
    np.testing.assert_array_equal(rows[:, 0], [24.0, 24.0, 24.0])  # held at the last row
    assert plan.prefix(None, 10.2, 10.21) == (None, 0)
    assert plan.prefix(committed(now=9.0), 10.2, 10.21) == (None, 0)  # the executor went quiet
    assert planner().prefix(committed(), 10.2, 10.21) == (None, 0)  # no latency yet: d = 0


def test_the_next_inference_starts_when_the_chunk_has_d_plus_slack_rows_left():
    plan = planner((0.11,))  # d = 3, slack 2: start with 5 rows left, at row 19
    newest_at = 9.0  # the node's newest chunk went out long ago
    assert not plan.ready(committed(row=18, now=10.7), 10.7, 3, newest_at)
    assert plan.ready(committed(row=19, now=10.7), 10.7, 3, newest_at)
    # The newest chunk (4) was just published and is not spliced yet: wait for it.
    assert not plan.ready(committed(row=22, now=10.7), 10.7, 4, newest_at=10.6)
    # ... unless it never is (given other rows, dropped): the played chunk runs out.
    assert plan.ready(committed(row=22, now=10.7), 10.7, 4, newest_at=10.4)
    # The executor holds (plays nothing): a chunk is wanted at once, but not a second one while
    # the newest is on its way (it would be given nothing and replace the one that was).
    holding = PlayedChunk(0, 0.0, PERIOD, 0, np.zeros((0, 14)), 10.7)
    assert plan.ready(holding, 10.7, 4, newest_at=10.4)
    assert not plan.ready(holding, 10.7, 4, newest_at=10.65)
    assert plan.prefix(holding, 10.7, 10.7) == (None, 0)
    # Without committed chunks (another merge rule) inference runs whenever it can.
    assert plan.ready(None, 10.7, 4, 10.69)
    assert plan.ready(committed(row=0, now=10.0), 10.7, 4, 10.69)
    # A policy trained without the prefix has nothing to give: waiting for the played chunk's
    # last rows would only make its chunks late (the executor then takes each at its end).
    plain = planner((0.11,), max_steps=0)
    assert plain.ready(committed(row=0, now=10.7), 10.7, 3, newest_at)
    assert plain.prefix(committed(now=10.7), 10.7, 10.7) == (None, 0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match='must be >= 0'):
        PrefixPlanner(-1, PERIOD)
    with pytest.raises(ValueError, match='must be > 0'):
        PrefixPlanner(4, 0.0)
