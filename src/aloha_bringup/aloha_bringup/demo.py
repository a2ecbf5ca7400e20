"""`make demo`: the simulated ALOHA driven by the OFT+ policy through the real ROS graph.

    python -m aloha_bringup.demo --task "put green pepper into pot" --duration 20

Starts the graph of config/graph.yaml (aloha_sim + policy_node + chunk_executor, each its own
process, as `run_graph` does), watches it from a monitor node for `--duration` seconds of sim
time counted from the first action chunk (model loading is not part of the measurement), stops
it, and writes to runs/<timestamp>/:
  report.json   instruction, scene, sim/wall seconds, real-time factor, ticks, control rate,
                stalled, clamped and waiting ticks, chunks, inference latency p50/p95/max, success
  cameras.mp4   cam_high | cam_left_wrist | cam_right_wrist, side by side
  joints.png    commanded vs measured, 14 panels
It uses --checkpoint, else the trained checkpoint of the scene in checkpoints/ when there is
one, else a random-weight policy it makes on the spot, and then says plainly that the policy is
untrained.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aloha_bringup.evaluation.demo_report import (
    CameraVideo,
    ExecutorCounters,
    JointSeries,
    latency_stats,
    summary_lines,
    write_report,
)
from aloha_bringup.evaluation.eval_monitor import SIM
from aloha_bringup.graph import default_checkpoint, load_params, resolve_graph
from aloha_bringup.run_graph import GraphProcesses, node_command
from oft_policy_node import robot
from oft_policy_node.child_process import interrupted, sigterm_as_ctrl_c
from oft_policy_node.node_parameters import fraction

REPO_ROOT = Path(__file__).resolve().parents[3]
# The executor reports counters on /diagnostics; the demo asks for them often so the counts at
# the window's edges are close to exact.
DIAGNOSTICS_PERIOD_S = 0.2


def choose_checkpoint(explicit: str | None, scene: str, run_dir: Path) -> tuple[Path, bool]:
    """(checkpoint directory, whether it is trained): explicit > the scene's committed policy
    (graph.default_checkpoint) > a random-weight one, made in `run_dir`."""
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not path.is_dir():
            raise SystemExit(f'--checkpoint {explicit}: no such directory')
        return path, True
    trained = default_checkpoint(scene)
    if trained is not None:
        return trained, True
    from aloha_sim.scenes import get_scene
    from oft_policy_node.model.testing import make_tiny_checkpoint

    path = run_dir / 'untrained_checkpoint'
    make_tiny_checkpoint(path, instructions=get_scene(scene).instructions())
    return path, False


class DemoMonitor:
    """A node that records what the graph does, for the report (rclpy imported lazily)."""

    def __init__(self, context: object, run_dir: Path) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from rclpy.qos import qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool

        from oft_msgs.msg import ActionChunk
        from oft_policy_node.rclpy_compat import subscribe_with_arrival

        self.node = Node(
            'demo_monitor',
            context=context,
            parameter_overrides=[Parameter('use_sim_time', value=True)],
        )
        self.video = CameraVideo(run_dir / 'cameras.mp4')
        self.joints = JointSeries()
        self.latencies: list[float] = []
        self.window_start: float | None = None  # sim time of the first chunk
        self.window_end: float | None = None  # sim time the measurement stopped
        self.wall_start = self.wall_end = 0.0
        # The newest /clock: (sim s, wall s when DDS received it). The window's ends are taken
        # from it as pairs, so a monitor that takes its callbacks late (a busy machine) does not
        # pair an old sim time with a new wall time: the real-time factor is the sim's.
        self.clock = (0.0, 0.0)
        self.commands_in_window = 0
        self.executor_counters = ExecutorCounters()
        self.success = False
        self._measured = np.full(robot.ACTION_DIM, np.nan)
        self._commanded = np.full(robot.ACTION_DIM, np.nan)
        n = self.node
        for cam in robot.CAMERAS:
            n.create_subscription(
                Image,
                robot.camera_topic(cam),
                lambda m, c=cam: self._on_image(c, m),
                qos_profile_sensor_data,
            )
        for arm in robot.ARMS:
            n.create_subscription(
                JointState,
                robot.joint_states_topic(arm),
                lambda m, a=arm: self._on_measured(a, m),
                qos_profile_sensor_data,
            )
            n.create_subscription(
                JointState,
                robot.joint_positions_topic(arm),
                lambda m, a=arm: self._on_command(a, m),
                10,
            )
        n.create_subscription(ActionChunk, robot.ACTION_CHUNK_TOPIC, self._on_chunk, 10)
        subscribe_with_arrival(n, Clock, robot.CLOCK_TOPIC, self._on_clock, 10)
        n.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        n.create_subscription(Bool, robot.TASK_SUCCESS_TOPIC, self._on_success, 10)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def recording(self) -> bool:
        """True between the first chunk and the end of the measured window."""
        return self.window_start is not None and self.window_end is None

    def _on_image(self, camera: str, msg: object) -> None:
        if not self.recording() or msg.encoding != 'rgb8':
            return
        image = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
        self.video.add_image(camera, self.now(), image)

    def _on_measured(self, arm: str, msg: object) -> None:
        positions = dict(zip(msg.name, msg.position, strict=False))
        columns = robot.arm_columns(arm)
        values = [positions[j] for j in robot.ARM_JOINTS]
        values.append(robot.finger_to_normalized(positions[robot.FINGER_JOINT]))
        self._measured[columns] = values
        if self.recording() and arm == robot.ARMS[-1]:
            self.joints.add_measured(self.now(), self._measured.copy())

    def _on_command(self, arm: str, msg: object) -> None:
        positions = dict(zip(msg.name, msg.position, strict=False))
        values = [positions[j] for j in robot.ARM_JOINTS]
        values.append(robot.motor_to_normalized(positions[robot.GRIPPER]))
        self._commanded[robot.arm_columns(arm)] = values
        if self.recording() and arm == robot.ARMS[-1]:
            self.commands_in_window += 1
            self.joints.add_commanded(self.now(), self._commanded.copy())

    def _on_clock(self, msg: object, received_ns: int) -> None:
        wall = received_ns * 1e-9 if received_ns else time.time()
        self.clock = (msg.clock.sec + msg.clock.nanosec * 1e-9, wall)

    def _on_chunk(self, msg: object) -> None:
        if self.window_start is None and self.clock[1]:  # once a /clock has come
            self.window_start, self.wall_start = self.clock
        if self.recording():
            self.latencies.append(float(msg.inference_latency))

    def _on_diagnostics(self, msg: object) -> None:
        for status in msg.status:
            self.executor_counters.add(
                self.now(), status.name, {kv.key: kv.value for kv in status.values}
            )

    def _on_success(self, msg: object) -> None:
        if self.recording():
            self.success = self.success or bool(msg.data)


def add_real_time_factor(parser: argparse.ArgumentParser) -> None:
    """--real-time-factor: aloha_sim's max_real_time_factor (demo and eval_sim)."""
    parser.add_argument(
        '--real-time-factor',
        type=float,
        default=load_params()[SIM]['max_real_time_factor'],
        help="aloha_sim's max_real_time_factor, in (0, 1]: below 1 the sim "
        'waits for the wall clock, so inference costs fewer sim seconds; '
        "0.2 turns this 2-core CPU's ~60 ms into ~12 ms, about a GPU's "
        '(default: config/params.yaml, %(default)s)',
    )


def check_real_time_factor(parser: argparse.ArgumentParser, value: float) -> None:
    if problem := fraction(value):  # aloha_sim's own check, up front
        parser.error(f'--real-time-factor {problem}, got {value}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='demo', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--task',
        default='put green pepper into pot',
        help='language instruction (default: %(default)s)',
    )
    parser.add_argument(
        '--scene', default='put_x_into_pot', help='simulation scene (default: %(default)s)'
    )
    parser.add_argument(
        '--duration',
        type=float,
        default=20.0,
        help='sim seconds to run the policy (default: %(default)s)',
    )
    parser.add_argument(
        '--checkpoint',
        default=None,
        help='policy checkpoint directory (default: the best available)',
    )
    parser.add_argument('--device', default='cpu', help='torch device (default: cpu)')
    add_real_time_factor(parser)
    parser.add_argument(
        '--out',
        type=Path,
        default=REPO_ROOT / 'runs',
        help='where runs/<timestamp>/ goes (default: %(default)s)',
    )
    parser.add_argument(
        '--startup-timeout',
        type=float,
        default=180.0,
        help='wall seconds to wait for the first chunk (default: %(default)s)',
    )
    args = parser.parse_args(argv)
    sigterm_as_ctrl_c()
    if args.duration <= 0:
        parser.error(f'--duration {args.duration} must be > 0')
    check_real_time_factor(parser, args.real_time_factor)

    run_dir = args.out / time.strftime('%Y%m%d-%H%M%S')
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint, trained = choose_checkpoint(args.checkpoint, args.scene, run_dir)
    if not trained:
        print(
            'demo: no trained checkpoint for this scene; running an UNTRAINED random-weight '
            'policy (expect no success). Pass --checkpoint or train one (docs/training.md).',
            flush=True,
        )
    nodes = resolve_graph(
        {
            'task': args.task,
            'scene': args.scene,
            'use_sim': 'true',
            'checkpoint': str(checkpoint),
            'device': args.device,
        }
    )
    for spec in nodes:
        if spec.name == 'chunk_executor':
            spec.parameters['diagnostics_period'] = DIAGNOSTICS_PERIOD_S
        elif spec.name == SIM:
            spec.parameters['max_real_time_factor'] = args.real_time_factor

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    context = Context()
    rclpy.init(context=context)
    monitor = DemoMonitor(context, run_dir)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(monitor.node)
    graph = GraphProcesses()
    status = 0
    try:
        with tempfile.TemporaryDirectory(prefix='demo_params_') as params_dir:
            for spec in nodes:
                graph.start(spec, node_command(spec, Path(params_dir)))
            status = _run_window(monitor, executor, graph, args)
    except (KeyboardInterrupt, RuntimeError) as error:
        if not interrupted(error):
            raise
        print('demo: interrupted; writing what was recorded', flush=True)
        status = 130
    finally:
        graph.stop_all()
        monitor.video.close()
    report = _build_report(monitor, args, checkpoint, trained)
    write_report(run_dir / 'report.json', report)
    if monitor.joints.commanded and monitor.joints.measured:
        monitor.joints.plot(run_dir / 'joints.png', f'{args.task!r} ({args.scene})')
    executor.shutdown()
    monitor.node.destroy_node()
    context.try_shutdown()
    print(
        '\n'.join(
            [
                'demo summary:',
                *('  ' + line for line in summary_lines(report)),
                f'  wrote {run_dir}/report.json, cameras.mp4, joints.png',
            ]
        ),
        flush=True,
    )
    return status


def _run_window(
    monitor: DemoMonitor, executor: object, graph: GraphProcesses, args: argparse.Namespace
) -> int:
    """Spin until `duration` sim seconds after the first chunk, then one more diagnostics."""
    deadline = time.monotonic() + args.startup_timeout
    while monitor.window_start is None:
        executor.spin_once(timeout_sec=0.05)
        if graph.exited() or time.monotonic() > deadline:
            print(
                f'demo: no action chunk within {args.startup_timeout:.0f} s; '
                f'exited nodes: {graph.exited()}',
                file=sys.stderr,
                flush=True,
            )
            return 1
    end = monitor.window_start + args.duration
    while monitor.now() < end + 2 * DIAGNOSTICS_PERIOD_S:
        executor.spin_once(timeout_sec=0.05)
        if graph.exited():
            print(f'demo: node(s) exited: {graph.exited()}', file=sys.stderr, flush=True)
            return 1
        if monitor.clock[0] >= end and monitor.window_end is None:
            monitor.window_end, monitor.wall_end = monitor.clock
    return 0


def _build_report(
    monitor: DemoMonitor, args: argparse.Namespace, checkpoint: Path, trained: bool
) -> dict:
    start = monitor.window_start or 0.0
    end = monitor.window_end if monitor.window_end is not None else monitor.now()
    wall_end = monitor.wall_end or monitor.clock[1]
    sim_seconds = max(end - start, 0.0) if monitor.window_start is not None else 0.0
    wall_seconds = max(wall_end - monitor.wall_start, 0.0) if monitor.wall_start else 0.0
    return {
        'instruction': args.task,
        'scene': args.scene,
        'checkpoint': str(checkpoint),
        'policy_trained': trained,
        'sim_seconds': round(sim_seconds, 3),
        'wall_seconds': round(wall_seconds, 3),
        'real_time_factor': round(sim_seconds / wall_seconds, 3) if wall_seconds else 0.0,
        'ticks': monitor.commands_in_window,
        'control_rate_hz': round(monitor.commands_in_window / sim_seconds, 2)
        if sim_seconds
        else 0.0,
        # From the first chunk on: while the model loads, the executor holds the pose and
        # counts stalls, which is not part of the measured run.
        'stalled_ticks': monitor.executor_counters.change('stalls', start, end),
        'clamped_ticks': monitor.executor_counters.change('clamped_commands', start, end),
        'waiting_ticks': monitor.executor_counters.change('waits', start, end),
        **monitor.executor_counters.safety_at_or_after(end),
        'chunks': len(monitor.latencies),
        'inference_latency_s': latency_stats(monitor.latencies),
        'success': monitor.success,
        'video_frames': monitor.video.frames,
    }


if __name__ == '__main__':
    sys.exit(main())
