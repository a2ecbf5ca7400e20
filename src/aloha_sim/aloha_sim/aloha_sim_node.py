"""aloha_sim: the MuJoCo ALOHA behind the real robot's ROS 2 interface.

Publishes the three cameras (sensor_msgs/Image rgb8 on the realsense topics), per-arm
joint_states in the Interbotix layout, /clock (every node runs on sim time), and the task:
latched instruction + episode metadata, success, and the ground-truth state (grasp points and
object positions, JSON) that closed-loop evaluation measures language following with.
Consumes joint_positions commands (sensor_msgs/JointState: 6 arm joints + `gripper` motor
angle). `~/reset` (std_srvs/Trigger) starts a new episode with the `seed` and `instruction`
parameters.

Physics runs on its own thread, never faster than real time; subscriptions and the service are
served by the executor on the main thread.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import replace
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from aloha_sim.pacing import RealTimePacer, StreamSchedule, steps_until
from aloha_sim.physics import AlohaSim, Episode, command_from_named
from aloha_sim.scenes import SCENES, get_scene
from aloha_sim.tracking_noise import TrackingNoise
from oft_policy_node import robot
from oft_policy_node.node_parameters import (
    ParameterSpec,
    declare_all,
    fraction,
    non_negative,
    one_of,
    positive,
)
from oft_policy_node.node_runner import run_node
from oft_policy_node.qos import LATCHED

# Cameras and joint states like the drivers: reliable, a short queue.
SENSOR_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


def stamp(seconds: float) -> Time:
    sec, nanosec = divmod(round(seconds * 1e9), 1_000_000_000)
    return Time(sec=int(sec), nanosec=int(nanosec))


def episode_json(episode: Episode, start_time: float) -> str:
    return json.dumps(
        {
            'scene': episode.scene,
            'seed': episode.seed,
            'instruction': episode.instruction,
            'episode': episode.index,
            'start_time': start_time,
            'objects': {k: list(v) for k, v in episode.layout.positions.items()},
        }
    )


def _seed_in_range(value: int) -> str | None:
    return None if 0 <= value < 2**32 else 'must be in [0, 2**32)'


SCENE_PARAMETER = ParameterSpec(
    'scene', 'put_x_into_pot', f'Scene, one of {list(SCENES)}.', one_of(*SCENES)
)
# Declared once the scene is known: `instruction` is checked against that scene's instructions.
EPISODE_PARAMETERS = (
    ParameterSpec(
        'instruction',
        '',
        "Instruction of the next reset; empty = the scene's "
        "default; otherwise one of the scene's instructions.",
        read_only=False,
    ),
    ParameterSpec(
        'seed',
        0,
        'Seed of the next reset (object placements), in [0, 2**32).',
        _seed_in_range,
        read_only=False,
    ),
    ParameterSpec('image_height', robot.IMAGE_HEIGHT, 'Camera image height (px).', positive),
    ParameterSpec('image_width', robot.IMAGE_WIDTH, 'Camera image width (px).', positive),
    ParameterSpec('camera_rate_hz', 30.0, 'Camera frames per sim second.', positive),
    ParameterSpec('joint_state_rate_hz', 50.0, 'joint_states per sim second.', positive),
    ParameterSpec('clock_rate_hz', 100.0, '/clock messages per sim second.', positive),
    ParameterSpec('success_rate_hz', 10.0, '/task/success messages per sim second.', positive),
    ParameterSpec(
        'state_rate_hz',
        25.0,
        'Ground-truth /task/state messages (grasp points, object positions) per sim second.',
        positive,
    ),
    ParameterSpec(
        'max_real_time_factor', 1.0, 'Upper bound of sim time / wall time, in (0, 1].', fraction
    ),
    ParameterSpec(
        'tracking_noise_std',
        0.0,
        'Demo recording (DART): the arm joints track the '
        'command plus a drifting offset of this standard deviation (rad); 0 = exact '
        'tracking. See sim/tracking_noise.py.',
        non_negative,
    ),
    ParameterSpec('tracking_noise_time', 0.5, 'Correlation time (s) of that offset.', positive),
)


class AlohaSimNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__('aloha_sim', **kwargs)
        self.scene = get_scene(declare_all(self, (SCENE_PARAMETER,))['scene'])
        p = declare_all(
            self,
            [
                replace(spec, check=self._instruction_problem)
                if spec.name == 'instruction'
                else spec
                for spec in EPISODE_PARAMETERS
            ],
        )
        height, width = p['image_height'], p['image_width']
        rates = {
            'camera': p['camera_rate_hz'],
            'joints': p['joint_state_rate_hz'],
            'clock': p['clock_rate_hz'],
            'success': p['success_rate_hz'],
            'state': p['state_rate_hz'],
        }
        self.pacer = RealTimePacer(p['max_real_time_factor'])
        self.schedule = StreamSchedule(rates)
        noise = (
            TrackingNoise(p['tracking_noise_std'], p['tracking_noise_time'])
            if p['tracking_noise_std'] > 0.0
            else None
        )
        self.sim = AlohaSim(self.scene, height, width, noise)
        self.lock = threading.Lock()  # guards self.sim between physics thread and callbacks
        self.clock_offset = 0.0  # sim seconds of earlier episodes: /clock never goes back
        self.rejected_commands = 0

        self.clock_pub = self.create_publisher(Clock, robot.CLOCK_TOPIC, 10)
        self.image_pubs = {
            cam: self.create_publisher(Image, robot.camera_topic(cam), SENSOR_QOS)
            for cam in robot.CAMERAS
        }
        self.joint_pubs = {
            arm: self.create_publisher(JointState, robot.joint_states_topic(arm), SENSOR_QOS)
            for arm in robot.ARMS
        }
        self.success_pub = self.create_publisher(Bool, robot.TASK_SUCCESS_TOPIC, 10)
        self.instruction_pub = self.create_publisher(String, robot.TASK_INSTRUCTION_TOPIC, LATCHED)
        self.episode_pub = self.create_publisher(String, robot.TASK_EPISODE_TOPIC, LATCHED)
        self.state_pub = self.create_publisher(String, robot.TASK_STATE_TOPIC, 10)
        for arm in robot.ARMS:
            self.create_subscription(
                JointState,
                robot.joint_positions_topic(arm),
                lambda msg, arm=arm: self._on_command(arm, msg),
                10,
            )
        self.create_service(Trigger, '~/reset', self._on_reset)
        self._reset()
        self._running = True
        self.thread = threading.Thread(target=self._physics_loop, name='physics', daemon=True)
        self.thread.start()

    def _instruction_problem(self, instruction: str) -> str | None:
        if not instruction:
            return None
        try:
            self.scene.check_instruction(instruction)
        except ValueError as error:
            return f'is not valid: {error}'
        return None

    def _reset(self) -> Episode:
        """New episode from the parameters; the clock continues where it was."""
        seed = self.get_parameter('seed').value
        instruction = self.get_parameter('instruction').value or None
        with self.lock:
            self.clock_offset += self.sim.time
            episode = self.sim.reset(seed, instruction)
            start = self.clock_offset
            self.schedule.restart(start)
        # Episode first: recorders open a new bag on it, then the instruction follows.
        self.episode_pub.publish(String(data=episode_json(episode, start)))
        self.instruction_pub.publish(String(data=episode.instruction))
        self.get_logger().info(
            f'episode {episode.index}: scene {episode.scene}, seed {seed}, '
            f'instruction {episode.instruction!r}'
        )
        return episode

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            episode = self._reset()
        except ValueError as err:  # parameters are checked on set; this is the last guard
            response.success, response.message = False, str(err)
            return response
        response.success = True
        response.message = episode_json(episode, self.clock_offset)
        return response

    def _on_command(self, arm: str, msg: JointState) -> None:
        try:
            command = command_from_named(list(msg.name), list(msg.position))
            with self.lock:
                self.sim.set_command(arm, command)
        except ValueError as err:
            self.rejected_commands += 1
            self.get_logger().warning(
                f'rejected command for arm {arm} '
                f'(#{self.rejected_commands}, holding the last one): {err}',
                throttle_duration_sec=1.0,
            )

    def _physics_loop(self) -> None:
        try:
            while self._running:
                with self.lock:
                    now = self.clock_offset + self.sim.time
                    for stream in self.schedule.pop_due(now):
                        self._publish(stream, now)
                    self.sim.step(steps_until(now, self.schedule.next_time(), self.sim.timestep))
                    now = self.clock_offset + self.sim.time
                self.pacer.pace(now)
        except Exception as err:
            if not self.context.ok():  # Ctrl-C shut the context down mid-publish: just stop
                return
            self.get_logger().fatal(f'physics thread stopped: {err!r}')
            raise
        finally:
            self.sim.close()  # the GL context belongs to this thread

    def _publish(self, stream: str, now: float) -> None:
        t = stamp(now)
        if stream == 'clock':
            self.clock_pub.publish(Clock(clock=t))
        elif stream == 'joints':
            for arm in robot.ARMS:
                state = self.sim.joint_state(arm)
                msg = JointState(
                    name=list(robot.INTERBOTIX_JOINT_STATE_ORDER),
                    position=state.position.tolist(),
                    velocity=state.velocity.tolist(),
                    effort=state.effort.tolist(),
                )
                msg.header.stamp = t
                self.joint_pubs[arm].publish(msg)
        elif stream == 'camera':
            for cam in robot.CAMERAS:
                pixels = self.sim.render(cam)  # (H, W, 3) uint8
                msg = Image(
                    height=pixels.shape[0],
                    width=pixels.shape[1],
                    encoding='rgb8',
                    is_bigendian=0,
                    step=pixels.shape[1] * 3,
                    data=np.ascontiguousarray(pixels).tobytes(),
                )
                msg.header.stamp, msg.header.frame_id = t, f'{cam}_color_optical_frame'
                self.image_pubs[cam].publish(msg)
        elif stream == 'success':
            self.success_pub.publish(Bool(data=self.sim.success()))
        elif stream == 'state':
            self.state_pub.publish(String(data=json.dumps({'t': now, **self.sim.state()})))

    def destroy_node(self) -> None:
        self._running = False
        self.thread.join(timeout=5.0)
        super().destroy_node()


PARAMETERS = (SCENE_PARAMETER, *EPISODE_PARAMETERS)


def main(argv: list[str] | None = None) -> int:
    return run_node('aloha_sim', __doc__, PARAMETERS, AlohaSimNode, argv)


if __name__ == '__main__':
    sys.exit(main())
