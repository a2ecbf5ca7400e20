"""The time-indexed chunk queue: nearest row for now, stale rows skipped, merge rules, expiry
and the watchdog, with exact expected values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oft_policy_node.runtime.chunk_queue import Chunk, ChunkQueue, fade_splice


def chunk(
    stamp: float, base: float, k: int = 25, d: int = 2, received: float | None = None
) -> Chunk:
    """Row i = base + i in every column: the row index can be read off the target. Received
    at its stamp unless told otherwise."""
    return Chunk(
        stamp,
        0.04,
        np.full((k, d), base) + np.arange(k)[:, None],
        stamp if received is None else received,
    )


def test_row_for_now_skips_the_stale_prefix():
    queue = ChunkQueue()
    queue.push(chunk(10.0, 0.0))
    assert queue.target(10.0)[0] == 0.0
    assert queue.target(10.2)[0] == 5.0  # 5 periods after the observation
    assert queue.target(10.219)[0] == 5.0  # nearest row
    assert queue.target(10.221)[0] == 6.0
    assert queue.target(9.9) is None  # before the observation
    assert queue.target(10.96)[0] == 24.0
    assert queue.target(10.99) is None  # past the last row: expired and dropped
    assert len(queue) == 0


def test_newest_wins():
    queue = ChunkQueue('newest')
    queue.push(chunk(10.0, 0.0))
    queue.push(chunk(10.12, 100.0))
    queue.push(chunk(10.04, 50.0))  # arrives late: older observation, does not win
    assert queue.target(10.2)[0] == 102.0


def test_blend_weights_by_observation_age():
    queue = ChunkQueue('blend', blend_decay=5.0)
    queue.push(chunk(10.0, 0.0))
    queue.push(chunk(10.12, 100.0))
    weight_old = math.exp(-5.0 * 0.12)
    expected = (weight_old * 5.0 + 1.0 * 102.0) / (weight_old + 1.0)
    assert queue.target(10.2)[0] == pytest.approx(expected, abs=1e-12)
    # With decay 0 the blend is the plain mean.
    queue.blend_decay = 0.0
    assert queue.target(10.2)[0] == pytest.approx((5.0 + 102.0) / 2)


def test_commit_plays_each_chunk_to_its_end_then_takes_the_newest():
    queue = ChunkQueue('commit')
    queue.push(chunk(10.0, 0.0))
    assert queue.target(10.08)[0] == 2.0
    queue.push(chunk(10.12, 100.0))  # newer, but the committed chunk keeps playing
    queue.push(chunk(10.48, 200.0))
    assert queue.target(10.2)[0] == 5.0
    assert queue.target(10.96)[0] == 24.0  # the last row of the first chunk
    assert queue.target(11.0)[0] == 213.0  # then the newest chunk, at its row for now
    queue.push(chunk(10.88, 300.0))
    assert queue.target(11.04)[0] == 214.0  # committed again: the newer chunk waits its turn
    assert queue.target(11.44)[0] == 224.0
    assert queue.target(11.48)[0] == 315.0
    queue.clear()
    queue.push(chunk(11.48, 400.0))
    assert queue.target(11.52)[0] == 401.0  # clear() forgot the committed chunk


def test_commit_watchdog_drops_the_committed_chunk():
    queue = ChunkQueue('commit', max_age=0.3)
    queue.push(chunk(10.0, 0.0))
    assert queue.target(10.04)[0] == 1.0
    queue.push(chunk(10.2, 100.0))
    assert queue.target(10.28)[0] == 7.0
    assert queue.target(10.32)[0] == 103.0  # the first is too old: the newer one takes over
    assert queue.target(10.52) is None  # and it times out as well


def test_sync_plays_each_chunk_from_its_first_row_after_a_pause():
    queue = ChunkQueue('sync', max_age=0.3)
    queue.push(chunk(10.0, 0.0))
    queue.push(chunk(9.9, 500.0))  # older observation: the newest one starts
    assert queue.target(10.12)[0] == 0.0  # 3 rows late, yet from its first row
    assert not queue.waiting
    assert queue.target(10.2)[0] == 2.0
    queue.push(chunk(10.8, 100.0))  # observed before the last row (10.12 + 24 * 0.04 = 11.08)
    assert queue.target(11.08)[0] == 24.0
    assert queue.target(11.12) is None and queue.waiting  # holds: no chunk observed since
    queue.push(chunk(11.08, 200.0))  # observed at the last row's time
    queue.push(chunk(11.12, 300.0))
    assert queue.target(11.16)[0] == 300.0  # the newest such chunk, from its first row
    assert queue.target(11.2)[0] == 301.0
    assert queue.target(12.08)[0] == 323.0
    assert queue.target(12.12)[0] == 324.0  # its last row, 0.96 s after it began
    assert queue.target(12.4) is None and queue.waiting  # max_age after that row: still a wait
    assert queue.target(12.44) is None and not queue.waiting  # then a stall (the watchdog)
    queue.clear()
    queue.push(chunk(10.5, 400.0))  # clear() forgot what had been played
    assert queue.target(10.6)[0] == 400.0


def test_watchdog_refuses_old_observations():
    queue = ChunkQueue(max_age=0.3)
    queue.push(chunk(10.0, 0.0))
    assert queue.target(10.28)[0] == 7.0
    assert queue.target(10.32) is None


@pytest.mark.parametrize('merge_rule', ['newest', 'blend', 'commit', 'sync', 'prefix'])
def test_watchdog_also_bounds_the_time_since_arrival(merge_rule):
    """A chunk stamped 0.5 s ahead of the executor's clock (a camera host whose clock runs
    ahead) passes the stamp-age test until 0.5 s + max_age after it arrived; the arrival bound
    stops it max_age after arrival (sync: once begun, it plays its rows to the end)."""
    queue = ChunkQueue(merge_rule, max_age=0.3)
    queue.push(chunk(10.5, 0.0, received=10.0))
    answered = [t for t in np.arange(10.0, 13.0, 0.04).round(2) if queue.target(t) is not None]
    if merge_rule == 'sync':
        # Begins at once (the stamp is no older than anything played) and plays 25 rows.
        assert answered[0] == 10.0 and answered[-1] == pytest.approx(10.96)
        assert len(answered) == 25
    else:
        # Row lookups start at the stamp; the arrival bound ends them 0.3 s after arrival.
        assert answered == []
    queue = ChunkQueue(merge_rule, max_age=0.3)
    queue.push(chunk(10.1, 0.0, received=10.0))
    last = max(t for t in np.arange(10.0, 13.0, 0.04).round(2) if queue.target(t) is not None)
    assert last <= (10.0 + 0.3 + 24 * 0.04 if merge_rule == 'sync' else 10.0 + 0.3) + 1e-9


def test_sync_plays_a_future_stamped_chunk_once():
    """A chunk stamped after its own last row must not qualify as its own successor (it did,
    and kept the arms moving for as long as its stamp lay in the future)."""
    queue = ChunkQueue('sync', max_age=10.0)
    queue.push(chunk(15.0, 0.0, received=10.0))
    rows = [queue.target(10.0 + 0.04 * i) for i in range(60)]
    played = [row[0] for row in rows if row is not None]
    assert played == list(range(25))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="merge_rule 'mean'.*'sync'"):
        ChunkQueue('mean')
    with pytest.raises(ValueError, match='blend_decay -1'):
        ChunkQueue(blend_decay=-1.0)
    with pytest.raises(ValueError, match='max_age 0'):
        ChunkQueue(max_age=0.0)
    for fade in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match='splice_fade'):
            ChunkQueue('prefix', splice_fade=fade)


def path(t: np.ndarray) -> np.ndarray:
    """One smooth target path, (n, 2): every chunk below samples it at its rows' times."""
    return np.stack([np.sin(t), 0.5 * t], axis=1)


def on_path(
    stamp: float,
    chunk_id: int,
    prefix_of: int = 0,
    prefix_steps: int = 0,
    received: float | None = None,
) -> Chunk:
    times = stamp + 0.04 * np.arange(25)
    return Chunk(
        stamp,
        0.04,
        path(times),
        stamp if received is None else received,
        chunk_id,
        prefix_steps,
        prefix_of,
    )


def ticks(queue: ChunkQueue, start: float, end: float) -> list[tuple[float, Chunk | None, int]]:
    """(time, source chunk, row) of every 25 Hz tick from start to end."""
    out = []
    for now in np.arange(start, end, 0.04):
        target = queue.target(float(now))
        out.append((float(now), queue.source if target is not None else None, queue.source_row))
    return out


def test_prefix_switches_at_the_first_predicted_row_without_a_pause():
    queue = ChunkQueue('prefix')
    a = on_path(10.0, 1)
    queue.push(a)
    played = ticks(queue, 10.0, 10.5)  # ticks on A until B comes in
    b = on_path(10.41, 2, prefix_of=1, prefix_steps=4, received=10.52)  # arrives in time
    queue.push(b)
    played += ticks(queue, 10.52, 11.2)
    assert all(source is not None for _, source, _ in played)  # never a tick without a target
    switch = next(i for i, (_, source, _) in enumerate(played) if source is b)
    now, _, row = played[switch]
    assert row == 4 and now >= b.switch_time() and played[switch - 1][1] is a
    assert (queue.splices, queue.late_splices, queue.restarts) == (1, 0, 0)


def test_prefix_takes_a_late_chunk_at_its_row_for_now_and_counts_it():
    queue = ChunkQueue('prefix')
    queue.push(on_path(10.0, 1))
    ticks(queue, 10.0, 10.7)
    late = on_path(10.41, 2, prefix_of=1, prefix_steps=4, received=10.7)  # due at 10.55
    queue.push(late)
    now, source, row = ticks(queue, 10.72, 10.76)[0]
    assert source is late and row == round((now - 10.41) / 0.04) > 4
    assert (queue.splices, queue.late_splices) == (1, 1)


def test_prefix_keeps_playing_through_chunks_given_another_chunks_rows():
    queue = ChunkQueue('prefix')
    a = on_path(10.0, 1)
    queue.push(a)
    queue.push(on_path(10.2, 7, prefix_of=99, prefix_steps=3))  # rows from a chunk not played
    queue.push(on_path(10.3, 6))  # given nothing
    played = ticks(queue, 10.0, 10.97)
    assert all(source is a for _, source, _ in played) and queue.splices == 0
    # Once A has run out the newest chunk takes over: a restart, counted.
    queue.push(on_path(10.9, 8))
    assert ticks(queue, 11.0, 11.04)[0][1].chunk_id == 8 and queue.restarts == 1


def test_prefix_holds_when_nothing_follows_and_the_watchdog_still_bounds_it():
    queue = ChunkQueue('prefix', max_age=0.5)
    queue.push(on_path(10.0, 1))
    played = ticks(queue, 10.0, 10.7)
    fresh = [now for now, source, _ in played if source is not None]
    assert max(fresh) <= 10.5 + 1e-9  # the chunk's rows answer only while it is max_age old


def test_fade_splice_shifts_the_rows_from_the_switch_and_fades_the_shift_out():
    actions = np.arange(10.0)[:, None] * np.ones((1, 2))  # row i = i
    faded = fade_splice(actions, 3, np.array([1.0, 5.0]), fade_rows=4)
    np.testing.assert_array_equal(faded[:3], actions[:3])  # the given rows stay
    # At the switch the played row; the shift (-2, +2) then falls by a quarter per row.
    np.testing.assert_allclose(faded[3:8, 0], [1.0, 2.5, 4.0, 5.5, 7.0])
    np.testing.assert_allclose(faded[3:8, 1], [5.0, 5.5, 6.0, 6.5, 7.0])
    np.testing.assert_array_equal(faded[7:], actions[7:])
    np.testing.assert_array_equal(fade_splice(actions, 3, np.zeros(2), 0.0), actions)
    assert fade_splice(actions, 3, np.zeros(2), 4) is not actions


def test_prefix_splice_fade_starts_from_the_played_row_and_keeps_the_chunk_linked():
    """A chunk predicted 1.0 above the rows it was given: the switch tick gets the played
    chunk's row, the step fades out over splice_fade, and the faded chunk stays the one a
    chunk given its rows splices to."""
    queue = ChunkQueue('prefix', splice_fade=0.16)  # 4 rows
    a = on_path(10.0, 1)
    queue.push(a)
    ticks(queue, 10.0, 10.4)
    b = on_path(10.4, 2, prefix_of=1, prefix_steps=4)
    jumped = Chunk(b.stamp, b.period, b.actions + 1.0, b.received, 2, 4, 1)
    queue.push(jumped)
    targets = [queue.target(10.4 + 0.04 * i) for i in range(3, 10)]
    times = 10.4 + 0.04 * np.arange(4, 10)
    np.testing.assert_allclose(targets[0], path(np.array([10.4 + 0.04 * 3]))[0])  # still a
    expected = path(times) + np.minimum(np.arange(6) / 4, 1.0)[:, None]
    np.testing.assert_allclose(np.array(targets[1:]), expected, atol=1e-12)
    assert queue.source.chunk_id == 2 and queue.source is not jumped  # the faded copy plays
    np.testing.assert_allclose(queue.source.actions[4:10], expected, atol=1e-12)
    c = on_path(10.6, 3, prefix_of=2, prefix_steps=4)
    queue.push(c)
    ticks(queue, 10.8, 10.84)
    assert queue.source.chunk_id == 3 and queue.splices == 2


def test_prefix_splice_fade_after_the_played_chunk_ran_out_starts_from_its_last_row():
    queue = ChunkQueue('prefix', splice_fade=0.16, max_age=2.0)
    a = on_path(10.0, 1)
    queue.push(a)
    ticks(queue, 10.0, 11.0)  # a's 25 rows, then it has run out
    late = on_path(10.9, 2, prefix_of=1, prefix_steps=2, received=11.1)
    queue.push(Chunk(late.stamp, late.period, late.actions + 1.0, late.received, 2, 2, 1))
    np.testing.assert_allclose(queue.target(11.12), a.actions[-1])
    assert (queue.splices, queue.late_splices, queue.restarts) == (1, 1, 0)


def test_prefix_splice_fade_smooths_a_restart_from_the_held_target():
    """A chunk given nothing takes over once the played one ran out (a restart): from the
    last target played (where the arms were held), fading to its own rows as a splice does,
    and from its row for the moment the hold began (A's last row, 10.96: row 1), not its row
    for now: the rows of the hold never went by."""
    queue = ChunkQueue('prefix', splice_fade=0.16, max_age=2.0)
    a = on_path(10.0, 1)
    queue.push(a)
    ticks(queue, 10.0, 11.0)
    assert queue.target(11.04) is None  # ran out, nothing follows: the executor holds
    fresh = on_path(10.92, 5)  # given nothing
    queue.push(Chunk(fresh.stamp, fresh.period, fresh.actions + 1.0, fresh.received, 5))
    targets = np.array([queue.target(11.08 + 0.04 * i) for i in range(6)])
    held = a.actions[-1]
    rows = np.arange(6)
    own = path(10.92 + 0.04 * (1 + rows)) + 1.0
    weights = np.clip(1 - rows / 4, 0, 1)[:, None]
    np.testing.assert_allclose(targets, own + weights * (held - own[0]), atol=1e-12)
    assert queue.restarts == 1 and queue.splices == 0


def test_prefix_starts_a_chunk_observed_at_rest_at_its_first_row():
    """At the start the arms held while the policy thought: the newest chunk, observed 0.32 s
    (8 rows) before the first tick, plays from its row 0 at that tick, its rows timed from it
    (what ~/committed then says); its successor, given those rows, splices in at its row d."""
    queue = ChunkQueue('prefix')
    queue.clear(idle_since=10.0)  # the executor's first command: the arms hold from here
    a = on_path(10.0, 1, received=10.3)
    queue.push(a)
    rows = [row for _, _, row in ticks(queue, 10.32, 10.58)]
    assert rows == list(range(7))  # 10.32 .. 10.56
    started = queue.source
    assert started.chunk_id == 1 and started.stamp == pytest.approx(10.32)
    np.testing.assert_array_equal(started.actions, a.actions)
    b = on_path(10.56, 2, prefix_of=1, prefix_steps=3, received=10.6)
    queue.push(b)
    played = ticks(queue, 10.6, 10.74)  # a's rows 7, 8 (as given to b), then b from its row 3
    expected = [(1, 7), (1, 8), (2, 3), (2, 4)]
    assert [(source.chunk_id, row) for _, source, row in played] == expected
    assert queue.source is b and (queue.splices, queue.restarts) == (1, 0)


def test_prefix_start_from_row_0_keeps_the_watchdog_on_the_arrival():
    """Re-timed to start now, a chunk must not outlive the watchdog's arrival bound: observed
    at 10.0, arrived at 10.35, max_age 0.5, started at 10.4: its rows answer up to 10.85 (rows
    0-11), then the executor holds."""
    queue = ChunkQueue('prefix', max_age=0.5)
    queue.clear(idle_since=10.0)
    queue.push(on_path(10.0, 1, received=10.35))
    played = ticks(queue, 10.4, 11.0)
    assert [row for _, source, row in played if source is not None] == list(range(12))
    assert max(now for now, source, _ in played if source is not None) <= 10.85 + 1e-9


def test_prefix_restart_with_a_chunk_observed_during_the_hold_starts_at_its_first_row():
    queue = ChunkQueue('prefix', max_age=2.0)
    queue.push(on_path(10.0, 1))
    ticks(queue, 10.0, 11.2)  # a ran out at 10.96: the arms hold
    queue.push(on_path(11.1, 2, received=11.4))  # observed while held, 0.3 s of latency
    assert [row for _, _, row in ticks(queue, 11.44, 11.54)] == [0, 1, 2]
    assert queue.restarts == 1


def test_prefix_starts_only_from_a_chunk_observed_since_the_arms_began_to_hold():
    """Started from its first row, a chunk observed before the executor's first command would
    be dropped by the watchdog's age bounds long before its end (and before a chunk given its
    rows could come): through the graph that made a restart in every episode. It is not
    started; the next one, observed since, is."""
    queue = ChunkQueue('prefix')
    queue.clear(idle_since=10.0)
    queue.push(on_path(9.7, 1, received=10.02))  # observed before: never played
    assert all(source is None for _, source, _ in ticks(queue, 10.04, 10.3))
    queue.push(on_path(10.04, 2, received=10.36))
    played = ticks(queue, 10.36, 10.46)
    assert [(source.chunk_id, row) for _, source, row in played] == [(2, 0), (2, 1), (2, 2)]
    assert queue.restarts == 0
