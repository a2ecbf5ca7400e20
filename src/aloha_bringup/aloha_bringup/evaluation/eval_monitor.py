"""eval_sim's node: it drives the simulation's resets and the policy's instruction, and records
one episode at a time (executor commands, chunks, diagnostics, success, ground-truth states and
a video of the cameras)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from aloha_bringup.evaluation.closed_loop_metrics import StateSample
from aloha_bringup.evaluation.demo_report import CameraVideo, ExecutorCounters
from oft_policy_node import robot
from oft_policy_node.service_calls import call_until_answered

SIM = 'aloha_sim'
SERVICE_TIMEOUT_S = 10.0


class EvalMonitor:
    """The evaluator's node: drives resets and instructions, records one episode at a time."""

    def __init__(self, context: object) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import SetParameters
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger

        from oft_msgs.msg import ActionChunk
        from oft_msgs.srv import SetInstruction

        self.node = Node(
            'eval_sim',
            context=context,
            parameter_overrides=[Parameter('use_sim_time', value=True)],
        )
        n = self.node
        self.latest_chunk: tuple[float, str] | None = None  # (observation stamp s, instruction)
        self._begin(None)
        for cam in robot.CAMERAS:
            n.create_subscription(
                Image,
                robot.camera_topic(cam),
                lambda m, c=cam: self._on_image(c, m),
                qos_profile_sensor_data,
            )
        n.create_subscription(
            JointState, robot.joint_positions_topic(robot.ARMS[-1]), self._on_command, 10
        )
        n.create_subscription(ActionChunk, robot.ACTION_CHUNK_TOPIC, self._on_chunk, 10)
        n.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        n.create_subscription(Bool, robot.TASK_SUCCESS_TOPIC, self._on_success, 10)
        n.create_subscription(String, robot.TASK_STATE_TOPIC, self._on_state, 50)
        self._set_parameters = n.create_client(SetParameters, f'/{SIM}/set_parameters')
        self._reset = n.create_client(Trigger, f'/{SIM}/reset')
        self._set_instruction = n.create_client(SetInstruction, robot.SET_INSTRUCTION_SERVICE)
        self._types = {
            'parameter': Parameter,
            'parameters': SetParameters,
            'trigger': Trigger,
            'instruction': SetInstruction,
        }

    def _begin(self, video: CameraVideo | None) -> None:
        """Forget the previous episode; record from the next executor command on."""
        self.armed = video is not None
        self.video = video
        self.window_start: float | None = None
        self.window_end: float | None = None
        self.wall_start = 0.0
        self.success_time: float | None = None
        self.latencies: list[float] = []
        self.chunk_instructions: set[str] = set()
        self.states: list[StateSample] = []
        self.counters = ExecutorCounters()

    def begin_episode(self, video: CameraVideo) -> None:
        self._begin(video)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def recording(self) -> bool:
        return self.window_start is not None and self.window_end is None

    def window_states(self) -> list[StateSample]:
        """The states stamped inside the episode window. Arrival alone is not enough: /clock and
        the task state travel on separate topics, so a busy monitor can still be receiving
        states stamped after the window closed (or before it opened) while its clock lags."""
        length = self.window_end - self.window_start
        return [s for s in self.states if 0.0 <= s.t <= length]

    def _on_command(self, msg: object) -> None:
        if self.armed and self.window_start is None:
            self.window_start, self.wall_start = self.now(), time.monotonic()

    def _on_image(self, camera: str, msg: object) -> None:
        if self.recording() and msg.encoding == 'rgb8':
            image = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
            self.video.add_image(camera, self.now(), image)

    def _on_chunk(self, msg: object) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.latest_chunk = (stamp, msg.instruction)
        if self.recording():
            self.latencies.append(round(float(msg.inference_latency), 4))
            self.chunk_instructions.add(msg.instruction)

    def _on_diagnostics(self, msg: object) -> None:
        for status in msg.status:
            self.counters.add(self.now(), status.name, {kv.key: kv.value for kv in status.values})

    def _on_success(self, msg: object) -> None:
        if self.recording() and msg.data and self.success_time is None:
            self.success_time = self.now()

    def _on_state(self, msg: object) -> None:
        if self.window_start is not None:  # past the window's end too: window_states cuts
            state = json.loads(msg.data)  # t on the sim clock: made relative to the episode
            self.states.append(
                StateSample(
                    round(state['t'] - self.window_start, 4), state['grasp'], state['objects']
                )
            )

    # ---- services ------------------------------------------------------------------------
    def _call(self, client: object, request: object, spin: Callable[[float], None]) -> object:
        if not client.wait_for_service(timeout_sec=SERVICE_TIMEOUT_S):
            raise RuntimeError(f'service {client.srv_name} is not available')

        def spin_until(done: Callable[[], bool], timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while not done() and time.monotonic() < deadline:
                spin(0.05)
            return done()

        try:
            return call_until_answered(client, lambda: client.call_async(request), spin_until)
        except TimeoutError as error:
            raise RuntimeError(str(error)) from None

    def services_ready(self) -> bool:
        return all(
            client.service_is_ready()
            for client in (self._set_parameters, self._reset, self._set_instruction)
        )

    def reset_sim(self, seed: int, instruction: str, spin: Callable[[float], None]) -> dict:
        """Set the sim's seed and instruction, reset it; the episode JSON it answers with."""
        parameter = self._types['parameter']
        request = self._types['parameters'].Request(
            parameters=[
                parameter('seed', value=seed).to_parameter_msg(),
                parameter('instruction', value=instruction).to_parameter_msg(),
            ]
        )
        for result in self._call(self._set_parameters, request, spin).results:
            if not result.successful:
                raise RuntimeError(
                    f'aloha_sim refused seed={seed}, instruction={instruction!r}: {result.reason}'
                )
        response = self._call(self._reset, self._types['trigger'].Request(), spin)
        if not response.success:
            raise RuntimeError(f'aloha_sim reset failed: {response.message}')
        return json.loads(response.message)

    def set_policy_instruction(self, instruction: str, spin: Callable[[float], None]) -> None:
        request = self._types['instruction'].Request(instruction=instruction)
        response = self._call(self._set_instruction, request, spin)
        if not response.success:
            raise RuntimeError(f'policy_node refused {instruction!r}: {response.message}')
