"""A periodic loop on a thread of its own, at absolute deadlines, above the rest of the machine
(ROS-free: the clock and the sleep are handed in).

Why not a ROS timer on the executor's callback threads: a tick then waits behind whatever
callback holds those threads, and a busy machine delays each wake-up by a scheduler slice
(measured: p99 35 ms, max 98 ms with both cores loaded, nearly a whole 40 ms period). Here the
deadlines are `start + n * period`, so a late wake-up never shifts the ticks after it; the
deadlines a late tick missed are counted and skipped, not fired back to back (the safety filter
limits the step per tick, so a burst of ticks would be a burst of speed).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# When SCHED_FIFO is refused, the loop still asks to be favoured by the fair scheduler: a
# nice -10 thread gets about 9x the CPU share of a nice 0 one when both want to run.
FALLBACK_NICENESS = -10


@dataclass(frozen=True)
class Priority:
    """What the loop thread obtained, for the log; `warning` says what it could not get."""

    description: str
    warning: str | None = None


def raise_thread_priority(realtime_priority: int) -> Priority:
    """Raise the calling thread: SCHED_FIFO at `realtime_priority` (1-99), else
    `FALLBACK_NICENESS` with a warning; 0 leaves it as it is. Linux applies both to the calling
    thread only, so the process's other threads keep their normal share."""
    if realtime_priority == 0:
        return Priority('normal priority: realtime_priority 0')
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime_priority))
        return Priority(f'SCHED_FIFO priority {realtime_priority}')
    except (AttributeError, OSError) as error:  # AttributeError: not Linux
        refused = (
            f'SCHED_FIFO priority {realtime_priority} refused ({error}); allow it with an '
            'rtprio limit (e.g. "@realtime - rtprio 99" in /etc/security/limits.d/) or '
            'CAP_SYS_NICE'
        )
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FALLBACK_NICENESS)
        niceness = f'nice {FALLBACK_NICENESS}'
    except (AttributeError, OSError):
        niceness = 'normal priority (a lower niceness was refused too)'
    return Priority(
        niceness,
        f'{refused}; the control loop runs at {niceness}, so a busy machine can delay its ticks',
    )


def raise_process_threads(niceness: int, except_thread: int | None = None) -> None:
    """Give every thread of this process but `except_thread` (a native id) `niceness`; threads
    they create later inherit it.

    Why the whole process: the loop thread needs the GIL after each sleep, and a thread of the
    same process that holds it when a busy core preempts it makes the loop wait a whole
    scheduler slice (measured: p99 14.8 ms with only the loop thread raised, both cores
    loaded). Favoured by the fair scheduler, such a thread is back on a core at once. Not
    SCHED_FIFO: with every thread of the node real-time, ticks were 80 ms late even idle.
    """
    for name in os.listdir('/proc/self/task'):
        tid = int(name)
        if tid == except_thread:
            continue
        try:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except OSError:  # refused (the loop thread has warned already) or the thread ended
            pass


class PeriodicLoop:
    """Calls `tick()` every `period` on a daemon thread until `stop()`.

    `now()` is the clock the deadlines are on (seconds); `sleep_until(t)` sleeps until `now()`
    reaches t and returns False when it woke for another reason (shutdown, the clock source
    changed), after which the schedule restarts from now.
    """

    def __init__(
        self,
        period: float,
        tick: Callable[[], None],
        now: Callable[[], float],
        sleep_until: Callable[[float], bool],
        realtime_priority: int = 0,
        name: str = 'control_loop',
        sim_clock: bool = False,
    ) -> None:
        self.period = period
        self.sim_clock = sim_clock
        self.overruns = 0  # deadlines that passed without a tick (skipped, not made up)
        self._tick = tick
        self._now = now
        self._sleep_until = sleep_until
        self._realtime_priority = realtime_priority
        self._stopping = threading.Event()
        self._started = threading.Event()
        self.priority: Priority | None = None
        self.failure: str | None = None  # why the loop ended on an error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Priority:
        """Start the thread; returns once it has set its priority (which it reports)."""
        self._thread.start()
        self._started.wait()
        assert self.priority is not None
        return self.priority

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def raise_other_threads(self) -> None:
        """For a process of its own: the rest of the process at FALLBACK_NICENESS
        (`raise_process_threads`), and the GIL handed over every 0.5 ms instead of 5 ms, so
        the loop never waits long for a thread of its own process. No-op at priority 0."""
        if self._realtime_priority == 0:
            return
        sys.setswitchinterval(0.0005)
        raise_process_threads(FALLBACK_NICENESS, self._thread.native_id)

    def _run(self) -> None:
        self.priority = raise_thread_priority(self._realtime_priority)
        self._started.set()
        try:
            self._schedule()
        except Exception as error:
            # No tick runs after this: the arms keep their last command. Said on /diagnostics.
            self.failure = f'the control loop stopped: {error!r}'
            raise

    def _schedule(self) -> None:
        anchor, index = self._now(), 0  # deadline k is anchor + k * period: no summed rounding
        while not self._stopping.is_set():
            ticked_at = self._now()
            self._tick()
            # The next deadline is the first one after the tick began (simulated clock: the
            # simulation may already have moved on because it got this tick's command) or
            # ended (wall clock: a tick that ran late is not followed by a second at once).
            reference = ticked_at if self.sim_clock else self._now()
            following = math.floor((reference - anchor) / self.period + 1e-6) + 1
            self.overruns += max(following - index - 1, 0)  # deadlines passed without a tick
            index = following
            while not self._sleep_until(anchor + index * self.period):
                if self._stopping.is_set():
                    return
                anchor, index = self._now(), 1  # woke early: one period from now


def monotonic_sleep_until(deadline: float) -> bool:
    """`sleep_until` on time.monotonic, which wall-clock steps (NTP, a user setting the date)
    cannot move: on the robot the loop keeps its rate whatever the system clock does."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    return True
