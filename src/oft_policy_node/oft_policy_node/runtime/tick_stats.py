"""Rate and jitter of a periodic loop from the wall-clock times of its ticks (ROS-free)."""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class TickStats:
    """Keeps the last `window` tick intervals; jitter = |interval - nominal period|."""

    def __init__(self, nominal_period: float, window: int = 4096) -> None:
        self.nominal_period = nominal_period
        self._intervals: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def record(self, wall_time: float | None = None) -> None:
        now = time.monotonic() if wall_time is None else wall_time
        if self._last is not None:
            self._intervals.append(now - self._last)
        self._last = now

    def summary(self) -> dict[str, float]:
        """rate_hz and jitter p50/p99/max in ms over the window (NaN before two ticks)."""
        if not self._intervals:
            nan = float('nan')
            return {
                'rate_hz': nan,
                'jitter_p50_ms': nan,
                'jitter_p99_ms': nan,
                'jitter_max_ms': nan,
            }
        intervals = np.fromiter(self._intervals, dtype=np.float64)
        jitter_ms = np.abs(intervals - self.nominal_period) * 1e3
        return {
            'rate_hz': float(1.0 / intervals.mean()),
            'jitter_p50_ms': float(np.percentile(jitter_ms, 50)),
            'jitter_p99_ms': float(np.percentile(jitter_ms, 99)),
            'jitter_max_ms': float(jitter_ms.max()),
        }
