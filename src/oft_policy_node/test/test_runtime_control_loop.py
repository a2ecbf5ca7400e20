"""PeriodicLoop on a simulated clock: absolute deadlines, no burst after a late tick, a clean
stop, and the priority it asks for (refusals included)."""

from __future__ import annotations

import os
import threading

import pytest

from oft_policy_node.runtime import control_loop
from oft_policy_node.runtime.control_loop import PeriodicLoop, raise_thread_priority

PERIOD = 0.04


class SimClock:
    """A clock that only moves when the loop sleeps (to its deadline) or a tick takes time."""

    def __init__(self, tick_durations: list[float], stop_after: int) -> None:
        self.t = 100.0
        self.tick_times: list[float] = []
        self.sleeps: list[float] = []
        self._durations = tick_durations
        self._stop_after = stop_after
        self.loop: PeriodicLoop | None = None
        self.done = threading.Event()

    def now(self) -> float:
        return self.t

    def sleep_until(self, deadline: float) -> bool:
        self.sleeps.append(deadline)
        self.t = max(self.t, deadline)
        return True

    def tick(self) -> None:
        self.tick_times.append(self.t)
        n = len(self.tick_times)
        self.t += self._durations[n - 1] if n <= len(self._durations) else 0.001
        if n == self._stop_after:
            assert self.loop is not None
            self.loop.stop()
            self.done.set()


def run_loop(
    durations: list[float], ticks: int, sim_clock: bool = False
) -> tuple[SimClock, PeriodicLoop]:
    clock = SimClock(durations, ticks)
    clock.loop = PeriodicLoop(
        PERIOD, clock.tick, clock.now, clock.sleep_until, sim_clock=sim_clock
    )
    clock.loop.start()
    assert clock.done.wait(5.0)
    clock.loop.stop()
    return clock, clock.loop


def test_deadlines_are_absolute_so_slow_ticks_do_not_drift_the_schedule():
    # Ticks taking 30 ms of a 40 ms period (a relative sleep would tick every 70 ms).
    clock, loop = run_loop([0.03] * 10, ticks=10)
    expected = [100.0 + i * PERIOD for i in range(10)]
    assert clock.tick_times == pytest.approx(expected, abs=1e-9)
    assert loop.overruns == 0


def test_deadlines_a_late_tick_missed_are_skipped_not_fired_in_a_burst():
    # The third tick (at 100.08) takes 130 ms, past the deadlines 100.12, 100.16, 100.20: they
    # are counted and skipped; the next tick is the first deadline after it ended, 100.24.
    durations = [0.001, 0.001, 0.13] + [0.001] * 5
    clock, loop = run_loop(durations, ticks=8)
    gaps = [b - a for a, b in zip(clock.tick_times, clock.tick_times[1:], strict=False)]
    assert loop.overruns == 3
    assert min(gaps) >= PERIOD - 1e-9  # never two ticks closer than a period
    assert gaps[2] == pytest.approx(0.16)
    assert gaps[3:] == pytest.approx([PERIOD] * 4)
    assert clock.tick_times[3:] == pytest.approx([100.0 + k * PERIOD for k in range(6, 11)])


def test_on_a_simulated_clock_no_deadline_is_skipped_when_the_simulation_moves_on_at_once():
    # A simulation that steps as soon as it has a tick's command: /clock reaches the next
    # deadline during the tick. On the wall-clock rule that deadline would count as missed
    # and the simulation would wait forever for its command.
    clock, loop = run_loop([PERIOD] * 6, ticks=6, sim_clock=True)
    assert clock.tick_times == pytest.approx([100.0 + k * PERIOD for k in range(6)])
    assert loop.overruns == 0


def test_a_sleep_woken_early_sleeps_again_one_period_from_the_wake():
    """sleep_until returns False when the clock source changed (sim time switched on): the
    loop neither ticks at once (two commands 1 ms apart) nor trusts the old schedule."""
    ticks: list[float] = []
    t = [0.0]
    wakes = iter([True, False])

    def sleep_until(deadline: float) -> bool:
        woke = next(wakes, True)
        t[0] = deadline if woke else t[0] + 0.001  # woken early: only 1 ms passed
        return woke

    def tick() -> None:
        ticks.append(t[0])
        if len(ticks) == 5:
            loop.stop()

    loop = PeriodicLoop(PERIOD, tick, lambda: t[0], sleep_until)
    loop.start()
    loop._thread.join(5.0)
    assert ticks == pytest.approx([0.0, 0.04, 0.081, 0.121, 0.161])


def test_stop_ends_the_thread_within_a_period():
    loop = PeriodicLoop(
        PERIOD, lambda: None, control_loop.time.monotonic, control_loop.monotonic_sleep_until
    )
    loop.start()
    loop.stop(timeout=1.0)
    assert not loop._thread.is_alive()


def test_priority_zero_leaves_the_thread_as_it_is_and_warns_nothing():
    result = []

    def ask() -> None:
        result.append((raise_thread_priority(0), os.sched_getscheduler(0), os.nice(0)))

    thread = threading.Thread(target=ask)
    thread.start()
    thread.join()
    priority, scheduler, niceness = result[0]
    assert priority.warning is None
    assert (scheduler, niceness) == (os.SCHED_OTHER, os.nice(0))


def test_a_refused_real_time_class_falls_back_with_one_clear_warning(monkeypatch):
    def refuse(*_args: object) -> None:
        raise PermissionError(1, 'Operation not permitted')

    monkeypatch.setattr(control_loop.os, 'sched_setscheduler', refuse)
    result = []
    thread = threading.Thread(target=lambda: result.append(raise_thread_priority(50)))
    thread.start()
    thread.join()
    priority = result[0]
    assert 'SCHED_FIFO priority 50 refused' in priority.warning
    assert 'rtprio' in priority.warning  # says how to allow it
    assert priority.description in priority.warning  # and what it runs at instead


def test_the_loop_thread_gets_the_real_time_class_only_for_itself():
    seen = []

    def tick() -> None:
        seen.append(os.sched_getscheduler(0))
        loop.stop()

    loop = PeriodicLoop(
        PERIOD,
        tick,
        control_loop.time.monotonic,
        control_loop.monotonic_sleep_until,
        realtime_priority=10,
    )
    priority = loop.start()
    loop._thread.join(2.0)
    if priority.warning:  # a machine that refuses SCHED_FIFO: the fallback is what it reports
        assert seen == [os.SCHED_OTHER]
    else:
        assert priority.description == 'SCHED_FIFO priority 10'
        assert seen == [os.SCHED_FIFO]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the test's own thread is unchanged


def test_a_tick_that_raises_ends_the_loop_and_says_why():
    def tick() -> None:
        raise RuntimeError('backend gone')

    loop = PeriodicLoop(
        PERIOD, tick, control_loop.time.monotonic, control_loop.monotonic_sleep_until
    )
    threading.excepthook, hook = (lambda args: None), threading.excepthook  # expected raise
    try:
        loop.start()
        loop._thread.join(2.0)
    finally:
        threading.excepthook = hook
    assert not loop._thread.is_alive()
    assert loop.failure == "the control loop stopped: RuntimeError('backend gone')"
