"""`make eval-sim`: closed-loop evaluation of a policy in the simulation, through the ROS graph.

    python -m aloha_bringup.eval_sim --checkpoint checkpoints/put_x_into_pot \\
        --scene put_x_into_pot --episodes-per-instruction 10 --seed 0 --max-seconds 20

Starts aloha_sim and policy_node once (separate processes, the graph of config/graph.yaml) and
runs N seeded episodes per instruction of the scene, instructions interleaved, episode k with
seed S + k. Per episode: the sim is reset with the seed and instruction (its parameters + its
~/reset service), the policy is switched with /set_instruction, and once the policy has
published a chunk from an observation of the new episode with the new instruction, a fresh
chunk_executor process starts (its first command is the measured start pose, so nothing of the
previous episode is ever executed into this one); the episode ends at /task/success or after
--max-seconds of sim time, and the executor is stopped again.

Per episode it measures task success, the first object a gripper approached (language
following, from the sim's ground truth /task/state), stalled, clamped and waiting ticks
(executor /diagnostics), inference latency and sim/wall seconds, and records a video of the
three cameras that is kept for failed episodes only. Writes runs/<timestamp>/eval.json
(per-episode records, per-instruction and overall rates, chance level, the command that
reproduces the run) and runs/<timestamp>/videos/episode_<k>.mp4.

Inference latency is part of what is measured: the robot moves on while the policy thinks. It
is counted in sim seconds, so `--real-time-factor` below 1 (the sim never runs faster than that
fraction of wall time) shows how the same policy does on faster hardware.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aloha_bringup.closed_loop_metrics import DEFAULT_APPROACH_DISTANCE, StateSample, \
    episode_measures, language_task, summarize, summarize_by_instruction
from aloha_bringup.demo import DIAGNOSTICS_PERIOD_S, REPO_ROOT, choose_checkpoint
from aloha_bringup.demo_report import CameraVideo, ExecutorCounters, latency_stats, write_report
from aloha_bringup.graph import NodeSpec, load_params, resolve_graph
from aloha_bringup.run_graph import GraphProcesses, node_command
from aloha_bringup.sim.scenes import SCENES, get_scene
from oft_policy_node import robot
from oft_policy_node.child_process import sigterm_as_ctrl_c
from oft_policy_node.node_parameters import fraction
from oft_policy_node.runtime.chunk_queue import MERGE_RULES

EXECUTOR = 'chunk_executor'
SIM = 'aloha_sim'
SERVICE_TIMEOUT_S = 10.0
# A chunk counts as "of the new episode" when its observation is this much newer than the reset:
# the policy may pair a last pre-reset image with post-reset joint states within its sync window.
FRESH_CHUNK_MARGIN_S = 0.1


@dataclass(frozen=True)
class EpisodePlan:
    index: int  # 0-based over the whole run
    instruction: str
    seed: int


def episode_plans(instructions: tuple[str, ...], per_instruction: int, seed: int
                  ) -> list[EpisodePlan]:
    """Instructions interleaved (a run cut short stays balanced), episode k gets seed + k."""
    plans = []
    for repeat in range(per_instruction):
        for instruction in instructions:
            index = len(plans)
            plans.append(EpisodePlan(index, instruction, seed + index))
    return plans


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

        self.node = Node('eval_sim', context=context,
                         parameter_overrides=[Parameter('use_sim_time', value=True)])
        n = self.node
        self.latest_chunk: tuple[float, str] | None = None  # (observation stamp s, instruction)
        self._begin(None)
        for cam in robot.CAMERAS:
            n.create_subscription(Image, robot.camera_topic(cam),
                                  lambda m, c=cam: self._on_image(c, m), qos_profile_sensor_data)
        n.create_subscription(JointState, robot.joint_positions_topic(robot.ARMS[-1]),
                              self._on_command, 10)
        n.create_subscription(ActionChunk, robot.ACTION_CHUNK_TOPIC, self._on_chunk, 10)
        n.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        n.create_subscription(Bool, robot.TASK_SUCCESS_TOPIC, self._on_success, 10)
        n.create_subscription(String, robot.TASK_STATE_TOPIC, self._on_state, 50)
        self._set_parameters = n.create_client(SetParameters, f'/{SIM}/set_parameters')
        self._reset = n.create_client(Trigger, f'/{SIM}/reset')
        self._set_instruction = n.create_client(SetInstruction, robot.SET_INSTRUCTION_SERVICE)
        self._types = {'parameter': Parameter, 'parameters': SetParameters, 'trigger': Trigger,
                       'instruction': SetInstruction}

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
        if self.recording():
            state = json.loads(msg.data)  # t on the sim clock: made relative to the episode
            self.states.append(StateSample(round(state['t'] - self.window_start, 4),
                                           state['grasp'], state['objects']))

    # ---- services ------------------------------------------------------------------------
    def _call(self, client: object, request: object, spin: Callable[[float], None]) -> object:
        if not client.wait_for_service(timeout_sec=SERVICE_TIMEOUT_S):
            raise RuntimeError(f'service {client.srv_name} is not available')
        future = client.call_async(request)
        deadline = time.monotonic() + SERVICE_TIMEOUT_S
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f'service {client.srv_name} did not answer within '
                                   f'{SERVICE_TIMEOUT_S} s')
            spin(0.05)
        return future.result()

    def services_ready(self) -> bool:
        return all(client.service_is_ready() for client in
                   (self._set_parameters, self._reset, self._set_instruction))

    def reset_sim(self, seed: int, instruction: str, spin: Callable[[float], None]) -> dict:
        """Set the sim's seed and instruction, reset it; the episode JSON it answers with."""
        parameter = self._types['parameter']
        request = self._types['parameters'].Request(parameters=[
            parameter('seed', value=seed).to_parameter_msg(),
            parameter('instruction', value=instruction).to_parameter_msg()])
        for result in self._call(self._set_parameters, request, spin).results:
            if not result.successful:
                raise RuntimeError(f'aloha_sim refused seed={seed}, instruction={instruction!r}: '
                                   f'{result.reason}')
        response = self._call(self._reset, self._types['trigger'].Request(), spin)
        if not response.success:
            raise RuntimeError(f'aloha_sim reset failed: {response.message}')
        return json.loads(response.message)

    def set_policy_instruction(self, instruction: str, spin: Callable[[float], None]) -> None:
        request = self._types['instruction'].Request(instruction=instruction)
        response = self._call(self._set_instruction, request, spin)
        if not response.success:
            raise RuntimeError(f'policy_node refused {instruction!r}: {response.message}')


class Evaluation:
    """The running graph and the episode loop."""

    def __init__(self, args: argparse.Namespace, nodes: list[NodeSpec], params_dir: Path,
                 run_dir: Path) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.args = args
        self.run_dir = run_dir
        self.context = Context()
        rclpy.init(context=self.context)
        self.monitor = EvalMonitor(self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.monitor.node)
        self.graph = GraphProcesses()
        commands = {spec.name: node_command(spec, params_dir) for spec in nodes}
        self.executor_spec = next(spec for spec in nodes if spec.name == EXECUTOR)
        self.executor_command = commands[EXECUTOR]
        for spec in nodes:
            if spec.name != EXECUTOR:  # the executor starts with each episode
                self.graph.start(spec, commands[spec.name])

    def spin(self, seconds: float) -> None:
        self.executor.spin_once(timeout_sec=seconds)
        if self.graph.exited():
            raise RuntimeError(f'node(s) exited: {self.graph.exited()}')

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f'no {what} within {timeout:.0f} s (wall)')
            self.spin(0.05)

    def run_episode(self, plan: EpisodePlan, first: bool) -> dict:
        monitor, args = self.monitor, self.args
        if first:  # policy_node serves /set_instruction once its model is loaded: slow when busy
            self.spin_until(monitor.services_ready, args.startup_timeout,
                            'aloha_sim and policy_node services (policy_node loads its model '
                            'first)')
        episode = monitor.reset_sim(plan.seed, plan.instruction, self.spin)
        monitor.set_policy_instruction(plan.instruction, self.spin)
        fresh_after = episode['start_time'] + FRESH_CHUNK_MARGIN_S

        def policy_caught_up() -> bool:
            chunk = monitor.latest_chunk
            return chunk is not None and chunk[0] >= fresh_after and chunk[1] == plan.instruction

        self.spin_until(policy_caught_up, args.startup_timeout if first else 60.0,
                        f'chunk for {plan.instruction!r} after the reset')
        video = CameraVideo(self.run_dir / 'videos' / f'episode_{plan.index:03d}.mp4')
        monitor.begin_episode(video)
        self.graph.start(self.executor_spec, self.executor_command)
        self.spin_until(lambda: monitor.window_start is not None, 60.0, 'executor command')
        end = monitor.window_start + args.max_seconds
        self.spin_until(lambda: monitor.success_time is not None or monitor.now() >= end,
                        args.max_seconds / (0.05 * args.real_time_factor) + 60.0,
                        'episode end')  # the sim runs at >= 5 % of its real-time cap
        monitor.window_end, wall_end = monitor.now(), time.monotonic()
        # The executor's counters start at zero with its process: its first report after the
        # episode's end holds the episode's totals.
        self.spin_until(lambda: monitor.counters.first_at_or_after('stalls', monitor.window_end)
                        is not None, 10 * DIAGNOSTICS_PERIOD_S + 10.0, 'executor diagnostics')
        self.graph.stop(EXECUTOR)
        video.close()
        return self._record(plan, episode, wall_end)

    def _record(self, plan: EpisodePlan, episode: dict, wall_end: float) -> dict:
        monitor = self.monitor
        success = monitor.success_time is not None
        states = monitor.window_states()
        if success and monitor.video.path.exists():
            monitor.video.path.unlink()  # videos of failures only
        return {
            'index': plan.index,
            'instruction': plan.instruction,
            'seed': plan.seed,
            'sim_episode': episode['episode'],
            'sim_instruction': episode['instruction'],
            'sim_seed': episode['seed'],
            'initial_objects': episode['objects'],
            'chunk_instructions': sorted(monitor.chunk_instructions),
            'success': success,
            'success_time_s': round(monitor.success_time - monitor.window_start, 3)
            if success else None,
            **episode_measures(get_scene(self.args.scene), plan.instruction, states,
                               self.args.approach_distance),
            'state_samples': len(states),
            'stalled_ticks': monitor.counters.first_at_or_after('stalls', monitor.window_end),
            'clamped_ticks': monitor.counters.first_at_or_after('clamped_commands',
                                                                monitor.window_end),
            'waiting_ticks': monitor.counters.first_at_or_after('waits', monitor.window_end),
            **monitor.counters.tracking_at_or_after(monitor.window_end),
            'chunks': len(monitor.latencies),
            'inference_latency_s': latency_stats(monitor.latencies),
            'inference_latencies_s': monitor.latencies,
            'sim_seconds': round(monitor.window_end - monitor.window_start, 3),
            'wall_seconds': round(wall_end - monitor.wall_start, 3),
            'video': str(monitor.video.path.relative_to(self.run_dir))
            if monitor.video.path.exists() else None,
        }

    def close(self) -> None:
        self.graph.stop_all()
        self.executor.shutdown()
        self.monitor.node.destroy_node()
        self.context.try_shutdown()


def reproduce_command(args: argparse.Namespace, checkpoint: Path) -> str:
    """The command line that runs the same evaluation again (every option explicit)."""
    return shlex.join([
        'python', '-m', 'aloha_bringup.eval_sim', '--checkpoint', str(checkpoint),
        '--scene', args.scene, '--episodes-per-instruction', str(args.episodes_per_instruction),
        '--seed', str(args.seed), '--max-seconds', str(args.max_seconds),
        '--approach-distance', str(args.approach_distance), '--device', args.device,
        '--image-height', str(args.image_height), '--image-width', str(args.image_width),
        '--merge-rule', args.merge_rule, '--real-time-factor', str(args.real_time_factor)])


def graph_nodes(args: argparse.Namespace, checkpoint: Path, instruction: str) -> list[NodeSpec]:
    nodes = resolve_graph({'task': instruction, 'scene': args.scene, 'use_sim': 'true',
                           'checkpoint': str(checkpoint), 'device': args.device})
    for spec in nodes:
        if spec.name == SIM:
            spec.parameters.update(image_height=args.image_height, image_width=args.image_width,
                                   max_real_time_factor=args.real_time_factor)
        elif spec.name == 'policy_node':
            spec.parameters['image_size'] = [args.image_height, args.image_width]
        elif spec.name == EXECUTOR:
            spec.parameters['diagnostics_period'] = DIAGNOSTICS_PERIOD_S
            spec.parameters['merge_rule'] = args.merge_rule
    return nodes


def add_episode_arguments(parser: argparse.ArgumentParser, *, episodes: int,
                          max_seconds: float, image_size: tuple[int, int]) -> None:
    """The options that say which episodes run and how they are judged (eval_sim and
    quick_eval run the same ones); check them with `check_episode_arguments`."""
    parser.add_argument('--scene', default='put_x_into_pot', choices=list(SCENES),
                        help='simulation scene (default: %(default)s)')
    parser.add_argument('--episodes-per-instruction', type=int, default=episodes,
                        help='episodes per instruction of the scene (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the first episode; episode k uses seed+k '
                             '(default: %(default)s)')
    parser.add_argument('--max-seconds', type=float, default=max_seconds,
                        help='sim seconds before an episode counts as failed '
                             '(default: %(default)s)')
    parser.add_argument('--approach-distance', type=float, default=DEFAULT_APPROACH_DISTANCE,
                        help='grasp point to object centre distance (m) that counts as '
                             'approaching it (default: %(default)s)')
    parser.add_argument('--image-height', type=int, default=image_size[0],
                        help='camera image height of sim and policy (default: %(default)s)')
    parser.add_argument('--image-width', type=int, default=image_size[1],
                        help='camera image width of sim and policy (default: %(default)s)')


def check_episode_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error on episode options `add_episode_arguments` cannot check alone."""
    if args.episodes_per_instruction < 1:
        parser.error(f'--episodes-per-instruction {args.episodes_per_instruction} must be >= 1')
    if not 0 <= args.seed < 2**32 - 1024:
        parser.error(f'--seed {args.seed} must be in [0, 2**32 - 1024)')
    if args.max_seconds <= 0:
        parser.error(f'--max-seconds {args.max_seconds} must be > 0')
    if args.approach_distance <= 0:
        parser.error(f'--approach-distance {args.approach_distance} must be > 0 (m)')
    if min(args.image_height, args.image_width) < 16:
        parser.error(f'--image-height/--image-width {args.image_height}x{args.image_width} '
                     'must be at least 16 px (the real cameras are 480x640)')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='eval_sim', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    params = load_params()
    parser.add_argument('--checkpoint', default=None,
                        help='policy checkpoint directory (default: checkpoints/<scene> when '
                             'trained, else an UNTRAINED random-weight policy)')
    add_episode_arguments(parser, episodes=10, max_seconds=20.0,
                          image_size=(robot.IMAGE_HEIGHT, robot.IMAGE_WIDTH))
    parser.add_argument('--device', default='cpu', help='torch device (default: cpu)')
    parser.add_argument('--merge-rule', choices=MERGE_RULES,
                        default=params[EXECUTOR]['merge_rule'],
                        help="chunk_executor's merge_rule: commit plays whole chunks as OFT "
                             'does on ALOHA; sync also pauses for each chunk, so none starts '
                             'late (default: config/params.yaml, %(default)s)')
    parser.add_argument('--real-time-factor', type=float,
                        default=params[SIM]['max_real_time_factor'],
                        help="aloha_sim's max_real_time_factor, in (0, 1]: below 1 the sim "
                             'waits for the wall clock, so inference costs fewer sim seconds; '
                             "0.2 turns this 2-core CPU's ~60 ms into ~12 ms, about a GPU's "
                             '(default: config/params.yaml, %(default)s)')
    parser.add_argument('--out', type=Path, default=REPO_ROOT / 'runs',
                        help='where runs/<timestamp>/ goes (default: %(default)s)')
    parser.add_argument('--startup-timeout', type=float, default=180.0,
                        help='wall seconds to wait for the graph to come up: services, model '
                             'loaded, first chunk (default: %(default)s)')
    args = parser.parse_args(argv)
    check_episode_arguments(parser, args)
    if problem := fraction(args.real_time_factor):  # aloha_sim's own check, up front
        parser.error(f'--real-time-factor {problem}, got {args.real_time_factor}')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sigterm_as_ctrl_c()
    scene = get_scene(args.scene)
    run_dir = args.out / time.strftime('%Y%m%d-%H%M%S')
    (run_dir / 'videos').mkdir(parents=True, exist_ok=True)
    checkpoint, trained = choose_checkpoint(args.checkpoint, args.scene, run_dir)
    if not trained:
        print('eval_sim: no trained checkpoint for this scene; evaluating an UNTRAINED '
              'random-weight policy (expect no success).', flush=True)
    plans = episode_plans(scene.instructions(), args.episodes_per_instruction, args.seed)
    tasks = [language_task(scene, i) for i in scene.instructions()]
    records: list[dict] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix='eval_sim_params_') as params_dir:
        evaluation = Evaluation(args, graph_nodes(args, checkpoint, plans[0].instruction),
                                Path(params_dir), run_dir)
        try:
            progress = tqdm(plans, desc='eval_sim', unit='episode')
            for plan in progress:
                records.append(evaluation.run_episode(plan, first=not records))
                progress.set_postfix(success=summarize(records)['success_rate'])
        except KeyboardInterrupt:
            print('eval_sim: interrupted; writing the episodes finished so far', flush=True)
            status = 130
        except RuntimeError as error:
            print(f'eval_sim: {error}; writing the episodes finished so far', file=sys.stderr,
                  flush=True)
            status = 1
        finally:
            evaluation.close()
    report = {
        'scene': args.scene,
        'checkpoint': str(checkpoint),
        'policy_trained': trained,
        'command': reproduce_command(args, checkpoint),
        'instructions': list(scene.instructions()),
        'episodes_per_instruction': args.episodes_per_instruction,
        'seed': args.seed,
        'seeds': [plan.seed for plan in plans],
        'max_seconds': args.max_seconds,
        'merge_rule': args.merge_rule,
        'real_time_factor': args.real_time_factor,
        'approach_distance_m': args.approach_distance,
        'chance_language_following': round(tasks[0].chance, 4) if tasks[0] else None,
        'complete': len(records) == len(plans),
        'overall': summarize(records),
        'per_instruction': summarize_by_instruction(records, scene.instructions()),
        'episodes': records,
    }
    write_report(run_dir / 'eval.json', report)
    overall = report['overall']
    print(f"eval_sim: {overall['episodes']} episodes, success rate {overall['success_rate']}, "
          f"language following {overall['language_following_rate']} "
          f"(chance {report['chance_language_following']}), closest to the target "
          f"{overall['target_closest_m_median']} m (median); wrote {run_dir}/eval.json",
          flush=True)
    return status


if __name__ == '__main__':
    sys.exit(main())
