"""policy_node as its own process with a `tiny` checkpoint, fed by test publishers of the three
cameras and both arms' joint states over real DDS: it publishes chunks stamped with the
observation time, rejects every bad /set_instruction with a reason, latches the active
instruction, and rejects and counts malformed images and joint states without dying."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oft_policy_node import robot
from tests.ros_fixtures import ProcessGroup, call_service, spin_until
from tests.runtime_rig import interbotix_joint_state

HEIGHT, WIDTH = 48, 64  # small images keep the test light; the node checks this size
INSTRUCTIONS = ('put green pepper into pot', 'put red pepper into pot')


class Feeder:
    """The test's node: camera and joint-state publishers, chunk/diagnostics/instruction
    subscribers, a SetInstruction client."""

    def __init__(self, context: object) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import Image, JointState

        from oft_msgs.msg import ActionChunk
        from oft_msgs.srv import SetInstruction

        self.node = Node('policy_feeder', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.cameras = {
            c: self.node.create_publisher(Image, robot.camera_topic(c), 10) for c in robot.CAMERAS
        }
        self.arms = {
            a: self.node.create_publisher(JointState, robot.joint_states_topic(a), 10)
            for a in robot.ARMS
        }
        self.chunks: list[ActionChunk] = []
        self.node.create_subscription(
            ActionChunk, robot.ACTION_CHUNK_TOPIC, self.chunks.append, 10
        )
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(
            DiagnosticArray,
            '/diagnostics',
            lambda m: self.diagnostics.extend(
                {kv.key: kv.value for kv in s.values} for s in m.status if s.name == '/policy_node'
            ),
            10,
        )
        self.client = self.node.create_client(SetInstruction, robot.SET_INSTRUCTION_SERVICE)
        self.stamps: list[tuple[int, int]] = []

    def spin_until(self, predicate, timeout: float = 15.0) -> bool:
        return spin_until(self.executor, predicate, timeout)

    def image(
        self, encoding: str = 'rgb8', height: int = HEIGHT, width: int = WIDTH, truncate: int = 0
    ) -> object:
        from sensor_msgs.msg import Image

        channels = 1 if encoding == 'mono8' else 3
        data = np.random.default_rng(0).integers(0, 255, (height, width, channels), np.uint8)
        return Image(
            encoding=encoding,
            height=height,
            width=width,
            step=width * channels,
            data=data.tobytes()[: height * width * channels - truncate],
        )

    def publish_set(
        self, image: object | None = None, joint_state: object | None = None
    ) -> tuple[int, int]:
        """One observation set, all stamped now; returns the stamp (sec, nanosec)."""
        stamp = self.node.get_clock().now().to_msg()
        pose = np.array([0.1, -0.3, 0.4, 0.0, 0.2, 0.0, 0.6])
        for publisher in self.cameras.values():
            msg = image or self.image()
            msg.header.stamp = stamp
            publisher.publish(msg)
        for publisher in self.arms.values():
            msg = joint_state or interbotix_joint_state(pose)
            msg.header.stamp = stamp
            publisher.publish(msg)
        self.stamps.append((stamp.sec, stamp.nanosec))
        return self.stamps[-1]

    def feed_until(self, predicate, timeout: float = 20.0, **bad) -> bool:
        """Publish observation sets at ~10 Hz until `predicate()`."""

        def step() -> bool:
            self.publish_set(**bad)
            spin_until(self.executor, predicate, timeout=0.1)
            return predicate()

        return spin_until(self.executor, step, timeout)

    def set_instruction(self, text: str) -> object:
        from oft_msgs.srv import SetInstruction

        return call_service(self.executor, self.client, SetInstruction.Request(instruction=text))


def start_policy_node(directory: Path, checkpoint: Path, *params: str) -> tuple:
    """policy_node as its own process on `checkpoint` for this module's image size; `params`:
    more `name:=value` parameters. Returns (process, its ProcessGroup)."""
    group = ProcessGroup(directory)
    settings = [f'checkpoint:={checkpoint}', f'image_size:=[{HEIGHT},{WIDTH}]', *params]
    proc = group.python(
        '-m',
        'oft_policy_node.policy_node',
        '--ros-args',
        *(word for setting in settings for word in ('-p', setting)),
        name='policy_node',
    )
    return proc, group


@pytest.fixture(scope='module')
def policy_process(tmp_path_factory):
    """One policy_node process with a tiny checkpoint for the whole module (loading the model
    is the slow part)."""
    from oft_policy_node.model.testing import make_tiny_checkpoint

    directory = tmp_path_factory.mktemp('policy')
    checkpoint = make_tiny_checkpoint(directory / 'ckpt', instructions=INSTRUCTIONS)
    proc, group = start_policy_node(directory, checkpoint, 'diagnostics_period:=0.2')
    yield proc, group
    assert group.stop(proc) == 0, group.output(proc)  # clean shutdown on Ctrl-C


@pytest.fixture
def feeder(policy_process, rclpy_context):
    feeder = Feeder(rclpy_context)
    yield feeder
    assert policy_process[0].poll() is None, policy_process[1].output(policy_process[0])
    feeder.executor.shutdown()
    feeder.node.destroy_node()


def test_publishes_chunks_stamped_with_the_observation_time(feeder, policy_process):
    assert feeder.feed_until(lambda: len(feeder.chunks) >= 2, timeout=60.0), policy_process[
        1
    ].output(policy_process[0])
    for chunk in feeder.chunks:
        assert (chunk.header.stamp.sec, chunk.header.stamp.nanosec) in feeder.stamps
        assert list(chunk.joint_names) == robot.action_joint_names()
        assert chunk.num_steps == robot.CHUNK_SIZE and chunk.period == pytest.approx(0.04)
        actions = np.asarray(chunk.actions).reshape(chunk.num_steps, robot.ACTION_DIM)
        assert np.isfinite(actions).all()
        assert chunk.instruction in INSTRUCTIONS
        assert 0.0 < chunk.inference_latency < 30.0
    ids = [chunk.chunk_id for chunk in feeder.chunks]
    assert ids == sorted(set(ids)) and ids[0] >= 1
    stamps = [(c.header.stamp.sec, c.header.stamp.nanosec) for c in feeder.chunks]
    assert stamps == sorted(set(stamps))  # each chunk from a newer observation


@pytest.mark.parametrize(
    'text, reason',
    [
        ('', 'empty'),
        ('   ', 'empty'),
        ('x' * 257, '257 characters'),
        ('put red\x07 pepper into pot', 'non-printable'),
        ('juggle the pot', 'not seen in training'),
    ],
)
def test_set_instruction_rejects_with_a_reason(feeder, text, reason):
    before = feeder.set_instruction(INSTRUCTIONS[0])
    assert before.success and before.active_instruction == INSTRUCTIONS[0]
    response = feeder.set_instruction(text)
    assert not response.success
    assert reason in response.message
    assert response.active_instruction == INSTRUCTIONS[0]
    assert response.seen_in_training


def test_instruction_switch_is_latched_and_reaches_the_chunks(feeder, rclpy_context):
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from std_msgs.msg import String

    response = feeder.set_instruction(f'  {INSTRUCTIONS[1]} ')
    assert response.success and response.active_instruction == INSTRUCTIONS[1]
    latched: list[str] = []  # a late subscriber still gets the active instruction
    feeder.node.create_subscription(
        String,
        robot.INSTRUCTION_TOPIC,
        lambda m: latched.append(m.data),
        QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    assert feeder.spin_until(lambda: latched == [INSTRUCTIONS[1]])
    feeder.chunks.clear()
    assert feeder.feed_until(
        lambda: any(c.instruction == INSTRUCTIONS[1] for c in feeder.chunks), timeout=60.0
    )
    # Chunks computed after the switch never go back to the old instruction.
    switched = [c.instruction for c in feeder.chunks]
    assert INSTRUCTIONS[0] not in switched[switched.index(INSTRUCTIONS[1]) :]


@pytest.mark.parametrize(
    'bad, counter',
    [
        ({'image': 'mono8'}, 'rejected_images'),
        ({'image': 'wrong_size'}, 'rejected_images'),
        ({'image': 'truncated'}, 'rejected_images'),
        ({'joint_state': 'missing_joint'}, 'rejected_joint_states'),
        ({'joint_state': 'nan'}, 'rejected_joint_states'),
    ],
)
def test_malformed_inputs_are_rejected_and_counted(feeder, policy_process, bad, counter):
    from sensor_msgs.msg import JointState

    kind, what = next(iter(bad.items()))
    msg = {
        'mono8': lambda: feeder.image('mono8'),
        'wrong_size': lambda: feeder.image(height=HEIGHT + 2),
        'truncated': lambda: feeder.image(truncate=100),
        'missing_joint': lambda: JointState(name=['waist', 'gripper'], position=[0.0, 1.0]),
        'nan': lambda: JointState(
            name=list(robot.INTERBOTIX_JOINT_STATE_ORDER), position=[float('nan')] * 9
        ),
    }[what]()
    assert feeder.spin_until(lambda: bool(feeder.diagnostics))
    before = int(feeder.diagnostics[-1][counter])
    published_before = int(feeder.diagnostics[-1]['chunks'])
    assert feeder.feed_until(
        lambda: int(feeder.diagnostics[-1][counter]) >= before + 3, **{kind: msg}
    )
    # No complete observation can form from the bad stream: no new chunk while it lasts ...
    assert int(feeder.diagnostics[-1]['chunks']) <= published_before + 1
    # ... and the node is alive and serves good data again.
    feeder.chunks.clear()
    assert feeder.feed_until(lambda: bool(feeder.chunks), timeout=60.0), policy_process[1].output(
        policy_process[0]
    )


@pytest.mark.skipif(__import__('torch').backends.cuda.is_built(), reason='this torch has CUDA')
def test_a_device_that_is_not_there_is_one_line_and_a_clean_exit(tmp_path):
    """device:=cuda on a host without CUDA: one line saying so, exit status 2, no traceback
    (torch's assertion from the vision build, then the teardown's, before)."""
    group = ProcessGroup(tmp_path)
    proc = group.python(
        '-m',
        'oft_policy_node.policy_node',
        '--ros-args',
        '-p',
        f'checkpoint:={tmp_path}',
        '-p',
        'device:=cuda',
        name='policy_node',
    )
    assert proc.wait(timeout=120) == 2
    output = group.output(proc)
    assert "policy_node: device 'cuda': this torch (" in output, output
    assert 'Traceback' not in output, output
