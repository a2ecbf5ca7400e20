"""eval_sim's episode loop: the graph's processes, the monitor node, and one record per
episode (a fresh chunk_executor per episode, started once the policy has caught up with the
reset, so nothing of the previous episode is executed into the next)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from aloha_bringup.demo import DIAGNOSTICS_PERIOD_S
from aloha_bringup.evaluation.closed_loop_metrics import episode_measures
from aloha_bringup.evaluation.demo_report import CameraVideo, latency_stats
from aloha_bringup.evaluation.episodes import EpisodePlan
from aloha_bringup.evaluation.eval_monitor import EvalMonitor
from aloha_bringup.graph import NodeSpec
from aloha_bringup.run_graph import GraphProcesses, node_command
from aloha_sim.scenes import get_scene

EXECUTOR = 'chunk_executor'
# A chunk counts as "of the new episode" when its observation is this much newer than the reset:
# the policy may pair a last pre-reset image with post-reset joint states within its sync window.
FRESH_CHUNK_MARGIN_S = 0.1


class Evaluation:
    """The running graph and the episode loop."""

    def __init__(
        self, args: argparse.Namespace, nodes: list[NodeSpec], params_dir: Path, run_dir: Path
    ) -> None:
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
            self.spin_until(
                monitor.services_ready,
                args.startup_timeout,
                'aloha_sim and policy_node services (policy_node loads its model first)',
            )
        episode = monitor.reset_sim(plan.seed, plan.instruction, self.spin)
        monitor.set_policy_instruction(plan.instruction, self.spin)
        fresh_after = episode['start_time'] + FRESH_CHUNK_MARGIN_S

        def policy_caught_up() -> bool:
            chunk = monitor.latest_chunk
            return chunk is not None and chunk[0] >= fresh_after and chunk[1] == plan.instruction

        self.spin_until(
            policy_caught_up,
            args.startup_timeout if first else 60.0,
            f'chunk for {plan.instruction!r} after the reset',
        )
        video = CameraVideo(self.run_dir / 'videos' / f'episode_{plan.index:03d}.mp4')
        monitor.begin_episode(video)
        self.graph.start(self.executor_spec, self.executor_command)
        self.spin_until(lambda: monitor.window_start is not None, 60.0, 'executor command')
        end = monitor.window_start + args.max_seconds
        self.spin_until(
            lambda: monitor.success_time is not None or monitor.now() >= end,
            args.max_seconds / (0.05 * args.real_time_factor) + 60.0,
            'episode end',
        )  # the sim runs at >= 5 % of its real-time cap
        # The episode ends at `end` in sim time, however late a busy monitor looked; the task
        # states stamped up to it may still be on their way in.
        monitor.window_end, wall_end = min(monitor.now(), end), time.monotonic()
        length = monitor.window_end - monitor.window_start
        self.spin_until(
            lambda: monitor.states and monitor.states[-1].t >= length,
            10 * DIAGNOSTICS_PERIOD_S + 10.0,
            'task state past the episode end',
        )
        # The executor's counters start at zero with its process: its first report after the
        # episode's end holds the episode's totals.
        self.spin_until(
            lambda: monitor.counters.first_at_or_after('stalls', monitor.window_end) is not None,
            10 * DIAGNOSTICS_PERIOD_S + 10.0,
            'executor diagnostics',
        )
        self.graph.stop(EXECUTOR)
        video.close()
        return self._record(plan, episode, wall_end)

    def _record(self, plan: EpisodePlan, episode: dict, wall_end: float) -> dict:
        monitor = self.monitor
        success = monitor.success_time is not None and monitor.success_time <= monitor.window_end
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
            if success
            else None,
            # /task/state has no instability flag: a reset sim shows as its own category.
            **episode_measures(
                get_scene(self.args.scene),
                plan.instruction,
                states,
                success,
                self.args.approach_distance,
            ),
            'state_samples': len(states),
            'stalled_ticks': monitor.counters.first_at_or_after('stalls', monitor.window_end),
            'clamped_ticks': monitor.counters.first_at_or_after(
                'clamped_commands', monitor.window_end
            ),
            'waiting_ticks': monitor.counters.first_at_or_after('waits', monitor.window_end),
            **monitor.counters.safety_at_or_after(monitor.window_end),
            **monitor.counters.chunking_at_or_after(monitor.window_end),
            'chunks': len(monitor.latencies),
            'inference_latency_s': latency_stats(monitor.latencies),
            'inference_latencies_s': monitor.latencies,
            'sim_seconds': round(monitor.window_end - monitor.window_start, 3),
            'wall_seconds': round(wall_end - monitor.wall_start, 3),
            'video': str(monitor.video.path.relative_to(self.run_dir))
            if monitor.video.path.exists()
            else None,
        }

    def close(self) -> None:
        self.graph.stop_all()
        self.executor.shutdown()
        self.monitor.node.destroy_node()
        self.context.try_shutdown()
