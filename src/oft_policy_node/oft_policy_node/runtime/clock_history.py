"""What the node clock read at a past instant of the system clock, for a node on /clock.

DDS stamps each message with when it was received, on the system clock. On wall time the node
clock is that clock, so "received on the node clock" is now minus the time the message waited.
On /clock (a simulation) the two run at different rates, and in a test rig /clock stands still
between the ticks a test steps: subtracting wall seconds from sim time would make a message a
test just sent look older than the tick it was sent in (a chunk stamped 0.09 s ahead was then
rejected as stamped more than 0.1 s ahead). The node clock at the receive instant is instead the
last /clock value the node had taken at that instant.

ROS-free and thread-safe: /clock updates arrive on one thread, messages are timed on others.
"""

from __future__ import annotations

import threading
from collections import deque


class ClockHistory:
    """The node clock's recent values, each with the system time it was taken at."""

    def __init__(self, size: int = 4096) -> None:
        self._values: deque[tuple[int, float]] = deque(maxlen=size)  # (system ns, clock s)
        self._lock = threading.Lock()

    def record(self, system_ns: int, clock_s: float) -> None:
        with self._lock:
            self._values.append((system_ns, clock_s))

    def at(self, system_ns: int) -> float | None:
        """The node clock as it read at `system_ns`: the newest value taken at or before it;
        the oldest one kept for an instant before all of them; None before the first."""
        with self._lock:
            for taken_ns, clock_s in reversed(self._values):
                if taken_ns <= system_ns:
                    return clock_s
            return self._values[0][1] if self._values else None
