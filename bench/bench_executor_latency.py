"""Fresh-target ticks/s with a 0.321 s stand-in policy: chunk_executor vs synchronous client.

The stand-in policy takes an observation, spends 0.321 s "thinking" (the OFT+ latency on an A100
in the paper) and returns 25 targets at 25 Hz. The synchronous baseline is the authors' client:
run the whole chunk, then ask for the next and wait, so the arms stand still during inference
(anchor: 25 / (1 + 0.321) = 18.9 Hz). Against it, the same stand-in runs back to back and
publishes its chunks over DDS to a chunk_executor process, which plays the target for *now*
(latency compensation). A tick carries a fresh target when it follows a chunk row rather than
holding; a stall is a tick (after the first command) without one. Goal: 25.0 Hz, 0 stalls.

The executor runs once per merge rule: `newest` and `commit` compensate the latency; `sync`
plays each chunk from its first row and holds until a chunk observed after its last row
arrives, so it trades rate (`waits`: held ticks) for chunks that start where the arm is, and at
this latency comes down to the synchronous baseline's rate; `prefix` (real-time chunking) has
the stand-in work as policy_node does with a prefix model (runtime/action_prefix.py's planner):
it observes when the played chunk (/chunk_executor/committed) has its latency in rows plus 2
left, gives the new chunk the played rows for that time and the executor switches at the first
predicted row. Its figures include the largest arm-joint step a target asked for at the chunk
switches and inside chunks.
"""

from __future__ import annotations

import threading
import time

from bench.executor_harness import PERIOD, POSE, Driver, start_executor
from oft_policy_node import robot
from oft_policy_node.child_process import stop_process
from oft_policy_node.ros_conversions import played_chunk
from oft_policy_node.runtime.action_prefix import PrefixPlanner

LATENCY_S = 0.321
DURATION_S = 20.0
MERGE_RULES = ('newest', 'commit', 'sync', 'prefix')
PREFIX_STEPS = 12  # what the committed pot policy was trained with


def synchronous_baseline(driver: Driver) -> dict:
    """The authors' loop, real time, commands published like the executor's."""
    from sensor_msgs.msg import JointState

    publisher = driver.node.create_publisher(JointState, '/bench/baseline_command', 10)
    fresh = 0
    started = time.monotonic()
    while time.monotonic() - started < DURATION_S:
        time.sleep(LATENCY_S)  # the policy call: the robot waits
        for row in range(robot.CHUNK_SIZE):
            tick = time.monotonic()
            publisher.publish(JointState(position=[float(v) for v in POSE + 0.001 * row]))
            fresh += 1
            time.sleep(max(0.0, tick + PERIOD - time.monotonic()))
    elapsed = time.monotonic() - started
    ticks = int(elapsed / PERIOD)  # what a fixed 25 Hz clock would have offered
    return {
        'fresh_hz': round(fresh / elapsed, 2),
        'stalls': ticks - fresh,
        'duration_s': round(elapsed, 2),
    }


def executor_run(driver: Driver, rule: str) -> dict:
    stopping = threading.Event()

    def stand_in_policy() -> None:
        while not stopping.is_set():
            observed = driver.now()  # the observation is taken ...
            time.sleep(LATENCY_S)  # ... inference ...
            driver.publish_chunk(observed)  # ... the chunk is stamped with its time

    def stand_in_prefix_policy() -> None:
        planner, published, published_at = PrefixPlanner(PREFIX_STEPS, PERIOD), 0, 0.0
        while not stopping.is_set():
            msg = driver.committed
            played = None if msg is None else played_chunk(msg, driver.committed_at)
            if not planner.ready(played, driver.now(), published, published_at):
                time.sleep(0.005)
                continue
            observed = driver.now()
            prefix, source = planner.prefix(played, observed, observed)
            time.sleep(LATENCY_S)
            published = driver.publish_chunk(observed, prefix, source)
            published_at = driver.now()
            planner.latency.add(published_at - observed)

    target = stand_in_prefix_policy if rule == 'prefix' else stand_in_policy
    policy = threading.Thread(target=target, daemon=True)
    policy.start()
    try:
        driver.spin_for(2.0)  # the first chunk lands 0.321 s in: leave the start-up out
        before = driver.counters()
        driver.spin_for(DURATION_S)
        after = driver.counters()
        elapsed = after['stamp'] - before['stamp']
    finally:
        stopping.set()
        policy.join()
    result = {
        'fresh_hz': round((after['fresh_ticks'] - before['fresh_ticks']) / elapsed, 2),
        'stalls': int(after['stalls'] - before['stalls']),
        'waits': int(after['waits'] - before['waits']),
        'clamped_commands': int(after['clamped_commands'] - before['clamped_commands']),
        'ticks_hz': round((after['ticks'] - before['ticks']) / elapsed, 2),
        'duration_s': round(elapsed, 2),
        'switch_step_max_rad': round(after['switch_step_max'], 4),
        'chunk_step_max_rad': round(after['chunk_step_max'], 4),
    }
    if rule == 'prefix':
        for key in ('splices', 'late_splices', 'restarts'):
            result[key] = int(after[key] - before[key])
    return result


def run() -> dict:
    result = {
        'policy_latency_s': LATENCY_S,
        'anchor_hz': round(25 / (1 + LATENCY_S), 1),
        'goal_hz': 25.0,
        'executor': {},
    }
    for rule in MERGE_RULES:
        executor = start_executor('-p', f'merge_rule:={rule}')
        driver = Driver(follow=True)
        try:
            driver.start_commanding()
            result['executor'][rule] = executor_run(driver, rule)
        finally:
            driver.close()
            stop_process(executor)
    driver = Driver()  # the baseline publishes its own commands: no executor runs
    try:
        result['synchronous_baseline'] = synchronous_baseline(driver)
    finally:
        driver.close()
    return result
