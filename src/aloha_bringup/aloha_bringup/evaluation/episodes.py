"""The seeded episodes eval_sim and quick_eval run, and the options that choose and judge them
(both tools take the same ones, so their figures compare)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from aloha_bringup.evaluation.closed_loop_metrics import DEFAULT_APPROACH_DISTANCE
from aloha_sim.scenes import SCENES


@dataclass(frozen=True)
class EpisodePlan:
    index: int  # 0-based over the whole run
    instruction: str
    seed: int


def episode_plans(
    instructions: tuple[str, ...], per_instruction: int, seed: int
) -> list[EpisodePlan]:
    """Instructions interleaved (a run cut short stays balanced), episode k gets seed + k."""
    plans = []
    for _ in range(per_instruction):
        for instruction in instructions:
            index = len(plans)
            plans.append(EpisodePlan(index, instruction, seed + index))
    return plans


def add_episode_arguments(
    parser: argparse.ArgumentParser,
    *,
    episodes: int,
    max_seconds: float,
    image_size: tuple[int, int],
) -> None:
    """The options that say which episodes run and how they are judged (eval_sim and
    quick_eval run the same ones); check them with `check_episode_arguments`."""
    parser.add_argument(
        '--scene',
        default='put_x_into_pot',
        choices=list(SCENES),
        help='simulation scene (default: %(default)s)',
    )
    parser.add_argument(
        '--episodes-per-instruction',
        type=int,
        default=episodes,
        help='episodes per instruction of the scene (default: %(default)s)',
    )
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='seed of the first episode; episode k uses seed+k (default: %(default)s)',
    )
    parser.add_argument(
        '--max-seconds',
        type=float,
        default=max_seconds,
        help='sim seconds before an episode counts as failed (default: %(default)s)',
    )
    parser.add_argument(
        '--approach-distance',
        type=float,
        default=DEFAULT_APPROACH_DISTANCE,
        help='grasp point to object centre distance (m) that counts as '
        'approaching it (default: %(default)s)',
    )
    parser.add_argument(
        '--image-height',
        type=int,
        default=image_size[0],
        help='camera image height of sim and policy (default: %(default)s)',
    )
    parser.add_argument(
        '--image-width',
        type=int,
        default=image_size[1],
        help='camera image width of sim and policy (default: %(default)s)',
    )


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
        parser.error(
            f'--image-height/--image-width {args.image_height}x{args.image_width} '
            'must be at least 16 px (the real cameras are 480x640)'
        )
