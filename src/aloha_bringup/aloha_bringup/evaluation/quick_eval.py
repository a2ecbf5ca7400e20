r"""quick_eval: screen a checkpoint in seconds, policy and MuJoCo in one process, no ROS.

    python -m aloha_bringup.evaluation.quick_eval --checkpoint runs/pot/final \
        --scene put_x_into_pot --episodes-per-instruction 4 --seed 0 --max-seconds 12

The same episodes as eval_sim (seed S + k, instructions interleaved, the same language-following
measure), but each chunk is predicted from the state at the tick it starts and all its rows are
played (the `sync` rule without its pause) with no transport, no inference latency and no
executor safety layer. It answers "is this checkpoint worth a full eval-sim?" in about 13 s
for 12 episodes instead of 5 min; only `eval_sim` measures the deployed system.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aloha_bringup.evaluation.closed_loop_metrics import StateSample, episode_measures, summarize
from aloha_bringup.evaluation.episodes import (
    EpisodePlan,
    add_episode_arguments,
    check_episode_arguments,
    episode_plans,
)
from aloha_sim.layout_views import proprio
from aloha_sim.physics import AlohaSim
from oft_policy_node import robot
from oft_policy_node.model.policy import OftPolicy

TICK_S = 1.0 / robot.CONTROL_RATE_HZ


def run_episode(
    sim: AlohaSim,
    policy: OftPolicy,
    plan: EpisodePlan,
    max_seconds: float,
    approach_distance: float,
) -> dict:
    """One episode; a record with eval_sim's per-episode keys (no stalls or clamps here)."""
    started = time.perf_counter()
    sim.reset(plan.seed, plan.instruction)
    substeps = max(round(TICK_S / sim.timestep), 1)
    samples, latencies, chunks = [], [], 0

    def over() -> bool:
        # An unstable sim has reset itself (time included): the episode ends there, failed.
        return sim.success() or sim.unstable or sim.time >= max_seconds - 1e-9

    while not over():
        images = {camera: sim.render(camera) for camera in policy.config.camera_names}
        t0 = time.perf_counter()
        chunk = policy.predict_action_chunk(images, proprio(sim), plan.instruction)
        latencies.append(round(time.perf_counter() - t0, 4))
        chunks += 1
        for row in chunk:
            for arm in robot.ARMS:
                command = row[robot.arm_columns(arm)]
                sim.set_command(arm, np.r_[command[:6], robot.normalized_to_motor(command[6])])
            sim.step(substeps)
            state = sim.state()
            samples.append(StateSample(round(sim.time, 4), state['grasp'], state['objects']))
            if over():
                break
    success = sim.success()
    return {
        'index': plan.index,
        'instruction': plan.instruction,
        'seed': plan.seed,
        'success': success,
        'success_time_s': round(sim.time, 3) if success else None,
        **episode_measures(sim.scene, plan.instruction, samples, approach_distance),
        'stalled_ticks': 0,
        'clamped_ticks': 0,
        'waiting_ticks': 0,
        'tracking_faults': None,
        'tracking_error_peak': None,
        'stale_events': None,
        'future_chunks': None,
        'held_ticks': None,
        'chunks': chunks,
        'inference_latencies_s': latencies,
        'sim_seconds': round(sim.time, 3),
        'sim_unstable': sim.unstable,
        'wall_seconds': round(time.perf_counter() - started, 3),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='quick_eval',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('--checkpoint', required=True, help="policy folder (a run's final)")
    add_episode_arguments(parser, episodes=4, max_seconds=12.0, image_size=(120, 160))
    parser.add_argument('--out', type=Path, help='write the records and summary as JSON here')
    args = parser.parse_args(argv)
    check_episode_arguments(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        policy = OftPolicy.from_pretrained(args.checkpoint).eval()
    except (FileNotFoundError, ValueError) as exc:
        print(f'quick_eval: cannot load {args.checkpoint}: {exc}', file=sys.stderr)
        return 2
    sim = AlohaSim(args.scene, args.image_height, args.image_width)
    unknown = [i for i in sim.scene.instructions() if i not in policy.instructions]
    if unknown:
        print(
            f'quick_eval: warning: {args.checkpoint} was not trained on {unknown}', file=sys.stderr
        )
    plans = episode_plans(sim.scene.instructions(), args.episodes_per_instruction, args.seed)
    episodes = []
    try:
        for plan in plans:
            record = run_episode(sim, policy, plan, args.max_seconds, args.approach_distance)
            episodes.append(record)
            approach = record['first_approach']
            print(
                f'seed {plan.seed} {plan.instruction!r}: success {record["success"]}, first '
                f'approach {approach["object"] if approach else None}, closest to '
                f'{record["target_object"]} {record["target_closest_m"]} m',
                flush=True,
            )
    finally:
        sim.close()
    result = {
        'scene': args.scene,
        'checkpoint': str(args.checkpoint),
        'seeds': [p.seed for p in plans],
        'max_seconds': args.max_seconds,
        'approach_distance_m': args.approach_distance,
        'overall': summarize(episodes),
        'episodes': episodes,
    }
    overall = result['overall']
    print(
        f'quick_eval: {overall["successes"]}/{overall["episodes"]} successes, language '
        f'following {overall["followed_language"]} ({overall["approached"]} approached), '
        f'closest to the target {overall["target_closest_m_median"]} m (median)'
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
