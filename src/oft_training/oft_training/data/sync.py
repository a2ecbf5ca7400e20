"""Resampling of timestamped streams onto the fixed control grid.

Every quantity of a training sample is "the value in force at the tick": the newest message
stamped at or before the tick (zero-order hold). That is what the robot saw (observations) and
what it was tracking (commanded targets) at that instant, and it never looks into the future.
A value older than the stream's tolerance is not in force any more: the tick is reported as a
gap instead of silently reusing a stale message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Stream:
    """One time series: `stamps` (N,) int64 nanoseconds, `values` (N, d); sorted by stamp."""

    name: str
    stamps: np.ndarray  # (N,) int64 ns
    values: np.ndarray  # (N, d)

    @staticmethod
    def from_unsorted(name: str, stamps: list[int], values: list | np.ndarray) -> Stream:
        """Sort by stamp (stable, so equal stamps keep their recording order)."""
        stamps_arr = np.asarray(stamps, dtype=np.int64)
        values_arr = np.asarray(values)
        if len(stamps_arr) != len(values_arr):
            raise ValueError(f'{name}: {len(stamps_arr)} stamps but {len(values_arr)} values')
        order = np.argsort(stamps_arr, kind='stable')
        return Stream(name, stamps_arr[order], values_arr[order])


@dataclass(frozen=True)
class Gap:
    """Ticks where a stream had no message young enough."""

    stream: str
    first_tick: int
    count: int
    worst_age_s: float  # inf when nothing was recorded before the tick

    def __str__(self) -> str:
        age = 'none yet' if np.isinf(self.worst_age_s) else f'{self.worst_age_s * 1e3:.0f} ms old'
        return (
            f'{self.stream}: {self.count} tick(s) from tick {self.first_tick} have no message '
            f'within tolerance (newest {age})'
        )


def control_grid(streams: list[Stream], rate_hz: float) -> np.ndarray:
    """Ticks (T,) int64 ns at `rate_hz` from the first instant every stream has a message to the
    last message of the stream that ends first. Empty when the streams never overlap."""
    if rate_hz <= 0:
        raise ValueError(f'control rate must be > 0 Hz, got {rate_hz}')
    empty = [s.name for s in streams if len(s.stamps) == 0]
    if empty:
        raise ValueError(f'no messages on {empty}')
    start = max(int(s.stamps[0]) for s in streams)
    end = min(int(s.stamps[-1]) for s in streams)
    if end < start:
        return np.zeros(0, dtype=np.int64)
    period_ns = round(NS_PER_S / rate_hz)
    return start + period_ns * np.arange((end - start) // period_ns + 1, dtype=np.int64)


def latest_at(
    stream: Stream, ticks: np.ndarray, tolerance_s: float
) -> tuple[np.ndarray, list[Gap]]:
    """Index (T,) of the newest message at or before each tick, and the gaps where that message
    is older than `tolerance_s` (or missing: index -1)."""
    index = np.searchsorted(stream.stamps, ticks, side='right') - 1  # (T,)
    age_s = np.where(index >= 0, (ticks - stream.stamps[np.maximum(index, 0)]) / NS_PER_S, np.inf)
    return index, _gaps(stream.name, age_s > tolerance_s, age_s)


def _gaps(name: str, bad: np.ndarray, age_s: np.ndarray) -> list[Gap]:
    """Group consecutive bad ticks into runs."""
    gaps = []
    bad_ticks = np.flatnonzero(bad)
    if len(bad_ticks) == 0:
        return gaps
    run_starts = np.flatnonzero(np.diff(bad_ticks) != 1) + 1
    for run in np.split(bad_ticks, run_starts):
        gaps.append(Gap(name, int(run[0]), len(run), float(age_s[run].max())))
    return gaps
