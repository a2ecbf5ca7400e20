"""What the executor benchmarks share: a chunk_executor process on the wall clock, and a
driver node in this process that gives it a measured pose, sends chunks, records the commands'
arrival times and reads the executor's /diagnostics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from oft_policy_node import robot

PERIOD = 1.0 / robot.CONTROL_RATE_HZ
POSE = np.array([0.0, -0.6, 0.6, 0.0, 0.4, 0.0, 0.5] * 2)  # (D,) a resting pose


def trajectory(times: np.ndarray) -> np.ndarray:
    """A smooth reachable motion, (T,) times -> (T, D) targets: the stand-in policy's output."""
    wave = 0.3 * np.sin(2 * np.pi * 0.2 * times)[:, None]  # (T, 1)
    targets = np.tile(POSE, (len(times), 1)) + wave
    targets[:, 6::7] = 0.5 + 0.4 * np.sin(2 * np.pi * 0.1 * times)[:, None]  # grippers
    return targets


def start_executor(*ros_args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            '-m',
            'oft_policy_node.chunk_executor',
            '--ros-args',
            '-p',
            'diagnostics_period:=0.5',
            *ros_args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_cpu_load() -> list[subprocess.Popen]:
    """One busy-looping process per core, at normal priority."""
    return [
        subprocess.Popen([sys.executable, '-c', 'while True: pass'])
        for _ in range(os.cpu_count() or 1)
    ]


class Driver:
    """follow: a perfect arm, whose joint states report each command as the measured pose
    (without states the executor holds after max_joint_state_age)."""

    def __init__(self, follow: bool = False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState

        from oft_msgs.msg import ActionChunk, CommittedChunk

        rclpy.init()
        self.node = rclpy.create_node('executor_bench_driver')
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.arrivals: list[float] = []  # wall time of each left-arm command
        self.follow = follow
        for arm in robot.ARMS:
            self.node.create_subscription(
                JointState,
                robot.joint_positions_topic(arm),
                lambda msg, arm=arm: self._on_command(arm, msg),
                100,
            )
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.chunks = self.node.create_publisher(ActionChunk, robot.ACTION_CHUNK_TOPIC, 10)
        self.committed, self.committed_at = None, 0.0  # merge_rule prefix: the played chunk

        def on_committed(msg: CommittedChunk) -> None:
            self.committed, self.committed_at = msg, self.now()

        self.node.create_subscription(
            CommittedChunk, robot.COMMITTED_CHUNK_TOPIC, on_committed, 10
        )
        self._chunk_id = 0
        self._states = [
            self.node.create_publisher(JointState, robot.joint_states_topic(arm), 10)
            for arm in robot.ARMS
        ]

    def _on_command(self, arm: str, msg: object) -> None:
        from tests.runtime_rig import interbotix_joint_state

        if arm == 'left':
            self.arrivals.append(time.monotonic())
        if self.follow:  # 6 joints (rad) and the gripper's motor angle
            pose = np.append(msg.position[:6], robot.motor_to_normalized(msg.position[6]))
            self._states[robot.ARMS.index(arm)].publish(interbotix_joint_state(pose))

    def _on_diagnostics(self, msg: object) -> None:
        for status in msg.status:
            if status.name == '/chunk_executor':
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                # When the executor took these counts (its wall clock), as the rate's time base.
                self.diagnostics['stamp'] = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            self.executor.spin_once(timeout_sec=0.01)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def start_commanding(self) -> None:
        """Publish the measured pose until the executor sends its first command."""
        from tests.runtime_rig import interbotix_joint_state

        def pose_sent_and_commanded() -> bool:
            for arm, publisher in zip(robot.ARMS, self._states, strict=True):
                publisher.publish(interbotix_joint_state(POSE[robot.arm_columns(arm)]))
            return bool(self.arrivals)

        if not self.spin_until(pose_sent_and_commanded, timeout=30.0):
            raise RuntimeError('the chunk_executor never commanded; is the workspace built?')

    def publish_chunk(
        self, stamp: float, prefix: np.ndarray | None = None, prefix_of: int = 0
    ) -> int:
        """A K-row chunk predicted from an observation at `stamp` (wall clock, s), its first
        rows `prefix` given from chunk `prefix_of`; returns its id."""
        from oft_policy_node.ros_conversions import action_chunk_msg, seconds_to_stamp

        rows = trajectory(stamp + PERIOD * np.arange(robot.CHUNK_SIZE))  # (K, D)
        given = 0 if prefix is None else len(prefix)
        if given:
            rows[:given] = prefix
        self._chunk_id += 1
        self.chunks.publish(
            action_chunk_msg(
                seconds_to_stamp(stamp),
                rows,
                self._chunk_id,
                'bench',
                PERIOD,
                self.now() - stamp,
                prefix_steps=given,
                prefix_chunk_id=prefix_of,
            )
        )
        return self._chunk_id

    def counters(self) -> dict[str, float]:
        """The executor's newest diagnostics, numbers only (waits for a fresh message), with
        `stamp`: the executor's wall-clock time of the counts."""
        self.diagnostics.clear()
        if not self.spin_until(lambda: bool(self.diagnostics), timeout=5.0):
            raise RuntimeError('no /diagnostics from the chunk_executor')
        return {k: float(v) for k, v in self.diagnostics.items() if _is_number(v)}

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def _is_number(text: str | float) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
