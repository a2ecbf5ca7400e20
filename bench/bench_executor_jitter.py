"""chunk_executor tick jitter (wall clock, 25 Hz, 60 s) while busy loops load every core.

A chunk_executor process runs its 25 Hz loop (joint_positions backend) while one busy-looping
process per core competes for the CPU and this process streams chunks (every 0.3 s, as a
policy would). Reported: the executor's own tick timing (wall-clock intervals between timer
callbacks, from its /diagnostics; jitter = |interval - 40 ms|) and the intervals between the
commands' arrivals at a subscriber in this process (adds DDS delivery and our own scheduling).
"""

from __future__ import annotations

import time

import numpy as np

from bench.executor_harness import PERIOD, Driver, start_cpu_load, start_executor
from oft_policy_node.child_process import stop_process

DURATION_S = 60.0


def run() -> dict:
    executor = start_executor()
    load = []
    driver = Driver()
    try:
        driver.start_commanding()
        load = start_cpu_load()
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
        driver.close()
        stop_process(executor)
    intervals_ms = np.diff(driver.arrivals) * 1e3
    jitter_ms = np.abs(intervals_ms - PERIOD * 1e3)
    return {
        'duration_s': DURATION_S,
        'busy_processes': len(load),
        'executor_rate_hz': round(counters['rate_hz'], 3),
        'executor_tick_jitter_p50_ms': round(counters['jitter_p50_ms'], 3),
        'executor_tick_jitter_p99_ms': round(counters['jitter_p99_ms'], 3),
        'executor_tick_jitter_max_ms': round(counters['jitter_max_ms'], 3),
        'received_commands': len(driver.arrivals),
        'received_rate_hz': round(len(intervals_ms) / (intervals_ms.sum() / 1e3), 3),
        'received_interval_jitter_p50_ms': round(float(np.percentile(jitter_ms, 50)), 3),
        'received_interval_jitter_p99_ms': round(float(np.percentile(jitter_ms, 99)), 3),
        'received_interval_jitter_max_ms': round(float(jitter_ms.max()), 3),
        'stalls': int(counters['stalls']),
    }
