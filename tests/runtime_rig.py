"""A test rig around the chunk_executor over real DDS: it owns /clock (so every tick happens
at a time the test chooses), publishes the arms' joint states and action chunks, records the
executor's commands and /diagnostics, and calls ~/stop and ~/resume. By default it is a
perfect arm: after every tick it reports the command it received as the measured pose."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from oft_policy_node import robot
from tests.ros_fixtures import spin_until

PERIOD = 1.0 / robot.CONTROL_RATE_HZ
PERIOD_NS = 40_000_000
T0_NS = 100_000_000_000  # the rig's clock starts at 100 s, a whole number of periods


def chunk_message(
    stamp: float,
    actions: np.ndarray,
    chunk_id: int = 1,
    joint_names: list[str] | None = None,
    period: float = PERIOD,
    num_steps: int | None = None,
) -> object:
    """An ActionChunk of `actions` predicted from an observation at `stamp` (s)."""
    from oft_policy_node.ros_conversions import action_chunk_msg, seconds_to_stamp

    return action_chunk_msg(
        seconds_to_stamp(stamp), actions, chunk_id, 'test', period, 0.1, joint_names, num_steps
    )


def interbotix_joint_state(arm_pose: np.ndarray) -> object:
    """sensor_msgs/JointState in the vx300s driver layout for a (7,) arm pose."""
    from sensor_msgs.msg import JointState

    finger = float(robot.normalized_to_finger(arm_pose[6]))
    return JointState(
        name=list(robot.INTERBOTIX_JOINT_STATE_ORDER),
        position=[
            *map(float, arm_pose[:6]),
            float(robot.normalized_to_motor(arm_pose[6])),
            finger,
            -finger,
        ],
    )


def diagnostic_level(status: object) -> str:
    """OK, WARN, ERROR or STALE of a DiagnosticStatus (its level is one byte)."""
    level = status.level[0] if isinstance(status.level, bytes) else status.level
    return {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}[int(level)]


def record_executor_diagnostics(node: object) -> list[dict[str, str]]:
    """Subscribe `node` to /diagnostics; the list fills with the chunk_executor's reports, each
    its values plus `message` and `level`."""
    from diagnostic_msgs.msg import DiagnosticArray

    reports: list[dict[str, str]] = []
    node.create_subscription(
        DiagnosticArray,
        '/diagnostics',
        lambda msg: reports.extend(
            {kv.key: kv.value for kv in s.values}
            | {'message': s.message, 'level': diagnostic_level(s)}
            for s in msg.status
            if s.name == '/chunk_executor'
        ),
        10,
    )
    return reports


class ExecutorRig:
    def __init__(
        self, context: object, executor_node: object | None = None, follow: bool = True
    ) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import JointState

        from oft_msgs.msg import ActionChunk

        self.node = Node('executor_rig', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor_node = executor_node
        self.follow = follow
        if executor_node is not None:
            self.executor.add_node(executor_node)
        self.now_ns = T0_NS
        self._clock = self.node.create_publisher(Clock, '/clock', 10)
        self._chunks = self.node.create_publisher(ActionChunk, robot.ACTION_CHUNK_TOPIC, 10)
        self._joint_states = {
            arm: self.node.create_publisher(JointState, robot.joint_states_topic(arm), 10)
            for arm in robot.ARMS
        }
        self.commands: dict[str, list[tuple[float, np.ndarray]]] = {a: [] for a in robot.ARMS}
        for arm in robot.ARMS:
            self.node.create_subscription(
                JointState,
                robot.joint_positions_topic(arm),
                lambda msg, arm=arm: self.commands[arm].append(
                    (
                        msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                        np.array(msg.position),
                    )
                ),
                100,
            )
        self.diagnostics = record_executor_diagnostics(self.node)

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
        assert self.spin_until(
            lambda: all(p.get_subscription_count() for p in publishers), timeout=20.0
        ), 'the executor never subscribed'

    def publish_pose(self, pose: np.ndarray) -> None:
        """Both arms' measured (D,) pose as Interbotix joint states."""
        for arm in robot.ARMS:
            self._joint_states[arm].publish(interbotix_joint_state(pose[robot.arm_columns(arm)]))

    def publish_chunk(self, msg: object, accepted: bool | None = True) -> None:
        """Publish a chunk and, for an in-process executor, wait until it was handled."""
        core = self.executor_node._core if self.executor_node is not None else None
        before = (
            None
            if core is None
            else core.accepted_chunks + core.rejected_chunks + core.ignored_chunks
        )
        self._chunks.publish(msg)
        if core is not None:
            assert self.spin_until(
                lambda: core.accepted_chunks + core.rejected_chunks + core.ignored_chunks > before
            ), 'chunk never arrived'

    def tick(self) -> np.ndarray:
        """Advance the clock one period; return the (D,) command of that tick (policy units:
        gripper as normalised opening)."""
        self.now_ns += PERIOD_NS
        self.publish_clock()
        got = self.spin_until(
            lambda: all(
                cmds and cmds[-1][0] >= self.now - 1e-6 for cmds in self.commands.values()
            ),
            timeout=10.0,
        )
        assert got, f'no command for t={self.now}'
        command = self.last_command()
        if self.follow:
            self.publish_pose(command)
        return command

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


# A pose well inside the limits, (D,): per arm 6 joints (rad) and the gripper opening.
POSE = np.array([0.1, -0.2, 0.3, 0.05, -0.1, 0.2, 0.5, -0.1, 0.25, -0.3, 0.0, 0.15, -0.2, 0.4])


def ramp(offset: float, k: int = robot.CHUNK_SIZE) -> np.ndarray:
    """A chunk (K, D) that starts at POSE + offset and moves 0.004 per row: every row differs,
    and no step comes near the per-tick limit, so the expected command is the target itself."""
    rows = POSE + offset + 0.004 * np.arange(k)[:, None]
    return rows.astype(np.float32).astype(np.float64)  # what survives the float32 message


def make_rig(rclpy_context, **params) -> ExecutorRig:
    from rclpy.parameter import Parameter

    from oft_policy_node.chunk_executor import ChunkExecutor

    # No start ramp unless asked for: these tests check targets exactly.
    params = {'start_ramp_duration': 0.0, **params}
    overrides = [
        Parameter('use_sim_time', value=True),
        Parameter('diagnostics_period', value=0.2),
        *(Parameter(name, value=value) for name, value in params.items()),
    ]
    node = ChunkExecutor(context=rclpy_context, parameter_overrides=overrides)
    rig = ExecutorRig(rclpy_context, node)
    rig.wait_for_subscribers()
    rig.publish_clock()
    rig.publish_pose(POSE)
    assert rig.spin_until(lambda: node._core.has_measured_pose), 'joint states never arrived'
    return rig


@pytest.fixture
def rig_factory(rclpy_context):
    rigs: list[ExecutorRig] = []

    def factory(**params) -> ExecutorRig:
        rigs.append(make_rig(rclpy_context, **params))
        return rigs[-1]

    yield factory
    for rig in rigs:
        rig.close()
