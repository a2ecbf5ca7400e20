"""When the simulator publishes what, and how it keeps to at most real time.

ROS-free so the timing logic is tested on its own. Simulated time advances only by whole
physics steps; every output stream (clock, joint states, cameras, success) has its own period
in simulated seconds, and the pacer sleeps so that simulated time never runs ahead of wall
time (real-time factor <= max). When the CPU cannot keep up, it does not skip physics: the
simulation simply runs slower than real time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class StreamSchedule:
    """Next due time per named stream, each at a fixed rate in simulated time."""

    def __init__(self, rates_hz: dict[str, float], start: float = 0.0) -> None:
        for name, rate in rates_hz.items():
            if not (rate > 0 and math.isfinite(rate)):
                raise ValueError(
                    f'rate of stream {name!r} must be a positive number of Hz, got {rate}'
                )
        self.periods = {name: 1.0 / rate for name, rate in rates_hz.items()}
        self._count = dict.fromkeys(rates_hz, 0)
        self._start = start

    def restart(self, start: float) -> None:
        """Every stream becomes due at `start` (after a reset), then at its rate."""
        self._start = start
        self._count = dict.fromkeys(self._count, 0)

    def _due_time(self, name: str) -> float:
        # Multiples of the period from the start, so rounding never accumulates.
        return self._start + self._count[name] * self.periods[name]

    def next_time(self) -> float:
        return min(self._due_time(name) for name in self.periods)

    def pop_due(self, now: float, tolerance: float = 1e-9) -> list[str]:
        """Streams due at `now`; each is then scheduled one period later (never twice)."""
        due = [name for name in self.periods if self._due_time(name) <= now + tolerance]
        for name in due:
            # Skip ahead when several periods passed (a period shorter than a physics step).
            while self._due_time(name) <= now + tolerance:
                self._count[name] += 1
        return due


def steps_until(now: float, target: float, timestep: float) -> int:
    """Whole physics steps from `now` to reach or pass `target` (at least one)."""
    return max(1, math.ceil((target - now) / timestep - 1e-9))


class RealTimePacer:
    """Sleeps so that simulated time runs at most `max_factor` times wall time.

    When the simulation falls behind, the pacer re-anchors instead of letting it catch up at a
    higher rate later, so the factor stays <= max over any window.
    """

    def __init__(
        self,
        max_factor: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (0 < max_factor <= 1.0):
            raise ValueError(f'max_real_time_factor must be in (0, 1], got {max_factor}')
        self.max_factor = max_factor
        self._clock, self._sleep = clock, sleep
        self._anchor_wall: float | None = None
        self._anchor_sim = 0.0

    def pace(self, sim_time: float) -> None:
        """Call after advancing to `sim_time`; returns when wall time allows it."""
        now = self._clock()
        if self._anchor_wall is None:
            self._anchor_wall, self._anchor_sim = now, sim_time
            return
        ahead = self._anchor_wall + (sim_time - self._anchor_sim) / self.max_factor - now
        if ahead > 0:
            self._sleep(ahead)
        else:  # behind: run on from here, never faster than real time to catch up
            self._anchor_wall, self._anchor_sim = now, sim_time
