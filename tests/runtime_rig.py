"""A test rig around the chunk_executor over real DDS: it owns /clock (so every tick happens
at a time the test chooses), publishes the arms' joint states and action chunks, records the
executor's commands and /diagnostics, and calls ~/stop and ~/resume."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from oft_policy_node import robot
from tests.ros_fixtures import spin_until

PERIOD = 1.0 / robot.CONTROL_RATE_HZ
PERIOD_NS = 40_000_000
T0_NS = 100_000_000_000  # the rig's clock starts at 100 s, a whole number of periods


def chunk_message(stamp: float, actions: np.ndarray, chunk_id: int = 1,
                  joint_names: list[str] | None = None, period: float = PERIOD,
                  num_steps: int | None = None) -> object:
    """An ActionChunk of `actions` predicted from an observation at `stamp` (s)."""
    from oft_policy_node.ros_conversions import action_chunk_msg, seconds_to_stamp

    return action_chunk_msg(seconds_to_stamp(stamp), actions, chunk_id, 'test', period, 0.1,
                            joint_names, num_steps)


def interbotix_joint_state(arm_pose: np.ndarray) -> object:
    """sensor_msgs/JointState in the vx300s driver layout for a (7,) arm pose."""
    from sensor_msgs.msg import JointState

    finger = float(robot.normalized_to_finger(arm_pose[6]))
    return JointState(name=list(robot.INTERBOTIX_JOINT_STATE_ORDER),
                      position=[*map(float, arm_pose[:6]),
                                float(robot.normalized_to_motor(arm_pose[6])), finger, -finger])


class ExecutorRig:
    def __init__(self, context: object, executor_node: object | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import JointState

        from oft_msgs.msg import ActionChunk

        self.node = Node('executor_rig', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor_node = executor_node
        if executor_node is not None:
            self.executor.add_node(executor_node)
        self.now_ns = T0_NS
        self._clock = self.node.create_publisher(Clock, '/clock', 10)
        self._chunks = self.node.create_publisher(ActionChunk, robot.ACTION_CHUNK_TOPIC, 10)
        self._joint_states = {arm: self.node.create_publisher(
            JointState, robot.joint_states_topic(arm), 10) for arm in robot.ARMS}
        self.commands: dict[str, list[tuple[float, np.ndarray]]] = {a: [] for a in robot.ARMS}
        for arm in robot.ARMS:
            self.node.create_subscription(
                JointState, robot.joint_positions_topic(arm),
                lambda msg, arm=arm: self.commands[arm].append(
                    (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                     np.array(msg.position))), 100)
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(
            DiagnosticArray, '/diagnostics',
            lambda msg: self.diagnostics.extend(
                {kv.key: kv.value for kv in s.values} | {'message': s.message}
                for s in msg.status if s.name == '/chunk_executor'), 10)

    @property
    def now(self) -> float:
        return self.now_ns * 1e-9

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        return spin_until(self.executor, predicate, timeout)

    def publish_clock(self) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(self.now_ns, 1_000_000_000)
        self._clock.publish(msg)

    def wait_for_subscribers(self) -> None:
        publishers = [self._clock, self._chunks, *self._joint_states.values()]
        assert self.spin_until(lambda: all(p.get_subscription_count() for p in publishers),
                               timeout=20.0), 'the executor never subscribed'

    def publish_pose(self, pose: np.ndarray) -> None:
        """Both arms' measured (D,) pose as Interbotix joint states."""
        for arm in robot.ARMS:
            self._joint_states[arm].publish(interbotix_joint_state(pose[robot.arm_columns(arm)]))

    def publish_chunk(self, msg: object, accepted: bool | None = True) -> None:
        """Publish a chunk and, for an in-process executor, wait until it was handled."""
        core = self.executor_node._core if self.executor_node is not None else None
        before = None if core is None else core.accepted_chunks + core.rejected_chunks \
            + core.ignored_chunks
        self._chunks.publish(msg)
        if core is not None:
            assert self.spin_until(lambda: core.accepted_chunks + core.rejected_chunks
                                   + core.ignored_chunks > before), 'chunk never arrived'

    def tick(self) -> np.ndarray:
        """Advance the clock one period; return the (D,) command of that tick (policy units:
        gripper as normalised opening)."""
        self.now_ns += PERIOD_NS
        self.publish_clock()
        got = self.spin_until(lambda: all(cmds and cmds[-1][0] >= self.now - 1e-6
                                          for cmds in self.commands.values()), timeout=10.0)
        assert got, f'no command for t={self.now}'
        return self.last_command()

    def last_command(self) -> np.ndarray:
        columns = []
        for arm in robot.ARMS:
            stamp, position = self.commands[arm][-1]
            assert abs(stamp - self.now) < 1e-6, (stamp, self.now)
            columns.append(np.append(position[:6], robot.motor_to_normalized(position[6])))
        return np.concatenate(columns)

    def call(self, service: str) -> object:
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, service)
        assert self.spin_until(client.service_is_ready, timeout=10.0), service
        future = client.call_async(Trigger.Request())
        assert self.spin_until(future.done, timeout=10.0), service
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        if self.executor_node is not None:
            self.executor_node.destroy_node()
