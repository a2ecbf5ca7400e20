"""`make train-sim`: demos -> training set -> policy -> open-loop evaluation, for one sim scene.

    python -m aloha_bringup.recipes.train_sim --scene put_x_into_pot
    python -m aloha_bringup.recipes.train_sim --scene put_x_into_pot --no-film  # FiLM ablation
    python -m aloha_bringup.recipes.train_sim --scene transfer_cube \
        --install checkpoints/transfer_cube
    python -m aloha_bringup.recipes.train_sim --scene put_x_into_pot --recipe grounded  # language

Four or five stages, each the project's own command in its own process (so this is exactly what
a user would type by hand, and each stage's progress bar shows):
  1. record_demos: scripted episodes recorded through the ROS graph as rosbag2 MCAP bags
     (skipped when <out>/demos already holds a finished recording, or with --demos DIR);
  2. with --pretrain-vision, pretrain_vision: the vision backbone learns to localise the scene's
     objects on rendered layouts (skipped when <out>/vision/backbone.pt exists);
  3. with --grounding, render_grounding: views of many layouts for grounding co-training
     (skipped when <out>/grounding/grounding.npz exists); convert: bags -> training set;
  4. train: the `small` preset (or --preset), --steps x --batch-size, from random weights or
     from the pretrained backbone, kept frozen (--pretrain-vision, or --init-vision FILE to
     reuse one), co-trained on the grounding views with --grounding;
  5. evaluate: open-loop L1 on the run's held-out episodes, with plots.
`--recipe grounded` (the policy that goes for the instructed object; about 4 h here) records
144 demos, pretrains the vision backbone and renders grounding views, then trains in four
stages, each starting from the last (train --init-policy): grounding co-training on the first
36 demos with the backbone frozen (4000 steps, resumed to 6000); all 144 demos at half the
learning rate and half the grounding weight (4000); the same with DINOv2 + SigLIP trainable
(3000); the same again at lr 1e-4 (2400), which buys the grasp precision; --recipe-steps sets
the five step counts.

Writes <out>/train_sim.json: every stage's command and wall time. --install copies the final
checkpoint to a folder (checkpoints/<scene> is what `make demo` and `make eval-sim` pick up).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from aloha_bringup.demo import REPO_ROOT
from aloha_bringup.recipes.stages import (
    GROUNDED_EPISODES,
    GROUNDED_START_EPISODES,
    GROUNDED_STEPS,
    stage_commands,
    vision_source,
)
from aloha_sim.scenes import SCENES
from oft_policy_node.model.config import PRESETS

INTERRUPTED = 130  # the exit code of a stage stopped by Ctrl-C (its own checkpoint is saved)
SUMMARY_FILE = 'train_sim.json'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='train_sim', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--scene',
        default='put_x_into_pot',
        choices=list(SCENES),
        help='simulation scene (default: %(default)s)',
    )
    parser.add_argument(
        '--recipe',
        choices=('plain', 'grounded'),
        default='plain',
        help='plain: one training stage (the options below); grounded: '
        'pretrained vision, grounding co-training and staged training, the '
        'policy that follows language (see above; default: %(default)s)',
    )
    parser.add_argument(
        '--episodes',
        type=int,
        default=None,
        help=f'scripted demos to record (default: 36; grounded: {GROUNDED_EPISODES})',
    )
    parser.add_argument(
        '--start-episodes',
        type=int,
        default=GROUNDED_START_EPISODES,
        help='grounded: the first stage trains on the first this many demos '
        '(default: %(default)s)',
    )
    parser.add_argument(
        '--recipe-steps',
        type=int,
        nargs=5,
        default=GROUNDED_STEPS,
        metavar=('FIRST', 'RESUMED_TO', 'FROZEN', 'UNFROZEN', 'POLISH'),
        help='grounded: the steps of its stages (default: %(default)s)',
    )
    parser.add_argument(
        '--grounding-layouts',
        type=int,
        default=6000,
        help='layouts render_grounding renders (default: %(default)s)',
    )
    parser.add_argument(
        '--demo-seed',
        type=int,
        default=1000,
        help='seed of the first demo; demo k uses seed+k (default: %(default)s; '
        'eval-sim seeds start at 0, so no evaluated layout was a demo)',
    )
    parser.add_argument(
        '--demos', type=Path, default=None, help='reuse a record_demos folder instead of recording'
    )
    parser.add_argument(
        '--preset',
        default='small',
        choices=sorted(PRESETS),
        help='model preset (default: %(default)s; small-112: 112 px cameras, 1.7x the step time)',
    )
    parser.add_argument('--no-film', action='store_true', help='the FiLM ablation')
    parser.add_argument(
        '--start-repeats',
        type=int,
        default=None,
        help='train on the first second of every demo this many times per epoch '
        '(default: 1; grounded: 8; see train --help)',
    )
    vision = parser.add_mutually_exclusive_group()
    vision.add_argument(
        '--pretrain-vision',
        action='store_true',
        help='pretrain the vision backbone to localise objects first (about 15 '
        'min), as the paper starts from pretrained DINOv2/SigLIP',
    )
    vision.add_argument(
        '--init-vision',
        type=Path,
        metavar='BACKBONE_PT',
        help="start from this pretrain_vision backbone (e.g. another run's "
        '<out>/vision/backbone.pt, for an ablation on the same one)',
    )
    parser.add_argument(
        '--grounding',
        action='store_true',
        help='co-train "where is the named object" on rendered views (about 2 '
        'min to render, 2x the step time; see train --help)',
    )
    parser.add_argument(
        '--steps', type=int, default=7200, help='optimizer steps (default: %(default)s)'
    )
    parser.add_argument('--batch-size', type=int, default=8, help='(default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='training seed (default: %(default)s)')
    parser.add_argument(
        '--val-every',
        type=int,
        default=200,
        help='validation and checkpoint interval (default: %(default)s)',
    )
    parser.add_argument(
        '--out',
        type=Path,
        default=None,
        help='run folder (default: runs/train_sim/<scene>[-grounded][-nofilm])',
    )
    parser.add_argument(
        '--resume', action='store_true', help='continue an interrupted training stage'
    )
    parser.add_argument(
        '--install',
        type=Path,
        default=None,
        help='copy the final checkpoint here (e.g. checkpoints/<scene>)',
    )
    args = parser.parse_args(argv)
    grounded = args.recipe == 'grounded'
    if args.episodes is None:
        args.episodes = GROUNDED_EPISODES if grounded else 36
    if args.start_repeats is None:
        args.start_repeats = 8 if grounded else 1
    for name in (
        'episodes',
        'steps',
        'batch_size',
        'val_every',
        'start_repeats',
        'start_episodes',
        'grounding_layouts',
    ):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if grounded and args.start_episodes > args.episodes:
        parser.error(f'--start-episodes {args.start_episodes} exceeds --episodes {args.episodes}')
    first, resumed_to, *later = args.recipe_steps
    if grounded and not (1 <= first <= resumed_to and min(later) >= 1):
        parser.error(
            f'--recipe-steps {args.recipe_steps}: need 1 <= FIRST <= RESUMED_TO and '
            'FROZEN, UNFROZEN, POLISH >= 1'
        )
    if args.out is None:
        args.out = (
            REPO_ROOT
            / 'runs'
            / 'train_sim'
            / (
                args.scene
                + ('-grounded' if grounded else '')
                + ('-nofilm' if args.no_film else '')
            )
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    demos = args.demos if args.demos is not None else out / 'demos'
    summary = {
        'scene': args.scene,
        'preset': args.preset,
        'film': not args.no_film,
        'vision': vision_source(args),
        'recipe': args.recipe,
        'grounding': args.grounding or args.recipe == 'grounded',
        'steps': list(args.recipe_steps) if args.recipe == 'grounded' else args.steps,
        'batch_size': args.batch_size,
        'stages': {},
    }
    started = time.monotonic()
    for stage, command in stage_commands(args, out, demos).items():
        print(f'train_sim: [{stage}] {shlex.join(command)}', flush=True)
        t0 = time.monotonic()
        code = subprocess.call(command)
        summary['stages'][stage] = {
            'command': shlex.join(command),
            'wall_s': round(time.monotonic() - t0, 1),
            'exit': code,
        }
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + '\n')
        if code == INTERRUPTED:
            print(
                f'train_sim: stage {stage} interrupted; the same command with --resume '
                'continues it (finished stages are kept).',
                file=sys.stderr,
            )
            return code
        if code != 0:
            print(
                f'train_sim: stage {stage} failed with exit code {code}; see its output '
                f'above. Fix it and re-run (finished stages are kept; add --resume to '
                f'continue training).',
                file=sys.stderr,
            )
            return code
    summary['total_wall_s'] = round(time.monotonic() - started, 1)
    if args.install is not None:
        if args.install.exists():
            shutil.rmtree(args.install)
        shutil.copytree(out / 'train' / 'final', args.install)
        summary['installed'] = str(args.install)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + '\n')
    print(
        f'train_sim: done in {summary["total_wall_s"] / 60:.1f} min; final checkpoint '
        f'{out / "train" / "final"}; open-loop results in {out / "evaluate"}',
        flush=True,
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
