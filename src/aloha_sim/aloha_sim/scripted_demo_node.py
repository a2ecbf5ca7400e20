"""scripted_demo: drive the running aloha_sim through N seeded episodes with the scripted
demonstrator, over ROS like a teleoperator: per episode set the sim's `seed` and
`instruction`, call /aloha_sim/reset, then publish one joint_positions command per control tick
of sim time (/clock), and read /task/success at the end.

With --as-leader it is a simulated leader arm instead: it publishes what it would command as
the leader arms' joint states (/leader_<arm>/joint_states, the gripper as a leader gripper
angle), for the teleop node to mirror onto the followers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from tqdm import tqdm

from aloha_sim import recovery
from aloha_sim.physics import COMMAND_JOINTS, Episode
from aloha_sim.scenes import SCENES, Layout, get_scene
from aloha_sim.scripted import ScriptedDemonstrator, Trajectory
from oft_policy_node import robot
from oft_policy_node.rclpy_compat import RemoteParameters
from oft_policy_node.service_calls import call_until_answered

SIM_NODE = 'aloha_sim'
SETTLE_SECONDS = 0.5  # sim time holding the last command before success is read
LEADER_STATE_PERIOD_S = 0.02  # a simulated leader's joint states: 50 Hz of sim time


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    instruction: str
    success: bool
    sim_seconds: float
    wall_seconds: float
    end_time: float  # s on the sim clock: the end of the episode's window
    retry_time: float | None = None  # s on the sim clock: where a retry after a miss began


def instruction_for(scene: str, episode: int, instruction: str | None) -> str:
    """The given instruction, or the scene's instructions in turn (all objects get demos)."""
    choices = get_scene(scene).instructions()
    return instruction if instruction else choices[episode % len(choices)]


class DemoRunner:
    """Runs scripted episodes against aloha_sim from a node of the caller's."""

    def __init__(
        self,
        node: Node,
        executor: SingleThreadedExecutor,
        scene: str,
        rate_hz: float = robot.CONTROL_RATE_HZ,
        leader: robot.LeaderGripper | None = None,
    ) -> None:
        """`leader`: publish the leader arms' joint states with this gripper calibration
        instead of the followers' commands."""
        self.node, self.executor = node, executor
        self.leader = leader
        scene_obj = get_scene(scene)
        self.demonstrator = ScriptedDemonstrator(
            scene_obj, scene_obj.build_spec().compile(), rate_hz
        )
        self.scene = scene
        topic = robot.leader_joint_states_topic if leader else robot.joint_positions_topic
        self.command_pubs = {
            arm: node.create_publisher(JointState, topic(arm), 10) for arm in robot.ARMS
        }
        self.reset_client = node.create_client(Trigger, f'/{SIM_NODE}/reset')
        self.params = RemoteParameters(node, SIM_NODE)
        self.sim_time: float | None = None
        self.success = False
        node.create_subscription(Clock, robot.CLOCK_TOPIC, self._on_clock, 10)
        node.create_subscription(Bool, robot.TASK_SUCCESS_TOPIC, self._on_success, 10)
        self.state: dict | None = None  # the newest /task/state
        node.create_subscription(String, robot.TASK_STATE_TOPIC, self._on_state, 10)
        self._trajectory: Trajectory | None = None
        self._start = 0.0
        self._sent = -1
        self._sent_at = -math.inf  # sim time of the last message
        self._holding = False  # the first row, until the graph is ready

    def _on_clock(self, msg: Clock) -> None:
        self.sim_time = msg.clock.sec + msg.clock.nanosec * 1e-9
        if self._trajectory is None:
            return
        row = (
            0
            if self._holding
            else min(
                math.floor((self.sim_time - self._start) * self.demonstrator.rate_hz + 1e-6),
                len(self._trajectory.times) - 1,
            )
        )
        # Newest due row only: like a teleoperator, no backlog. A leader arm reports its
        # state all the time, not only when it moves (LEADER_STATE_PERIOD_S).
        due = row > self._sent or (
            self.leader is not None and self.sim_time - self._sent_at >= LEADER_STATE_PERIOD_S
        )
        if due:
            self._sent, self._sent_at = row, self.sim_time
            for arm in robot.ARMS:
                position = self._trajectory.commands[arm][row].tolist()  # joints, motor angle
                if self.leader:
                    position[-1] = float(
                        self.leader.angle(robot.motor_to_normalized(position[-1]))
                    )
                msg_out = JointState(name=list(COMMAND_JOINTS), position=position)
                msg_out.header.stamp = msg.clock
                self.command_pubs[arm].publish(msg_out)

    def _on_success(self, msg: Bool) -> None:
        self.success = msg.data

    def _on_state(self, msg: String) -> None:
        self.state = json.loads(msg.data)

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Spin until `predicate()` or `timeout` s; which of the two."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        if not self.spin_until(predicate, timeout):
            raise TimeoutError(f'no {what} within {timeout:.0f} s; {self._is_sim_there}')

    @property
    def _is_sim_there(self) -> str:
        return f'is aloha_sim running (scene {self.scene!r}) on this ROS_DOMAIN_ID?'

    def _call(self, client: object, send: Callable[[], object]) -> object:
        try:
            return call_until_answered(client, send, self.spin_until)
        except TimeoutError as error:
            raise TimeoutError(f'{error}; {self._is_sim_there}') from None

    def wait_for_sim(self, timeout: float = 30.0) -> None:
        self._wait(
            lambda: self.reset_client.service_is_ready() and self.sim_time is not None,
            timeout,
            f'/{SIM_NODE}/reset service and /clock',
        )

    def reset(self, seed: int, instruction: str) -> tuple[Episode, float]:
        """Set the sim's seed and instruction, reset it; the episode and its start time."""
        parameters = [Parameter('seed', value=seed), Parameter('instruction', value=instruction)]
        answer = self._call(self.params.client, lambda: self.params.set_parameters(parameters))
        refused = [r.reason for r in answer.results if not r.successful]
        if refused:
            raise ValueError(
                f'aloha_sim refused seed={seed}, instruction={instruction!r}: {refused}'
            )
        answer = self._call(
            self.reset_client, lambda: self.reset_client.call_async(Trigger.Request())
        )
        if not answer.success:
            raise RuntimeError(f'aloha_sim reset failed: {answer.message}')
        info = json.loads(answer.message)
        if info['scene'] != self.scene:
            raise ValueError(
                f'aloha_sim runs scene {info["scene"]!r}, not {self.scene!r}; '
                f'start it with -p scene:={self.scene}'
            )
        layout = Layout({k: tuple(v) for k, v in info['objects'].items()})
        episode = Episode(
            info['scene'], info['seed'], info['instruction'], layout, info['episode']
        )
        return episode, float(info['start_time'])

    def run_episode(
        self,
        seed: int,
        instruction: str,
        ready: Callable[[], None] | None = None,
        miss_first_grasp: bool = False,
    ) -> EpisodeResult:
        """One episode; `ready()`, when given, is called after the reset and blocks until the
        rest of the graph is (a follower's executor, a recorder): the demonstration starts
        then, from the reset pose. `miss_first_grasp`: aim the first grasp beside the object
        (recovery.aimed_beside) and, if it lifted nothing, retry from where the arms are and
        the objects lie (a recovery demo)."""
        wall = time.monotonic()
        episode, start = self.reset(seed, instruction)
        first = (
            recovery.aimed_beside(episode, self.demonstrator.scene, np.random.default_rng(seed))
            if miss_first_grasp
            else episode
        )
        trajectory = self.demonstrator.plan(first)
        if ready is not None:
            self._holding, self._sent, self._trajectory = True, -1, trajectory
            ready()
            self._holding, start = False, self.sim_time
        self.success = False
        self._play(trajectory, start)
        began, retry_time = start, None
        if miss_first_grasp:
            check = start + recovery.LIFT_CHECK_S
            self._wait_for_clock(check)
            self.state = None  # one from after the check time
            self._wait(
                lambda: self.state is not None and self.state['t'] >= check,
                10.0,
                robot.TASK_STATE_TOPIC,
            )
            where = {arm: self._trajectory.commands[arm][self._sent] for arm in robot.ARMS}
            again = recovery.retry(self.demonstrator, episode, self.state['objects'], where)
            if again is not None:
                retry_time = start = self.sim_time
                self._play(again, start)
        end = start + self._trajectory.times[-1] + 1.0 / self.demonstrator.rate_hz
        end += SETTLE_SECONDS
        self._wait_for_clock(end)
        self._trajectory = None
        # The success topic runs at its own rate: take a message from after the episode end.
        self.success = None
        self._wait(lambda: self.success is not None, 10.0, robot.TASK_SUCCESS_TOPIC)
        return EpisodeResult(
            seed,
            episode.instruction,
            bool(self.success),
            end - began,
            time.monotonic() - wall,
            end,
            retry_time,
        )

    def _play(self, trajectory: Trajectory, start: float) -> None:
        """Play `trajectory` from sim time `start` on (the clock callback sends its rows)."""
        self._start, self._sent, self._trajectory = start, -1, trajectory

    def _wait_for_clock(self, until: float) -> None:
        # Generous: the sim may run far below real time on a busy CPU.
        self._wait(
            lambda: self.sim_time is not None and self.sim_time >= until,
            timeout=60.0 + 20.0 * max(0.0, until - (self.sim_time or until)),
            what=f'sim time {until:.1f} s on /clock',
        )


def add_episode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--scene',
        default='put_x_into_pot',
        choices=list(SCENES),
        help='scene aloha_sim runs (default: %(default)s)',
    )
    parser.add_argument(
        '-n', '--episodes', type=int, default=10, help='number of episodes (default: %(default)s)'
    )
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the first episode; episode k uses seed + k'
    )
    parser.add_argument(
        '--instruction',
        default=None,
        help="instruction of every episode (default: the scene's instructions in turn)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(
        prog='scripted_demo',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_episode_arguments(parser)
    parser.add_argument(
        '--as-leader',
        action='store_true',
        help="publish the leader arms' joint states (a simulated teleoperator for the teleop "
        "node) instead of the followers' commands",
    )
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    if args.episodes < 1:
        parser.error(f'--episodes must be >= 1, got {args.episodes}')
    rclpy.init(args=argv)
    node = Node('scripted_demo')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    results = []
    try:
        leader = robot.ALOHA2_LEADER if args.as_leader else None
        runner = DemoRunner(node, executor, args.scene, leader=leader)
        runner.wait_for_sim()
        for k in tqdm(range(args.episodes), desc=f'{args.scene} episodes', unit='ep'):
            result = runner.run_episode(
                args.seed + k, instruction_for(args.scene, k, args.instruction)
            )
            results.append(result)
            tqdm.write(
                f'seed {result.seed}: {"success" if result.success else "FAILED"} '
                f'({result.instruction!r}, {result.sim_seconds:.1f} s sim in '
                f'{result.wall_seconds:.1f} s)'
            )
    except (TimeoutError, ValueError, RuntimeError) as err:
        print(f'scripted_demo: {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    wins = sum(r.success for r in results)
    print(f'scripted_demo: {wins}/{len(results)} successful episodes of {args.scene}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
