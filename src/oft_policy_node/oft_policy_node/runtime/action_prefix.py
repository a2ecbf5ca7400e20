"""Real-time chunking on the policy's side: which rows a new chunk is given, and when to start it.

With the `prefix` merge rule the executor publishes, at every tick, the chunk it is playing
(`CommittedChunk`). An inference that starts from an observation taken at t0 publishes its
chunk about one latency later, and until then the arms follow the committed chunk. So the
policy is told those targets: row i of the new chunk (the target for t0 + i * period) is given
the committed chunk's target for that time, for i < d, where d is the recent latency (its
`quantile`, over the last `window` chunks) in rows, rounded up, plus `margin_rows` (without
it one chunk in seven came after its switch row through the graph on this CPU, and a late
chunk is taken at a later row: a step). The model predicts rows d..K-1
conditioned on them (training drew d per sample: Black, Ren, Equi, Levine 2025, the training-
time variant of real-time chunking), and the executor switches to the new chunk exactly at its
row d, so the targets run on with no pause and no row skipped.

When to start: every chunk plays nearly to its end, as `sync` and OFT's own ALOHA execution
play whole chunks (the policies here succeed most with whole chunks, docs/training.md), but the
next observation is taken while it still plays: a new inference starts once the committed
chunk has no more than d + `slack_rows` rows left, the slack being the margin for a chunk that
comes later than the latency said; while the executor holds (nothing plays) it starts at once.
Either way it waits while its newest chunk is on its way in: a second chunk observed meanwhile
would be given nothing and replace a chunk that was. Without reports from the executor
(another merge rule, or none for `plan_timeout`), inference runs as before: as often as
observations come.

ROS-free: times are float seconds on the node clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PlayedChunk:
    """The chunk the executor plays: row i is the target for `stamp + i * period`; `row` is the
    row of the tick the message was published at; received on the node clock. chunk_id 0 (no
    rows): the executor plays nothing, it holds."""

    chunk_id: int
    stamp: float
    period: float
    row: int
    actions: np.ndarray  # (K, D) robot units
    received: float

    @property
    def num_steps(self) -> int:
        return self.actions.shape[0]

    def targets_at(self, times: np.ndarray) -> np.ndarray:
        """(n, D) what the executor commands at `times`: the nearest row, the last one after
        the end (it holds there until a chunk takes over)."""
        rows = np.rint((np.asarray(times) - self.stamp) / self.period).astype(int)
        return self.actions[np.clip(rows, 0, self.num_steps - 1)]


@dataclass
class LatencyWindow:
    """The recent observation-to-publish latencies of the node's chunks."""

    size: int = 20
    quantile: float = 0.9
    _values: deque = field(default_factory=deque, init=False)

    def add(self, seconds: float) -> None:
        self._values.append(float(seconds))
        while len(self._values) > self.size:
            self._values.popleft()

    def rows(self, period: float) -> int:
        """The latency in rows, rounded up; 0 before the first chunk."""
        if not self._values:
            return 0
        return math.ceil(float(np.quantile(self._values, self.quantile)) / period - 1e-9)


@dataclass
class PrefixPlanner:
    max_steps: int  # the model's prefix_steps: the most rows it can be given
    period: float
    slack_rows: int = 2
    margin_rows: int = 1
    plan_timeout: float = 0.5
    latency: LatencyWindow = field(default_factory=LatencyWindow)

    def __post_init__(self) -> None:
        if min(self.max_steps, self.slack_rows, self.margin_rows) < 0:
            raise ValueError(
                f'max_steps={self.max_steps}, slack_rows={self.slack_rows} and '
                f'margin_rows={self.margin_rows} must be >= 0'
            )
        if not (self.period > 0 and self.plan_timeout > 0):
            raise ValueError('period and plan_timeout must be > 0 s')

    def steps(self) -> int:
        """d: the rows the next chunk is given (the latency in rows plus the margin, at most
        max_steps; 0 before any latency was measured)."""
        rows = self.latency.rows(self.period)
        return min(self.max_steps, rows + self.margin_rows) if rows else 0

    def active(self, plan: PlayedChunk | None, now: float) -> bool:
        """Whether the executor splices chunks (it reported lately)."""
        return plan is not None and now - plan.received <= self.plan_timeout

    def ready(
        self, plan: PlayedChunk | None, now: float, newest_id: int, newest_at: float
    ) -> bool:
        """Whether to start the next inference at `now`; `newest_id` / `newest_at`: the node's
        newest published chunk and when it went out."""
        if self.max_steps == 0 or not self.active(plan, now):
            return True  # nothing to give: infer as without the executor's reports
        d = self.steps()
        if (
            plan.chunk_id != newest_id
            and now - newest_at < (d + self.slack_rows + 1) * self.period
        ):
            return False  # the newest chunk is on its way in: it is spliced at its row d
        if plan.chunk_id == 0:
            return True  # the executor holds: a chunk is wanted now
        return plan.num_steps - 1 - plan.row <= d + self.slack_rows

    def prefix(
        self, plan: PlayedChunk | None, observed: float, now: float
    ) -> tuple[np.ndarray | None, int]:
        """The rows (d, D) to give a chunk observed at `observed`, and the id of the chunk they
        come from; (None, 0) when nothing is committed or d is 0."""
        d = self.steps()
        if d == 0 or not self.active(plan, now) or plan.chunk_id == 0:
            return None, 0
        return plan.targets_at(observed + self.period * np.arange(d)), plan.chunk_id
