"""Time-indexed action chunks: which target applies *now*, and how overlapping chunks merge.

Row i of a chunk stamped t0 (the observation time) is the target for t0 + i * period. At a tick
at time `now` the queue answers the row nearest to now, so the rows that went stale while the
policy was thinking are skipped (latency compensation), and the robot keeps moving on the
previous chunk until the next one lands. When several chunks cover `now` they are merged:

* `newest`: the chunk with the newest observation stamp wins;
* `blend`: a weighted mean, chunk j weighted exp(-blend_decay * (t_newest - t_j)) (ACT's
  temporal ensembling, weights by observation age; blend_decay = 0 is a plain mean, a large
  value approaches `newest`);
* `commit`: play one chunk to its last row, then switch to the newest chunk that covers now
  (OFT on ALOHA executes all 25 steps open loop before the next query). Why it matters: a
  policy trained on demos that start slowly, re-queried every tick from the start pose, keeps
  answering with its first, slow rows and never leaves; committing to whole chunks moves it on.
* `sync`: play one chunk to its last row, then hold there until a chunk arrives whose
  observation was taken after that row's time, and play it from its *first* row (re-timed to
  start at the tick it begins): inference as a synchronous call, the robot pausing for the
  latency once per chunk, as the OFT authors' ALOHA scripts query their server. Why: with
  `commit` the next chunk was predicted from an observation taken rows before the hand-over
  while the arm was still moving, and starts at a later row; with a slow (CPU) policy those
  rows disagree with where the arm is and get clamped. Held ticks count as waits, not stalls,
  for up to `max_age`; a chunk plays its K rows open loop from when it begins.
* `prefix` (real-time chunking): play one chunk by its times, and switch to a chunk whose first
  rows were given from it (`prefix_of` is the chunk being played, runtime/action_prefix.py)
  exactly at its row `prefix_steps`, the first row it predicted: the targets before that row
  are the ones the played chunk had, so there is no pause (the policy thought while the arm
  moved) and no row is skipped (the step at the switch is the model's own). A chunk that
  arrives after its switch row's time is switched to at its row for now (late: counted). A
  chunk given nothing, or given the rows of another chunk, only takes over when the played
  chunk has run out (a restart: counted, as at the start). A chunk that takes over while the
  arms hold starts at its row for when they began to hold, re-timed from now (row 0 at the
  start, where only a chunk observed since the arms began to hold qualifies): the rows timed
  during the hold never went by.
  `splice_fade` > 0 smooths that switch, and a restart: the new chunk's rows are shifted by
  the step between the played chunk's row (once it ran out, the last target) and its own at
  the switch, the shift fading linearly to nothing over `splice_fade` seconds. (Inference-time
  real-time chunking, Black, Galliker, Levine 2025, weighs the previous chunk into the rows
  past the switch with a decaying soft mask; this does the like to the predicted rows.) Why:
  the model does not always continue its given rows; at 0.32 s of latency its first predicted
  row lay up to 0.34 rad from the last given one, most often where the arm lifts what it
  grasped, and the jerk shook the object out of the fingers (docs/training.md, "Splice fade").
  The faded rows are the chunk's rows from then on, so the rows the next chunk is given are
  the ones played.

The watchdog: a chunk answers only while its observation is at most `max_age` old *and* it
arrived at most `max_age` ago, on the executor's clock. The second bound is what makes the
watchdog hold against clocks that disagree: a chunk stamped ahead of the executor's clock (a
camera host whose clock runs ahead; the executor also rejects stamps beyond a small tolerance)
would pass the age test for as long as its stamp lies in the future. So once the policy falls
silent, the arms follow targets for at most, after the last chunk arrived:
* `newest`, `blend`, `commit`: `max_age`;
* `sync`: `max_age` (the latest a chunk may begin) plus the rest of the chunk being played,
  at most (K - 1) periods: a chunk that began plays its rows to the end, and each chunk is
  played once (it leaves the queue when it begins);
* `prefix`: `max_age`, as its rows are played by their times (a re-timed chunk's observation
  age counts from its re-timed stamp; its arrival age as for any chunk).

ROS-free: times are float seconds on the node clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

MERGE_RULES = ('newest', 'blend', 'commit', 'sync', 'prefix')
# The executor's splice_fade (s): 4 ticks at 25 Hz. The committed pot policy in quick_eval,
# seeds 0-35, with 9 rows (0.36 s) of latency: 24/36 successes without a fade, 30 with 0.16 s,
# 29 with 0.32, 27 with 0.48; with 2 rows: 27, 31, 31 (docs/training.md, "Splice fade").
SPLICE_FADE = 0.16


@dataclass(frozen=True, eq=False)  # compared by identity: the queue removes what it played
class Chunk:
    """K targets predicted from the observation taken at `stamp` (s), one every `period` s:
    row i is the target for stamp + i * period. (`prefix` re-times a chunk that takes over from
    a hold: its stamp is then when its row 0 would have played, see `_from_the_hold`.)"""

    stamp: float
    period: float
    actions: np.ndarray  # (K, D) float64, robot units
    received: float  # s on the executor's clock when the chunk arrived
    chunk_id: int = 0  # the policy's id of the chunk
    prefix_steps: int = 0  # rows 0..prefix_steps-1 were given, not predicted
    prefix_of: int = 0  # the chunk they were taken from (0: none)

    @property
    def num_steps(self) -> int:
        return self.actions.shape[0]

    def row_at(self, now: float) -> int | None:
        """Index of the row whose target time is nearest to `now`, or None if outside."""
        index = round((now - self.stamp) / self.period)
        return index if 0 <= index < self.num_steps else None

    def end_time(self) -> float:
        """The last time this chunk can answer (half a period after its last row)."""
        return self.stamp + (self.num_steps - 0.5) * self.period

    def switch_time(self) -> float:
        """`prefix`: when its first predicted row becomes the row nearest the time."""
        return self.stamp + (self.prefix_steps - 0.5) * self.period

    def fresh(self, now: float, max_age: float) -> bool:
        """The watchdog: observed and received at most `max_age` before `now`."""
        return now - self.stamp <= max_age and now - self.received <= max_age


def fade_splice(actions: np.ndarray, row: int, played: np.ndarray, fade_rows: float) -> np.ndarray:
    """`actions` (K, D) from `row` on shifted by `played - actions[row]`, the shift falling
    linearly from whole at `row` to nothing `fade_rows` rows later; rows before `row` as they
    are. A copy."""
    faded = np.array(actions, dtype=np.float64)
    if fade_rows <= 0:
        return faded
    after = np.arange(faded.shape[0] - row)  # rows since the switch
    weights = np.clip(1.0 - after / fade_rows, 0.0, 1.0)  # (K - row,)
    faded[row:] += weights[:, None] * (np.asarray(played, dtype=np.float64) - faded[row])
    return faded


class ChunkQueue:
    """Holds the chunks that may still answer a tick and merges them by the configured rule."""

    def __init__(
        self,
        merge_rule: str = 'newest',
        blend_decay: float = 0.0,
        max_age: float = 1.0,
        max_chunks: int = 8,
        splice_fade: float = 0.0,
    ) -> None:
        if merge_rule not in MERGE_RULES:
            raise ValueError(f'merge_rule {merge_rule!r} is unknown; use one of {MERGE_RULES}')
        if not (math.isfinite(blend_decay) and blend_decay >= 0.0):
            raise ValueError(f'blend_decay {blend_decay!r} must be a finite number >= 0 (1/s)')
        if not (math.isfinite(max_age) and max_age > 0.0):
            raise ValueError(f'max_age {max_age!r} must be a finite number of seconds > 0')
        if max_chunks < 1:
            raise ValueError(f'max_chunks {max_chunks!r} must be >= 1')
        if not (math.isfinite(splice_fade) and splice_fade >= 0.0):
            raise ValueError(f'splice_fade {splice_fade!r} must be a finite number >= 0 (s)')
        self.merge_rule = merge_rule
        self.blend_decay = blend_decay
        self.max_age = max_age
        self.splice_fade = splice_fade
        self._max_chunks = max_chunks
        self._chunks: list[Chunk] = []  # sorted by stamp, oldest first
        self._committed: Chunk | None = None  # the chunk being played out (`commit`, `sync`)
        self._sync_start = 0.0  # `sync`: when the committed chunk's first row was played
        self._sync_after = -math.inf  # `sync`: the next chunk's observation must not be older
        self.waiting = False  # `sync`: the last target() held for a chunk observed after a row
        self.source: Chunk | None = None  # the chunk whose row the last target came from
        self.source_row = 0
        self.splices = 0  # `prefix`: switches at a chunk's first predicted row
        self.late_splices = 0  # of those, chunks that arrived after their switch row's time
        self.restarts = 0  # `prefix`: a chunk took over without a splice (the played ran out)
        self._idle_since: float | None = None  # `prefix`: the arms hold, nothing played, since

    def __len__(self) -> int:
        return len(self._chunks)

    def push(self, chunk: Chunk) -> None:
        """Add a validated chunk (see SafetyFilter.validate_chunk); keeps the newest few."""
        self._chunks.append(chunk)
        self._chunks.sort(key=lambda c: c.stamp)
        del self._chunks[: -self._max_chunks]

    def clear(self, idle_since: float | None = None) -> None:
        """Forget every chunk; `idle_since`: when the arms began to hold (else the next
        target() call's time): `prefix` starts from a chunk observed since."""
        self._chunks.clear()
        self._committed = None
        self._idle_since = idle_since
        self.source = None
        self._sync_after = -math.inf
        self.waiting = False

    def target(self, now: float) -> np.ndarray | None:
        """The merged target for time `now`, (D,), or None when no fresh chunk covers it."""
        # Chunks past their end, or older than the watchdog allows, can never answer again.
        self._chunks = [
            c for c in self._chunks if c.end_time() > now and c.fresh(now, self.max_age)
        ]
        if self.merge_rule == 'sync':
            return self._sync_target(now)
        if self.merge_rule == 'prefix':
            return self._prefix_target(now)
        rows = [(c, i) for c in self._chunks if (i := c.row_at(now)) is not None]
        if not rows:
            self.source = None
            return None
        if self.merge_rule == 'commit':
            # Stay on the committed chunk while it still covers now (not played out, not
            # dropped by the watchdog); otherwise commit to the newest.
            chunk, i = next(((c, i) for c, i in rows if c is self._committed), rows[-1])
            self._committed = chunk
            return self._play(chunk, i)
        if self.merge_rule == 'newest':
            return self._play(*rows[-1])
        self.source, self.source_row = rows[-1]  # a blend: the newest chunk counts as its source
        newest = rows[-1][0].stamp
        weights = np.array([math.exp(-self.blend_decay * (newest - c.stamp)) for c, _ in rows])
        stacked = np.stack([c.actions[i] for c, i in rows])  # (N, D)
        return weights @ stacked / weights.sum()

    def _play(self, chunk: Chunk, row: int) -> np.ndarray:
        self.source, self.source_row = chunk, row
        return chunk.actions[row].copy()

    def _prefix_target(self, now: float) -> np.ndarray | None:
        last = self._committed  # played last (it may have run out since)
        if last is None and self._idle_since is None:
            self._idle_since = now
        playing = last if last in self._chunks and last.row_at(now) is not None else None
        if last is not None:
            successors = [
                c
                for c in self._chunks
                if c.prefix_of == last.chunk_id
                and c.prefix_steps > 0
                and c.stamp > last.stamp
                and now >= c.switch_time()
                and c.row_at(now) is not None
            ]
            if successors:
                playing = self._faded(successors[-1], now, last)
                self.splices += 1
                self.late_splices += playing.received > playing.switch_time()
        if playing is None:
            # The first chunk is one observed since the arms began to hold. It plays from its
            # first row (_from_the_hold); one that came earlier would be dropped by the
            # watchdog's arrival bound rows before its end, before a chunk given its rows could
            # come (through the graph: a stall and a restart in every episode).
            rows = [
                (c, i)
                for c in self._chunks
                if (i := c.row_at(now)) is not None
                and (last is not None or c.stamp >= self._idle_since)
            ]
            if not rows:
                self.source = None
                return None
            self.restarts += last is not None  # a chunk had been played: not the start
            playing = self._from_the_hold(rows[-1][0], now, last)
            if last is not None:
                playing = self._faded(playing, now, last)
        self._committed = playing
        return self._play(playing, playing.row_at(now))

    def _from_the_hold(self, chunk: Chunk, now: float, played: Chunk | None) -> Chunk:
        """`chunk`, taking over from a hold at `now`, re-timed so that its row for the moment
        the arms began to hold plays now: row 0 at the start (`played` None) and for a chunk
        observed during the hold; it replaces `chunk` in the queue. The watchdog's observation
        bound then counts from the re-timed stamp (the arms held since the observation, so it
        still describes them); its arrival bound stays: a silent policy still drives the arms
        at most max_age after its last chunk came."""
        # Why: rows whose time passed while the arms held never went by. A chunk observed at
        # rest and taken at its row for now jumps ahead by the latency (8 rows at 0.32 s, plus
        # however long the executor took to start) and the arm lags targets the policy never
        # meant for that pose; through the graph each episode then started at another row. In
        # quick_eval, the committed pot policy on seeds 36-143 with the start ramp made 92/108
        # starting at row 0, 85/108 starting at a random row 0-15 (docs/training.md).
        row = 0
        if played is not None:  # the arms hold since the played chunk's last row at the latest
            held_since = min(played.stamp + (played.num_steps - 1) * played.period, now)
            row = max(0, round((held_since - chunk.stamp) / chunk.period))
        if row == chunk.row_at(now):
            return chunk  # no row's time passed in the hold
        return self._replace(chunk, replace(chunk, stamp=now - row * chunk.period))

    def _faded(self, chunk: Chunk, now: float, played: Chunk) -> Chunk:
        """`chunk`, switched to at `now` from `played`, with the step between them faded out
        over `splice_fade`; it replaces `chunk` in the queue."""
        if self.splice_fade == 0.0:
            return chunk
        # From the played chunk's row for now while it still answers; once it ran out or the
        # watchdog dropped it, from the last row it gave (where the arms were held): `played`
        # is the chunk last played, and source_row outlives the holds since.
        row = played.row_at(now)
        if played not in self._chunks or row is None:
            row = self.source_row
        start = played.actions[row]
        return self._replace(
            chunk,
            replace(
                chunk,
                actions=fade_splice(
                    chunk.actions, chunk.row_at(now), start, self.splice_fade / chunk.period
                ),
            ),
        )

    def _replace(self, chunk: Chunk, replacement: Chunk) -> Chunk:
        """Put `replacement` (a re-timed or faded copy) where `chunk` was, the queue still
        sorted by stamp; returns it."""
        self._chunks[self._chunks.index(chunk)] = replacement
        self._chunks.sort(key=lambda c: c.stamp)
        return replacement

    def _sync_target(self, now: float) -> np.ndarray | None:
        chunk = self._committed
        if chunk is not None:
            row = round((now - self._sync_start) / chunk.period)
            if row < chunk.num_steps:
                return self._play(chunk, row)
            self._sync_after = self._sync_start + (chunk.num_steps - 1) * chunk.period
            self._committed = None
        candidates = [c for c in self._chunks if c.stamp >= self._sync_after]
        if not candidates:
            # Holding for the next observation is the rule's pause, not a stall; once the
            # policy is max_age late it is a stall (the watchdog), as for the other rules.
            self.waiting = now - self._sync_after <= self.max_age
            self.source = None
            return None
        self.waiting = False
        self._committed, self._sync_start = candidates[-1], now
        # Played once: a chunk whose stamp lies after its own last row (a clock ahead of ours)
        # must not qualify as its own successor.
        self._chunks.remove(self._committed)
        return self._play(self._committed, 0)
