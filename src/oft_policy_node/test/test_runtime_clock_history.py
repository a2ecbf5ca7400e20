"""ClockHistory: the node clock at a past system instant (a chunk sent while /clock stands still
is timed at that /clock, however long it waited)."""

from __future__ import annotations

import threading

from oft_policy_node.runtime.clock_history import ClockHistory


def test_the_clock_taken_last_at_or_before_the_instant():
    history = ClockHistory()
    assert history.at(5) is None
    history.record(100, 1.0)
    history.record(200, 1.04)
    history.record(300, 1.08)
    assert history.at(250) == 1.04
    assert history.at(200) == 1.04
    assert history.at(10**12) == 1.08  # /clock stood still since: its last value
    assert history.at(50) == 1.0  # older than everything kept: the oldest value


def test_only_the_newest_values_are_kept():
    history = ClockHistory(size=2)
    for i in range(5):
        history.record(i * 10, float(i))
    assert history.at(0) == 3.0 and history.at(45) == 4.0


def test_recording_while_another_thread_reads():
    history = ClockHistory(size=64)
    done = threading.Event()

    def write() -> None:
        for i in range(20000):
            history.record(i, i * 1e-3)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        value = history.at(10**9)
        assert value is None or value >= 0
    writer.join()
    assert history.at(10**9) == 19.999
