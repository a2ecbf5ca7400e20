"""Stream schedule and real-time pacing of the simulator, exact and without ROS."""

from __future__ import annotations

import pytest

from aloha_sim.pacing import RealTimePacer, StreamSchedule, steps_until


def test_streams_fire_at_their_rates_in_sim_time():
    schedule = StreamSchedule({'clock': 100.0, 'camera': 30.0})
    dt, t, fired = 0.002, 0.0, {'clock': 0, 'camera': 0}
    while t < 1.0 - 1e-9:  # one simulated second, stepping like the node
        for name in schedule.pop_due(t):
            fired[name] += 1
        t += steps_until(t, schedule.next_time(), dt) * dt
    assert fired == {'clock': 100, 'camera': 30}


def test_restart_makes_every_stream_due_at_the_new_start():
    schedule = StreamSchedule({'a': 10.0, 'b': 3.0})
    schedule.pop_due(0.0)
    schedule.restart(5.0)
    assert schedule.next_time() == 5.0
    assert sorted(schedule.pop_due(5.0)) == ['a', 'b']


def test_bad_rates_are_rejected():
    with pytest.raises(ValueError, match="stream 'camera'.*got 0"):
        StreamSchedule({'camera': 0.0})


class FakeWallClock:
    """Wall time under the test's control (the pacer's sleeps advance it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def test_pacer_never_lets_sim_time_run_ahead_of_wall_time():
    wall = FakeWallClock()
    pacer = RealTimePacer(1.0, clock=lambda: wall.now, sleep=wall.sleep)
    pacer.pace(0.0)
    for k in range(1, 11):  # physics much faster than real time
        pacer.pace(k * 0.1)
    assert wall.now - 100.0 == pytest.approx(1.0)


def test_pacer_does_not_catch_up_after_falling_behind():
    wall = FakeWallClock()
    pacer = RealTimePacer(1.0, clock=lambda: wall.now, sleep=wall.sleep)
    pacer.pace(0.0)
    wall.now += 2.0  # a slow render: 2 s of wall time for 0.1 s of sim
    pacer.pace(0.1)
    pacer.pace(0.2)  # the next 0.1 s of sim must take 0.1 s of wall, not 0
    assert wall.slept == pytest.approx(0.1)


def test_pacer_rejects_a_factor_above_one():
    with pytest.raises(ValueError, match=r'\(0, 1\], got 2'):
        RealTimePacer(2.0)
