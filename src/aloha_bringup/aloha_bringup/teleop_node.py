"""teleop: the followers mirror the leader arms, and each demonstration becomes one bag.

With `leader_bringup` (a real ALOHA) the leader arms are first made free to move as Trossen's
opening ceremony leaves them (arm and gripper in `position`, torque off; read back), through
their xs_sdk services (runtime/arm_bringup.py leader_bringup); nothing is mirrored before.
The leader arms' joint states (/leader_<arm>/joint_states) become the policy's targets: the six
arm joints as they are, the gripper angle as an opening by the leader's closed and open angles
(Trossen's LEADER2FOLLOWER_JOINT_FN, aloha_bringup/teleop/leader.py). At `rate_hz` the node
publishes them as an action chunk whose rows all hold the newest leader pose, and the chunk
executor (merge_rule newest) plays it: the followers get the executor's limits, tracking
check, bring-up, start pose and sleep, and hold when the leaders fall silent (a chunk is good
for chunk_rows / rate_hz seconds).

Episodes: `~/start_episode` (oft_msgs/srv/SetInstruction: the episode's instruction) and
`~/end_episode` (std_srvs/Trigger), or in a terminal `s [instruction]` + Enter and `e` +
Enter. Each episode is one MCAP bag in `output_dir` (teleop/episodes.py: the leaders' and
followers' joint states, the followers' commands, the cameras, the chunks, /task/instruction,
/task/episode; the instruction in its metadata), ready for `oft_training.convert` (actions
from the leaders' joint states, the authors' definition). While recording, a live line shows
the episode's time and each camera's frames and dropped frames. Ctrl-C closes an open episode's
bag first.

Run: ros2 launch aloha_bringup teleop.launch.py (with the executor and, use_sim:=true, the
simulation as the followers).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from aloha_bringup.recorder_node import GRAPH_RECORDING_PARAMETERS, subscribe_raw
from aloha_bringup.teleop.episodes import EpisodeBags, teleop_topics
from aloha_bringup.teleop.leader import leader_target
from oft_msgs.msg import ActionChunk
from oft_msgs.srv import SetInstruction
from oft_policy_node import robot
from oft_policy_node.command_backends import BRINGUP_POLL_S, DriverCalls
from oft_policy_node.node_parameters import ParameterSpec, declare_all, positive
from oft_policy_node.node_runner import run_node
from oft_policy_node.qos import LATCHED
from oft_policy_node.ros_conversions import action_chunk_msg
from oft_policy_node.runtime.arm_bringup import DriverSequence, leader_bringup

PARAMETERS = (
    ParameterSpec(
        'rate_hz',
        50.0,
        "Chunks per second (Trossen's record_episodes.py teleoperates at 50 Hz).",
        positive,
    ),
    ParameterSpec(
        'chunk_rows',
        12,
        'Rows of each chunk: how long (rows / rate_hz) the followers may go on with a leader '
        'pose before they hold.',
        lambda v: None if v >= 1 else 'must be >= 1',
    ),
    ParameterSpec(
        'max_leader_age',
        0.25,
        'Seconds after which a leader joint state is too old to command with.',
        positive,
    ),
    ParameterSpec(
        'leader_gripper_range',
        [robot.ALOHA2_LEADER.closed, robot.ALOHA2_LEADER.opened],
        "Leader gripper joint angle (rad) closed and open (Trossen's ALOHA 2 leaders; the "
        f'original ALOHA: [{robot.ALOHA1_LEADER.closed}, {robot.ALOHA1_LEADER.opened}]).',
        lambda v: None if len(v) == 2 and v[0] != v[1] else 'must be [closed, open]',
    ),
    ParameterSpec(
        'leader_bringup',
        True,
        'Make the leader arms free to move through their xs_sdk (leader_<arm> namespaces) '
        'before mirroring them; false for a simulated leader.',
    ),
    ParameterSpec(
        'bringup_timeout',
        10.0,
        'Seconds each leader xs_sdk service may take to appear and to answer.',
        positive,
    ),
    ParameterSpec('output_dir', 'demos', 'Folder of the episode bags.'),
    *GRAPH_RECORDING_PARAMETERS,
    ParameterSpec('camera_rate_hz', 30.0, 'Camera rate, to count dropped frames.', positive),
    ParameterSpec(
        'instruction', '', 'Instruction of episodes started with a bare `s` in the terminal.'
    ),
)
LIVE_LINE_S = 1.0


class TeleopNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__('teleop', **kwargs)
        params = declare_all(self, PARAMETERS)
        self._period = 1.0 / params['rate_hz']
        self._rows = params['chunk_rows']
        self._max_age = params['max_leader_age']
        self._gripper = robot.LeaderGripper(*params['leader_gripper_range'])
        self._default_instruction = params['instruction']
        self._lock = threading.Lock()
        self._leaders: dict[str, tuple[float, np.ndarray]] = {}  # arm -> (node time s, (7,))
        self._chunk_id = 0
        self._leader_calls = None
        if params['leader_bringup']:
            self._leader_calls = DriverCalls(self, params['bringup_timeout'])
            self._leader_calls.start(DriverSequence(leader_bringup(), 'leader bring-up'))
            self.create_timer(
                BRINGUP_POLL_S,
                self._bring_up_leaders,
                clock=Clock(clock_type=ClockType.STEADY_TIME),
            )
        for arm in robot.ARMS:
            self.create_subscription(
                JointState,
                robot.leader_joint_states_topic(arm),
                lambda msg, arm=arm: self._on_leader(arm, msg),
                qos_profile_sensor_data,
            )
        self._chunks = self.create_publisher(ActionChunk, robot.ACTION_CHUNK_TOPIC, 10)
        self._task_instruction = self.create_publisher(
            String, robot.TASK_INSTRUCTION_TOPIC, LATCHED
        )
        self._task_episode = self.create_publisher(String, robot.TASK_EPISODE_TOPIC, LATCHED)
        transport = params['image_transport']
        topics = teleop_topics(params['camera_topics'], transport)
        self._bags = EpisodeBags(
            params['output_dir'],
            topics,
            {
                robot.image_topic(topic, transport): camera
                for topic, camera in zip(params['camera_topics'], robot.CAMERAS, strict=True)
            },
            params['camera_rate_hz'],
            params['robot'],
        )
        subscribe_raw(self, self._write, topics)
        self.create_service(SetInstruction, '~/start_episode', self._on_start)
        self.create_service(Trigger, '~/end_episode', self._on_end)
        self.create_timer(self._period, self._publish_chunk)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(LIVE_LINE_S, self._show_live_line, clock=steady)
        self._tty = sys.stdin.isatty()
        if self._tty:
            threading.Thread(target=self._read_keys, name='keys', daemon=True).start()
        self.get_logger().info(
            f'mirroring the leaders at {params["rate_hz"]} Hz; episodes to '
            f'{params["output_dir"]}: ~/start_episode, ~/end_episode'
            + (' or `s [instruction]` / `e` + Enter here' if self._tty else '')
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_leader(self, arm: str, msg: JointState) -> None:
        try:
            pose = leader_target(msg.name, msg.position, self._gripper)
        except ValueError as error:
            self.get_logger().error(
                f'{robot.leader_joint_states_topic(arm)}: {error}', throttle_duration_sec=2.0
            )
            return
        with self._lock:
            self._leaders[arm] = (self._now(), pose)

    @property
    def leaders_ready(self) -> bool:
        return self._leader_calls is None or self._leader_calls.sequence.done

    def _bring_up_leaders(self) -> None:
        while self._leader_calls.step() is not None:  # each answered call, at once
            sequence = self._leader_calls.sequence
            if sequence.failure:
                self.get_logger().error(sequence.failure)
                return
            if sequence.done:
                self.get_logger().info('the leader arms are free to move: mirroring them')

    def _publish_chunk(self) -> None:
        if not self.leaders_ready:
            return
        now = self._now()
        with self._lock:
            if set(self._leaders) != set(robot.ARMS) or any(
                now - at > self._max_age for at, _ in self._leaders.values()
            ):
                return  # the executor holds once the last chunk has run out
            pose = np.concatenate([self._leaders[arm][1] for arm in robot.ARMS])  # (D,)
        self._chunk_id += 1
        stamp = self.get_clock().now().to_msg()
        rows = np.tile(pose, (self._rows, 1))
        instruction = self._bags.instruction if self._bags.recording else ''
        self._chunks.publish(
            action_chunk_msg(stamp, rows, self._chunk_id, instruction, self._period, 0.0)
        )

    def _write(self, topic: str, time_ns: int, cdr: bytes) -> None:
        with self._lock:
            self._bags.write(topic, time_ns, cdr)

    # ---- episodes ---------------------------------------------------------------------
    def start_episode(self, instruction: str) -> str:
        with self._lock:
            path = self._bags.start(instruction, self.get_clock().now().nanoseconds)
            self._task_instruction.publish(String(data=instruction))
            self._task_episode.publish(String(data=self._bags.episode_info()))
        self.get_logger().info(f'episode {self._bags.number}: recording {instruction!r} to {path}')
        return str(path)

    def end_episode(self) -> str:
        with self._lock:
            path, counts = self._bags.end()
        summary = ', '.join(f'{topic} {count}' for topic, count in counts.items())
        self.get_logger().info(f'episode saved to {path}: {summary}')
        return f'{path}: {summary}'

    def _on_start(
        self, request: SetInstruction.Request, response: SetInstruction.Response
    ) -> SetInstruction.Response:
        try:
            response.message = self.start_episode(request.instruction)
            response.success, response.active_instruction = True, request.instruction
        except (RuntimeError, ValueError, FileExistsError) as error:
            response.success, response.message = False, str(error)
        return response

    def _on_end(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            response.message, response.success = self.end_episode(), True
        except RuntimeError as error:
            response.success, response.message = False, str(error)
        return response

    def _read_keys(self) -> None:
        """`s [instruction]` starts an episode, `e` ends it (a line each, in the terminal)."""
        for line in sys.stdin:
            command, _, rest = line.strip().partition(' ')
            try:
                if command == 's':
                    self.start_episode(rest.strip() or self._default_instruction)
                elif command == 'e':
                    self.end_episode()
            except (RuntimeError, ValueError, FileExistsError) as error:
                self.get_logger().error(str(error))

    def _show_live_line(self) -> None:
        with self._lock:
            if not self._bags.recording:
                return
            line = self._bags.live_line(self.get_clock().now().nanoseconds)
        if self._tty:
            print(f'\r{line}', end='', flush=True)
        else:
            self.get_logger().info(line, throttle_duration_sec=5.0)

    # ---- exit (node_runner) -------------------------------------------------------------
    def begin_exit(self) -> None:
        if self._bags.recording:
            self.end_episode()

    def exit_done(self) -> bool:
        return True


def main(argv: list[str] | None = None) -> int:
    return run_node('teleop', __doc__, PARAMETERS, TeleopNode, argv, graceful_exit=True)


if __name__ == '__main__':
    raise SystemExit(main())
