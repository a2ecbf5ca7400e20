r"""quick_eval: screen a checkpoint in seconds, policy and MuJoCo in one process, no ROS.

    python -m aloha_bringup.evaluation.quick_eval --checkpoint runs/pot/final \
        --scene put_x_into_pot --episodes-per-instruction 4 --seed 0 --max-seconds 12

The same episodes as eval_sim (seed S + k, instructions interleaved, the same language-following
measure), but each chunk is predicted from the state at the tick it starts and all its rows are
played (the `sync` rule without its pause) with no transport, no inference latency and no
executor safety layer. It answers "is this checkpoint worth a full eval-sim?" in about 13 s
for 12 episodes instead of 5 min; only `eval_sim` measures the deployed system.

`--prefix-rows d` plays real-time chunking with a latency of d rows instead (a checkpoint
trained with --prefix-steps): the next observation is taken when the chunk has d + 2 rows left,
the d rows after it are played while the model "thinks" and are given to it, and the new chunk
takes over at its row d, as merge_rule prefix does, with the step there faded out over
`--splice-fade` seconds as the executor's splice_fade does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aloha_bringup.evaluation.closed_loop_metrics import (
    CHUNKING_KEYS,
    StateSample,
    episode_measures,
    summarize,
)
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
from oft_policy_node.runtime.chunk_queue import SPLICE_FADE, fade_splice

TICK_S = 1.0 / robot.CONTROL_RATE_HZ


SLACK_ROWS = 2  # policy_node's prefix_slack_rows default


def run_episode(
    sim: AlohaSim,
    policy: OftPolicy,
    plan: EpisodePlan,
    max_seconds: float,
    approach_distance: float,
    prefix_rows: int = 0,
    splice_fade: float = SPLICE_FADE,
) -> dict:
    """One episode; a record with eval_sim's per-episode keys (no stalls or clamps here)."""
    started = time.perf_counter()
    sim.reset(plan.seed, plan.instruction)
    substeps = max(round(TICK_S / sim.timestep), 1)
    samples, latencies, chunks = [], [], 0

    def over() -> bool:
        # An unstable sim has reset itself (time included): the episode ends there, failed.
        return sim.success() or sim.unstable or sim.time >= max_seconds - 1e-9

    def play(rows: np.ndarray) -> None:
        for row in rows:
            if over():
                return
            for arm in robot.ARMS:
                command = row[robot.arm_columns(arm)]
                sim.set_command(arm, np.r_[command[:6], robot.normalized_to_motor(command[6])])
            sim.step(substeps)
            state = sim.state()
            samples.append(StateSample(round(sim.time, 4), state['grasp'], state['objects']))

    def predict(prefix: np.ndarray | None) -> np.ndarray:
        nonlocal chunks
        images = {camera: sim.render(camera) for camera in policy.config.camera_names}
        t0 = time.perf_counter()
        chunk = policy.predict_action_chunk(images, proprio(sim), plan.instruction, prefix=prefix)
        latencies.append(round(time.perf_counter() - t0, 4))
        chunks += 1
        return chunk

    chunk, start = predict(None), 0
    while not over():
        if prefix_rows == 0:
            play(chunk)
            if not over():
                chunk = predict(None)
            continue
        observe = max(len(chunk) - prefix_rows - SLACK_ROWS, start)
        play(chunk[start:observe])
        if over():
            break
        given = chunk[observe : observe + prefix_rows]
        following = predict(given)
        play(given)  # played while the model thinks
        played = chunk[min(observe + prefix_rows, len(chunk) - 1)]  # the old chunk's next row
        chunk = fade_splice(following, prefix_rows, played, splice_fade / TICK_S)
        start = prefix_rows
    success = sim.success()
    return {
        'index': plan.index,
        'instruction': plan.instruction,
        'seed': plan.seed,
        'success': success,
        'success_time_s': round(sim.time, 3) if success else None,
        **episode_measures(
            sim.scene, plan.instruction, samples, success, approach_distance, sim.unstable
        ),
        'stalled_ticks': 0,
        'clamped_ticks': 0,
        'waiting_ticks': 0,
        'tracking_faults': None,
        'tracking_error_peak': None,
        'stale_events': None,
        'future_chunks': None,
        'held_ticks': None,
        **dict.fromkeys(CHUNKING_KEYS),  # no executor: nothing measured them
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
    parser.add_argument(
        '--prefix-rows',
        type=int,
        default=0,
        metavar='D',
        help="real-time chunking at a latency of D rows (at most the checkpoint's "
        'prefix_steps); 0: whole chunks, each predicted at the tick it starts (default)',
    )
    parser.add_argument(
        '--splice-fade',
        type=float,
        default=SPLICE_FADE,
        metavar='S',
        help='with --prefix-rows: seconds over which the step at each switch fades out, as '
        f"the executor's splice_fade (default {SPLICE_FADE}; 0: switch as predicted)",
    )
    parser.add_argument('--out', type=Path, help='write the records and summary as JSON here')
    args = parser.parse_args(argv)
    check_episode_arguments(parser, args)
    if args.prefix_rows < 0:
        parser.error(f'--prefix-rows must be >= 0, got {args.prefix_rows}')
    if not args.splice_fade >= 0:
        parser.error(f'--splice-fade must be >= 0 s, got {args.splice_fade}')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        policy = OftPolicy.from_pretrained(args.checkpoint).eval()
    except (FileNotFoundError, ValueError) as exc:
        print(f'quick_eval: cannot load {args.checkpoint}: {exc}', file=sys.stderr)
        return 2
    if args.prefix_rows > policy.config.prefix_steps:
        print(
            f'quick_eval: --prefix-rows {args.prefix_rows}: {args.checkpoint} takes at most '
            f'{policy.config.prefix_steps} given rows (train --prefix-steps)',
            file=sys.stderr,
        )
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
            record = run_episode(
                sim,
                policy,
                plan,
                args.max_seconds,
                args.approach_distance,
                args.prefix_rows,
                args.splice_fade,
            )
            episodes.append(record)
            approach = record['first_approach']
            print(
                f'seed {plan.seed} {plan.instruction!r}: success {record["success"]}, first '
                f'approach {approach["object"] if approach else None}, closest to '
                f'{record["target_object"]} {record["target_closest_m"]} m, '
                f'{record["failure_mode"]}, still {record["still_seconds"]} s',
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
        'prefix_rows': args.prefix_rows,
        'splice_fade_s': args.splice_fade if args.prefix_rows else None,
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
