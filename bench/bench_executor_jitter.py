"""chunk_executor tick jitter (wall clock, 25 Hz): idle, and while busy loops load every core,
with the control loop at normal priority and at its default real-time priority.

Each phase runs a fresh chunk_executor process (joint_positions backend) for DURATION_S while
this process streams chunks to it (every 0.3 s, as a policy would); in the loaded phases one
busy-looping process per core competes for the CPU. Reported per phase: the executor's own tick
timing (wall-clock intervals between ticks, from its /diagnostics; jitter = |interval - 40 ms|)
and the intervals between the commands' arrivals at a subscriber in this process (adds DDS
delivery and this process's own scheduling, which is not raised). `loaded_p99_ratio` is the
loaded tick p99 at normal priority over the one at the default priority, from the same run.
"""

from __future__ import annotations

import time

import numpy as np

from bench.executor_harness import PERIOD, Driver, start_cpu_load, start_executor
from oft_policy_node.child_process import stop_process

DURATION_S = 30.0
PHASES = (  # name, chunk_executor parameters, load every core
    ('idle', (), False),
    ('loaded_normal_priority', ('-p', 'realtime_priority:=0'), True),
    ('loaded', (), True),
)


def measure(driver: Driver, ros_args: tuple[str, ...], loaded: bool) -> dict:
    executor = start_executor(*ros_args)
    load = []
    try:
        driver.arrivals.clear()
        driver.start_commanding()
        load = start_cpu_load() if loaded else []
        driver.arrivals.clear()
        started = time.monotonic()
        next_chunk = started
        while time.monotonic() - started < DURATION_S:
            if time.monotonic() >= next_chunk:
                driver.publish_chunk(driver.now())
                next_chunk += 0.3
            driver.executor.spin_once(timeout_sec=0.005)
        counters = driver.counters()
    finally:
        for proc in load:
            proc.kill()  # our own busy loops: nothing to shut down cleanly
            proc.wait()
        stop_process(executor)
    intervals_ms = np.diff(driver.arrivals) * 1e3
    jitter_ms = np.abs(intervals_ms - PERIOD * 1e3)
    return {
        'busy_processes': len(load),
        'control_loop': driver.diagnostics.get('control_loop'),
        'executor_rate_hz': round(counters['rate_hz'], 3),
        'executor_tick_jitter_p50_ms': round(counters['jitter_p50_ms'], 3),
        'executor_tick_jitter_p99_ms': round(counters['jitter_p99_ms'], 3),
        'executor_tick_jitter_max_ms': round(counters['jitter_max_ms'], 3),
        'loop_overruns': int(counters['loop_overruns']),
        'received_commands': len(driver.arrivals),
        'received_rate_hz': round(len(intervals_ms) / (intervals_ms.sum() / 1e3), 3),
        'received_interval_jitter_p50_ms': round(float(np.percentile(jitter_ms, 50)), 3),
        'received_interval_jitter_p99_ms': round(float(np.percentile(jitter_ms, 99)), 3),
        'received_interval_jitter_max_ms': round(float(jitter_ms.max()), 3),
        'stalls': int(counters['stalls']),
    }


def run() -> dict:
    driver = Driver()
    try:
        results: dict = {'duration_s_per_phase': DURATION_S}
        for name, ros_args, loaded in PHASES:
            results[name] = measure(driver, ros_args, loaded)
    finally:
        driver.close()
    normal = results['loaded_normal_priority']['executor_tick_jitter_p99_ms']
    results['loaded_p99_ratio'] = round(
        normal / results['loaded']['executor_tick_jitter_p99_ms'], 2
    )
    return results
