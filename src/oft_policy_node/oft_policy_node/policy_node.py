"""policy_node: runs the OFT+ policy on the newest synchronised observation, publishes chunks.

Cameras (sensor_msgs/Image rgb8/bgr8, or with image_transport compressed the JPEG/PNG
sensor_msgs/CompressedImage on <topic>/compressed) and both arms' joint states (Interbotix
vx300s layout, mapped by joint name) fill an observation buffer; an inference thread of its
own takes the newest complete set (stamps within sync_tolerance, not older than
max_observation_age) whenever one newer than the last exists, and publishes one
oft_msgs/ActionChunk per inference, stamped with the observation time. Callbacks never wait
for the model. /set_instruction switches the instruction atomically between chunks; the active
one is latched on /policy/instruction.
The model (torch) is imported only here, when the node starts, never by the executor.

Real-time chunking (a checkpoint trained with --prefix-steps, the executor on merge_rule
prefix): the node reads the chunk the executor plays (/chunk_executor/committed), gives each
new chunk the rows that will be played while it thinks (its measured latency in rows) and
starts each inference while the played chunk still has those rows plus a slack left
(runtime/action_prefix.py). `min_chunk_latency` holds each chunk until its observation is that
old on the node clock: a fast machine (or a slow one in sim time) then acts like a policy of
that latency, e.g. the paper's 0.32 s.

Run:
    ros2 run oft_policy_node policy_node --ros-args -p checkpoint:=/path/to/ckpt
    (optionally -p instruction:="put green pepper into pot" -p device:=cuda)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from oft_msgs.msg import ActionChunk, CommittedChunk
from oft_msgs.srv import SetInstruction
from oft_policy_node import robot
from oft_policy_node.node_parameters import ParameterSpec, declare_all, one_of, positive
from oft_policy_node.node_runner import run_node
from oft_policy_node.qos import LATCHED
from oft_policy_node.ros_conversions import (
    action_chunk_msg,
    ns_to_stamp,
    played_chunk,
    stamp_to_ns,
)
from oft_policy_node.runtime.action_prefix import PlayedChunk, PrefixPlanner
from oft_policy_node.runtime.instructions import validate_instruction
from oft_policy_node.runtime.observation_buffer import Observation, ObservationBuffer
from oft_policy_node.runtime.sensor_decoding import (
    arm_state_from_joint_state,
    decode_compressed_image,
    decode_image,
)


def _count(n: int) -> Any:
    return lambda v: None if len(v) == n else f'must list exactly {n} entries'


PARAMETERS = (
    ParameterSpec(
        'checkpoint',
        '',
        'Checkpoint directory (OftPolicy.save_pretrained / training output), or a run folder of '
        "the authors' finetune.py (imported on the fly). Required.",
        lambda v: None if v else 'is required: pass -p checkpoint:=/path/to/ckpt',
    ),
    ParameterSpec(
        'device',
        'cpu',
        'Torch device for the model, e.g. "cpu", "cuda", "cuda:1".',
        lambda v: None if v else 'must name a torch device',
    ),
    ParameterSpec(
        'quantization',
        'none',
        'Weight-only quantization of the Llama for inference: "none", "int8" (CPU and CUDA) or '
        '"int4" (CUDA), for GPUs that cannot hold the 7B model in bf16 with room to spare.',
        one_of('none', 'int8', 'int4'),
    ),
    ParameterSpec(
        'instruction', '', 'Initial instruction; empty = the first instruction of the checkpoint.'
    ),
    ParameterSpec(
        'allow_unknown_instructions',
        False,
        'Accept instructions the checkpoint was not trained on (/set_instruction and '
        'the initial one); they are flagged seen_in_training=false.',
    ),
    ParameterSpec(
        'camera_topics',
        [robot.camera_topic(c) for c in robot.CAMERAS],
        f'Image topics in the model camera order {list(robot.CAMERAS)}.',
        _count(len(robot.CAMERAS)),
    ),
    ParameterSpec(
        'image_transport',
        'raw',
        'How the cameras arrive: "raw" (sensor_msgs/Image on each camera topic) or '
        '"compressed" (sensor_msgs/CompressedImage, JPEG or PNG, on <camera topic>/compressed, '
        "as image_transport's compressed plugin publishes; for a policy host across a network).",
        one_of(*robot.IMAGE_TRANSPORTS),
    ),
    ParameterSpec(
        'gripper_finger_range',
        [robot.ALOHA2_GRIPPER.finger_closed, robot.ALOHA2_GRIPPER.finger_open],
        'The observed finger position (m, joint left_finger) of a closed and an open gripper; '
        "the policy sees 0..1 between them (the robot profile's, aloha2 by default).",
        _count(2),
    ),
    ParameterSpec(
        'joint_state_topics',
        [robot.joint_states_topic(a) for a in robot.ARMS],
        f'Interbotix joint_states topics of the arms {list(robot.ARMS)}, in that order.',
        _count(len(robot.ARMS)),
    ),
    ParameterSpec(
        'image_size',
        [robot.IMAGE_HEIGHT, robot.IMAGE_WIDTH],
        'Expected [height, width] of every camera image; other sizes are rejected.',
        lambda v: None if len(v) == 2 and min(v) > 0 else 'must be [height > 0, width > 0]',
    ),
    ParameterSpec(
        'sync_tolerance',
        0.05,
        'Seconds the stamps of one observation set (3 images, 2 joint states) may spread.',
        lambda v: None if v >= 0.0 else 'must be >= 0',
    ),
    ParameterSpec(
        'max_observation_age',
        0.5,
        'Seconds after which an observation set is too old to act on.',
        positive,
    ),
    ParameterSpec(
        'action_period',
        1.0 / robot.CONTROL_RATE_HZ,
        'Seconds between the rows of a predicted chunk (the control period the '
        'policy was trained at).',
        positive,
    ),
    ParameterSpec(
        'prefix_slack_rows',
        2,
        'Real-time chunking: rows of the played chunk left unplayed as the margin for a chunk '
        'later than its latency said; the next inference starts when the chunk has its '
        'latency in rows plus these left.',
        lambda v: None if v >= 0 else 'must be >= 0',
    ),
    ParameterSpec(
        'prefix_margin_rows',
        1,
        'Real-time chunking: rows given beyond the measured latency (its p90, in rows), so '
        'few chunks come after the row the executor switches at.',
        lambda v: None if v >= 0 else 'must be >= 0',
    ),
    ParameterSpec(
        'min_chunk_latency',
        0.0,
        'Seconds after its observation (node clock: sim time in simulation) before a chunk is '
        "published: evaluates a slower policy, e.g. 0.32 for the paper's A100 latency. 0: "
        'as soon as it is computed.',
        lambda v: None if v >= 0.0 else 'must be >= 0',
    ),
    ParameterSpec('diagnostics_period', 1.0, 'Seconds between /diagnostics messages.', positive),
)


class PolicyNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__('policy_node', **kwargs)
        # Before anything can fail: rclpy destroys a node whose construction raised too.
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        params = declare_all(self, PARAMETERS)
        from oft_policy_node.model import OftPolicy  # torch: only in this node, at start-up
        from oft_policy_node.model.devices import resolve_device

        device = resolve_device(params['device'])  # one clear line, before any model is built
        self.get_logger().info(f'loading {params["checkpoint"]} on {device}')
        self._policy = OftPolicy.from_pretrained(params['checkpoint'], device=device)
        if params['quantization'] != 'none':
            count = self._policy.quantize(params['quantization'])
            self.get_logger().info(f'{params["quantization"]}: {count} Llama linear layers')
        cameras = tuple(self._policy.config.camera_names)
        if len(cameras) != len(params['camera_topics']):
            raise ValueError(
                f'the checkpoint uses cameras {cameras} but camera_topics lists '
                f'{len(params["camera_topics"])} topics'
            )
        # A checkpoint that lists no training instructions (one imported from openvla-oft
        # without --instruction) cannot tell known from unknown: it takes any, given one.
        known = self._policy.instructions
        self._allow_unknown = params['allow_unknown_instructions'] or not known
        if not (params['instruction'] or known):
            raise ValueError(
                f'{params["checkpoint"]} lists no training instructions: pass the task, '
                'e.g. -p instruction:="put green pepper into pot" (task:= in the launch file)'
            )
        self._instruction = validate_instruction(
            params['instruction'] or known[0], known, self._allow_unknown
        )
        self._image_size = tuple(params['image_size'])
        self._gripper = robot.ALOHA2_GRIPPER.with_finger_range(*params['gripper_finger_range'])
        self._period = params['action_period']
        self._min_latency = params['min_chunk_latency']
        self._planner = PrefixPlanner(
            self._policy.config.prefix_steps,
            self._period,
            params['prefix_slack_rows'],
            params['prefix_margin_rows'],
        )
        self._played: PlayedChunk | None = None  # the executor's newest CommittedChunk
        self._buffer = ObservationBuffer(
            cameras, params['sync_tolerance'], params['max_observation_age']
        )
        self._lock = threading.Lock()  # guards the instruction and the counters
        self._counts = dict.fromkeys(
            (
                'images',
                'rejected_images',
                'joint_states',
                'rejected_joint_states',
                'chunks',
                'inference_errors',
                'last_given_rows',
            ),
            0,
        )
        self._latency = float('nan')
        self._new_data = threading.Event()

        self._chunks = self.create_publisher(ActionChunk, robot.ACTION_CHUNK_TOPIC, 10)
        self._instruction_pub = self.create_publisher(String, robot.INSTRUCTION_TOPIC, LATCHED)
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        compressed = params['image_transport'] == 'compressed'
        on_image = self._on_compressed_image if compressed else self._on_image
        for camera, base in zip(cameras, params['camera_topics'], strict=True):
            topic = robot.image_topic(base, params['image_transport'])
            self.create_subscription(
                CompressedImage if compressed else Image,
                topic,
                lambda msg, c=camera, t=topic: on_image(c, t, msg),
                qos_profile_sensor_data,
            )
        for arm, topic in zip(robot.ARMS, params['joint_state_topics'], strict=True):
            self.create_subscription(
                JointState,
                topic,
                lambda msg, a=arm, t=topic: self._on_joint_state(a, t, msg),
                qos_profile_sensor_data,
            )
        self.create_subscription(
            CommittedChunk, robot.COMMITTED_CHUNK_TOPIC, self._on_committed, 10
        )
        self.create_service(SetInstruction, robot.SET_INSTRUCTION_SERVICE, self._on_set)
        self.create_timer(params['diagnostics_period'], self._publish_diagnostics)
        self._instruction_pub.publish(String(data=self._instruction))
        self._worker = threading.Thread(target=self._inference_loop, name='inference', daemon=True)
        self._worker.start()
        self.get_logger().info(f'following {self._instruction!r}; waiting for observations')

    # ---- inputs (executor threads; never wait for the model) --------------------------------
    def _on_input(
        self,
        kind: str,
        topic: str,
        msg: Image | JointState,
        decode: Callable[[], np.ndarray],
        add: Callable[[int, np.ndarray], None],
    ) -> None:
        """Decode a sensor message into the buffer, or count and log why it was rejected."""
        try:
            value = decode()
        except ValueError as error:
            with self._lock:
                self._counts[f'rejected_{kind}'] += 1
            self.get_logger().error(f'{topic}: rejected: {error}', throttle_duration_sec=2.0)
            return
        add(stamp_to_ns(msg.header.stamp), value)
        with self._lock:
            self._counts[kind] += 1
        self._new_data.set()

    def _on_image(self, camera: str, topic: str, msg: Image) -> None:
        self._on_input(
            'images',
            topic,
            msg,
            lambda: decode_image(
                msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data), self._image_size
            ),  # (H, W, 3)
            lambda stamp, image: self._buffer.add_image(camera, stamp, image),
        )

    def _on_compressed_image(self, camera: str, topic: str, msg: CompressedImage) -> None:
        self._on_input(
            'images',
            topic,
            msg,
            lambda: decode_compressed_image(msg.format, bytes(msg.data), self._image_size),
            lambda stamp, image: self._buffer.add_image(camera, stamp, image),
        )

    def _on_joint_state(self, arm: str, topic: str, msg: JointState) -> None:
        self._on_input(
            'joint_states',
            topic,
            msg,
            lambda: arm_state_from_joint_state(msg.name, msg.position, self._gripper),  # (7,)
            lambda stamp, state: self._buffer.add_arm_state(arm, stamp, state),
        )

    def _on_committed(self, msg: CommittedChunk) -> None:
        try:
            played = played_chunk(msg, self._now() * 1e-9)
        except ValueError as error:
            self.get_logger().error(
                f'{robot.COMMITTED_CHUNK_TOPIC}: {error}: ignored', throttle_duration_sec=2.0
            )
            return
        with self._lock:
            self._played = played
        if not self._policy.config.prefix_steps:
            self.get_logger().warning(
                'the executor splices chunks (merge_rule prefix) but this policy was trained '
                'without an action prefix (train --prefix-steps): each chunk takes over only '
                'when the played one has run out, rows late; use merge_rule sync',
                once=True,
            )

    def _on_set(
        self, request: SetInstruction.Request, response: SetInstruction.Response
    ) -> SetInstruction.Response:
        try:
            instruction = validate_instruction(
                request.instruction, self._policy.instructions, self._allow_unknown
            )
        except ValueError as error:
            response.success, response.message = False, str(error)
        else:
            with self._lock:
                self._instruction = instruction
            self._instruction_pub.publish(String(data=instruction))
            response.success, response.message = True, f'now following {instruction!r}'
            self.get_logger().info(response.message)
        with self._lock:
            response.active_instruction = self._instruction
        response.seen_in_training = response.active_instruction in self._policy.instructions
        return response

    # ---- inference thread -------------------------------------------------------------------
    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    def _inference_loop(self) -> None:
        last_stamp = -1
        chunk_id, published_at = 0, -float('inf')
        while not self._stopping.is_set():
            self._new_data.wait(timeout=0.1)
            self._new_data.clear()
            now = self._now()
            with self._lock:
                played = self._played
            if not self._planner.ready(played, now * 1e-9, chunk_id, published_at):
                continue  # the played chunk has rows enough left: observe later
            observation = self._buffer.latest(now)
            if observation is None or observation.stamp <= last_stamp:
                continue
            last_stamp = observation.stamp
            prefix, prefix_of = self._planner.prefix(played, observation.stamp * 1e-9, now * 1e-9)
            with self._lock:
                instruction = self._instruction  # one instruction per chunk: switch is atomic
            try:
                actions = self._policy.predict_action_chunk(
                    observation.images, observation.proprio, instruction, prefix=prefix
                )  # (K, D)
            except (ValueError, RuntimeError) as error:
                with self._lock:
                    self._counts['inference_errors'] += 1
                self.get_logger().error(f'inference failed: {error}', throttle_duration_sec=2.0)
                continue
            chunk_id += 1
            given = 0 if prefix is None else len(prefix)
            self._hold_until(observation.stamp + round(self._min_latency * 1e9))
            self._publish_chunk(chunk_id, observation, instruction, actions, given, prefix_of)
            published_at = self._now() * 1e-9
            self._planner.latency.add(self._latency)

    def _hold_until(self, stamp_ns: int) -> None:
        """Wait (polling: the node clock may be /clock) until the node clock reaches stamp_ns."""
        while self._now() < stamp_ns and not self._stopping.is_set():
            self._stopping.wait(0.002)

    def _publish_chunk(
        self,
        chunk_id: int,
        observation: Observation,
        instruction: str,
        actions: np.ndarray,
        given: int,
        prefix_of: int,
    ) -> None:
        self._latency = max(self._now() - observation.stamp, 0) * 1e-9
        msg = action_chunk_msg(
            ns_to_stamp(observation.stamp),
            actions,
            chunk_id,
            instruction,
            self._period,
            self._latency,
            prefix_steps=given,
            prefix_chunk_id=prefix_of,
        )
        try:
            self._chunks.publish(msg)
        except Exception:
            # destroy_node() waits only so long for this thread (a large model on a CPU takes
            # longer per chunk), then destroys the publisher: a chunk finished after that has
            # nowhere to go. Any other publish failure is a real error.
            if not self._stopping.is_set():
                raise
            return
        with self._lock:
            self._counts['chunks'] += 1
            self._counts['last_given_rows'] = given

    def _publish_diagnostics(self) -> None:
        with self._lock:
            values = {
                **self._counts,
                'instruction': self._instruction,
                'inference_latency_s': f'{self._latency:.4f}',
                'prefix_steps_max': self._policy.config.prefix_steps,
            }
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=self.get_fully_qualified_name(),
            hardware_id='aloha',
            message='running',
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def destroy_node(self) -> None:
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node('policy_node', __doc__, PARAMETERS, PolicyNode, argv)


if __name__ == '__main__':
    raise SystemExit(main())
