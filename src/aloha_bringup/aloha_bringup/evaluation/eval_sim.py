"""`make eval-sim`: closed-loop evaluation of a policy in the simulation, through the ROS graph.

    python -m aloha_bringup.evaluation.eval_sim --checkpoint checkpoints/put_x_into_pot \\
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
fraction of wall time) shows how the same policy does on faster hardware, and `--chunk-latency`
(each chunk held until its observation is that many sim seconds old) how it does at a given
latency, e.g. the paper's 0.32 s.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from aloha_bringup.demo import (
    DIAGNOSTICS_PERIOD_S,
    REPO_ROOT,
    add_real_time_factor,
    check_real_time_factor,
    choose_checkpoint,
)
from aloha_bringup.evaluation.closed_loop_metrics import (
    language_task,
    summarize,
    summarize_by_instruction,
)
from aloha_bringup.evaluation.demo_report import write_report
from aloha_bringup.evaluation.episode_runner import EXECUTOR, Evaluation
from aloha_bringup.evaluation.episodes import (
    add_episode_arguments,
    check_episode_arguments,
    episode_plans,
)
from aloha_bringup.evaluation.eval_monitor import SIM
from aloha_bringup.graph import NodeSpec, load_params, resolve_graph
from aloha_sim.scenes import get_scene
from oft_policy_node import robot
from oft_policy_node.child_process import interrupted, sigterm_as_ctrl_c
from oft_policy_node.runtime.chunk_queue import MERGE_RULES


def reproduce_command(args: argparse.Namespace, checkpoint: Path) -> str:
    """The command line that runs the same evaluation again (every option explicit)."""
    return shlex.join(
        [
            'python',
            '-m',
            'aloha_bringup.evaluation.eval_sim',
            '--checkpoint',
            str(checkpoint),
            '--scene',
            args.scene,
            '--episodes-per-instruction',
            str(args.episodes_per_instruction),
            '--seed',
            str(args.seed),
            '--max-seconds',
            str(args.max_seconds),
            '--approach-distance',
            str(args.approach_distance),
            '--device',
            args.device,
            '--image-height',
            str(args.image_height),
            '--image-width',
            str(args.image_width),
            '--merge-rule',
            args.merge_rule,
            '--real-time-factor',
            str(args.real_time_factor),
            '--chunk-latency',
            str(args.chunk_latency),
        ]
    )


def graph_nodes(args: argparse.Namespace, checkpoint: Path, instruction: str) -> list[NodeSpec]:
    nodes = resolve_graph(
        {
            'task': instruction,
            'scene': args.scene,
            'use_sim': 'true',
            'checkpoint': str(checkpoint),
            'device': args.device,
        }
    )
    for spec in nodes:
        if spec.name == SIM:
            spec.parameters.update(
                image_height=args.image_height,
                image_width=args.image_width,
                max_real_time_factor=args.real_time_factor,
            )
        elif spec.name == 'policy_node':
            spec.parameters['image_size'] = [args.image_height, args.image_width]
            spec.parameters['min_chunk_latency'] = args.chunk_latency
        elif spec.name == EXECUTOR:
            spec.parameters['diagnostics_period'] = DIAGNOSTICS_PERIOD_S
            if args.merge_rule is not None:  # else the bringup's, for this checkpoint
                spec.parameters['merge_rule'] = args.merge_rule
    return nodes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='eval_sim', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    params = load_params()
    parser.add_argument(
        '--checkpoint',
        default=None,
        help='policy checkpoint directory (default: checkpoints/<scene> when '
        'trained, else an UNTRAINED random-weight policy)',
    )
    add_episode_arguments(
        parser, episodes=10, max_seconds=20.0, image_size=(robot.IMAGE_HEIGHT, robot.IMAGE_WIDTH)
    )
    parser.add_argument('--device', default='cpu', help='torch device (default: cpu)')
    parser.add_argument(
        '--merge-rule',
        choices=MERGE_RULES,
        default=None,
        help="chunk_executor's merge_rule: prefix splices chunks given the played rows "
        '(real-time chunking), sync plays each chunk whole after a pause for it, commit '
        'plays whole chunks as OFT does on ALOHA (default: config/params.yaml, '
        f'{params[EXECUTOR]["merge_rule"]}, or sync for a checkpoint without an action prefix)',
    )
    add_real_time_factor(parser)
    parser.add_argument(
        '--chunk-latency',
        type=float,
        default=0.0,
        metavar='S',
        help="policy_node's min_chunk_latency: each chunk is published no sooner than S "
        'sim seconds after its observation, as from a policy that slow: 0.32 is the '
        "paper's A100 latency (default: %(default)s, as soon as computed)",
    )
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
        help='wall seconds to wait for the graph to come up: services, model '
        'loaded, first chunk (default: %(default)s)',
    )
    args = parser.parse_args(argv)
    check_episode_arguments(parser, args)
    check_real_time_factor(parser, args.real_time_factor)
    if not args.chunk_latency >= 0.0:
        parser.error(f'--chunk-latency must be >= 0 s, got {args.chunk_latency}')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sigterm_as_ctrl_c()
    scene = get_scene(args.scene)
    run_dir = args.out / time.strftime('%Y%m%d-%H%M%S')
    (run_dir / 'videos').mkdir(parents=True, exist_ok=True)
    checkpoint, trained = choose_checkpoint(args.checkpoint, args.scene, run_dir)
    if not trained:
        print(
            'eval_sim: no trained checkpoint for this scene; evaluating an UNTRAINED '
            'random-weight policy (expect no success).',
            flush=True,
        )
    plans = episode_plans(scene.instructions(), args.episodes_per_instruction, args.seed)
    tasks = [language_task(scene, i) for i in scene.instructions()]
    records: list[dict] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix='eval_sim_params_') as params_dir:
        nodes = graph_nodes(args, checkpoint, plans[0].instruction)
        executor = next(spec for spec in nodes if spec.name == EXECUTOR)
        args.merge_rule = executor.parameters['merge_rule']  # for the report and its command
        evaluation = Evaluation(args, nodes, Path(params_dir), run_dir)
        try:
            progress = tqdm(plans, desc='eval_sim', unit='episode')
            for plan in progress:
                records.append(evaluation.run_episode(plan, first=not records))
                progress.set_postfix(success=summarize(records)['success_rate'])
        except (KeyboardInterrupt, RuntimeError) as error:
            if interrupted(error):
                print('eval_sim: interrupted; writing the episodes finished so far', flush=True)
                status = 130
            else:  # a node or service failed: the episodes so far still count
                print(
                    f'eval_sim: {error}; writing the episodes finished so far',
                    file=sys.stderr,
                    flush=True,
                )
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
        'chunk_latency_s': args.chunk_latency,
        'approach_distance_m': args.approach_distance,
        'chance_language_following': round(tasks[0].chance, 4) if tasks[0] else None,
        'complete': len(records) == len(plans),
        'overall': summarize(records),
        'per_instruction': summarize_by_instruction(records, scene.instructions()),
        'episodes': records,
    }
    write_report(run_dir / 'eval.json', report)
    overall = report['overall']
    print(
        f'eval_sim: {overall["episodes"]} episodes, success rate {overall["success_rate"]}, '
        f'language following {overall["language_following_rate"]} '
        f'(chance {report["chance_language_following"]}), closest to the target '
        f'{overall["target_closest_m_median"]} m (median); wrote {run_dir}/eval.json',
        flush=True,
    )
    return status


if __name__ == '__main__':
    sys.exit(main())
