"""`make train-sim`: demos -> training set -> policy -> open-loop evaluation, for one sim scene.

    python -m aloha_bringup.train_sim --scene put_x_into_pot
    python -m aloha_bringup.train_sim --scene put_x_into_pot --no-film   # the FiLM ablation
    python -m aloha_bringup.train_sim --scene transfer_cube --install checkpoints/transfer_cube
    python -m aloha_bringup.train_sim --scene put_x_into_pot --recipe grounded  # language

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
from collections.abc import Callable
from pathlib import Path

from oft_policy_node.model.config import PRESETS

from aloha_bringup.demo import REPO_ROOT
from aloha_bringup.record_demos import bag_name
from aloha_bringup.sim.scenes import SCENES

# Camera size of the recorded demos and of `make eval-sim` for these checkpoints: 4:3 like the
# real 480x640 cameras, small enough to render three of them at 25 Hz on two cores. The model
# resizes them to its preset's input (56 px `small`, 112 px `small-112`).
DEMO_IMAGE_HEIGHT, DEMO_IMAGE_WIDTH = 120, 160
# --recipe grounded: steps of (first stage, resumed to, 144 demos frozen, 144 demos unfrozen,
# polish); demos of the first stage; lr and grounding weight of the later stages (README,
# session 8), lr of the polish stage (session 12).
GROUNDED_STEPS = (4000, 6000, 4000, 3000, 2400)
GROUNDED_EPISODES, GROUNDED_START_EPISODES = 144, 36
GROUNDED_LATER_LR, GROUNDED_LATER_WEIGHT = '2.5e-4', '0.5'
GROUNDED_POLISH_LR = '1e-4'
PYTHON_M = [sys.executable, '-m']  # each stage runs a module of this environment
INTERRUPTED = 130  # the exit code of a stage stopped by Ctrl-C (its own checkpoint is saved)
SUMMARY_FILE = 'train_sim.json'


def stage_commands(args: argparse.Namespace, out: Path, demos: Path) -> dict[str, list[str]]:
    """The command of every stage, in order: record is absent when demos are reused, convert
    when resuming onto a converted training set (the run being resumed was trained on it)."""
    py = PYTHON_M
    commands = {}
    if not (demos / 'summary.json').exists():
        commands['record'] = [*py, 'aloha_bringup.record_demos', '--scene', args.scene,
                              '-n', str(args.episodes), '--seed', str(args.demo_seed),
                              '-o', str(demos), '--image-height', str(DEMO_IMAGE_HEIGHT),
                              '--image-width', str(DEMO_IMAGE_WIDTH)]
    init_vision = args.init_vision
    if pretrains_vision(args):
        init_vision = out / 'vision' / 'backbone.pt'
        if not init_vision.exists():
            commands['pretrain_vision'] = [*py, 'aloha_bringup.pretrain_vision', '--scene',
                                           args.scene, '--preset', args.preset, '--out',
                                           str(init_vision.parent)]
    grounding = out / 'grounding' / 'grounding.npz'
    if (args.grounding or args.recipe == 'grounded') and not grounding.exists():
        commands['render_grounding'] = [*py, 'aloha_bringup.render_grounding', '--scene',
                                        args.scene, '--layouts', str(args.grounding_layouts),
                                        '--out', str(grounding)]
    if not (args.resume and (out / 'dataset' / 'index.json').exists()):
        commands['convert'] = [*py, 'oft_training.convert', str(demos), '--out',
                               str(out / 'dataset'), '--preset', args.preset, '--overwrite']

    def train(data: str, run: str, steps: int, *options: str) -> list[str]:
        return [*py, 'oft_training.train', '--data', str(out / data), '--out', str(out / run),
                '--preset', args.preset, '--steps', str(steps),
                '--batch-size', str(args.batch_size), '--seed', str(args.seed),
                '--val-every', str(args.val_every), '--save-every', str(args.val_every),
                *(['--no-film'] if args.no_film else []),
                '--start-repeats', str(args.start_repeats), *options]

    if args.recipe == 'grounded':
        commands.update(grounded_stages(args, out, demos, init_vision, grounding, train))
    else:
        commands['train'] = train('dataset', 'train', args.steps,
                                  *(['--init-vision', str(init_vision), '--freeze-vision']
                                    if init_vision else []),
                                  *(['--grounding', str(grounding)] if args.grounding else []),
                                  *(['--resume'] if args.resume else []))
    commands['evaluate'] = [*py, 'oft_training.evaluate', '--checkpoint',
                            str(out / 'train' / 'final'), '--data', str(out / 'dataset'),
                            '--run', str(out / 'train'), '--out', str(out / 'evaluate'),
                            '--every', '5']
    return commands


def pretrains_vision(args: argparse.Namespace) -> bool:
    """Whether the run pretrains its own vision backbone: asked for, or the grounded recipe's
    default when no --init-vision is given."""
    return args.pretrain_vision or (args.recipe == 'grounded' and args.init_vision is None)


def vision_source(args: argparse.Namespace) -> str:
    """train_sim.json's account of the vision backbone the policy starts from."""
    if pretrains_vision(args):
        return 'pretrained'
    return str(args.init_vision) if args.init_vision else 'random'


def grounded_stages(args: argparse.Namespace, out: Path, demos: Path, init_vision: Path,
                    grounding: Path, train: Callable[..., list[str]]) -> dict[str, list[str]]:
    """The grounded recipe's convert of its first demos and its five training commands. Why
    stages: on 36 layouts the grounding head first teaches the Llama to look the named object
    up (the loss collapses within a few hundred steps); more demos and trainable encoders
    then buy the action precision, and a last run at a lower learning rate the last
    centimetres a grasp needs. --resume continues the first unfinished stage."""
    first, resumed_to, frozen, unfrozen, polish = args.recipe_steps
    start_bags = [str(demos / bag_name(args.scene, args.demo_seed + k))
                  for k in range(args.start_episodes)]
    stages = {}
    if not (out / 'dataset-start' / 'index.json').exists():
        stages['convert_start'] = [*PYTHON_M, 'oft_training.convert', *start_bags,
                                   '--out', str(out / 'dataset-start'), '--preset', args.preset,
                                   '--overwrite']
    ground = ['--init-vision', str(init_vision), '--freeze-vision', '--grounding',
              str(grounding)]

    def later(lr: str) -> list[str]:
        return ['--grounding', str(grounding), '--lr', lr,
                '--grounding-weight', GROUNDED_LATER_WEIGHT]

    plan = [('train_ground', 'train-ground', 'dataset-start', first, ground),
            ('train_ground_more', 'train-ground', 'dataset-start', resumed_to, ground),
            ('train_demos', 'train-demos', 'dataset', frozen,
             ['--init-policy', checkpoint(out / 'train-ground', resumed_to), '--freeze-vision',
              *later(GROUNDED_LATER_LR)]),
            ('train_unfrozen', 'train-unfrozen', 'dataset', unfrozen,
             ['--init-policy', checkpoint(out / 'train-demos', frozen),
              *later(GROUNDED_LATER_LR)]),
            ('train', 'train', 'dataset', polish,
             ['--init-policy', checkpoint(out / 'train-unfrozen', unfrozen),
              *later(GROUNDED_POLISH_LR)])]
    for stage, run, data, steps, options in plan:
        trained = latest_step(out / run)
        if trained >= steps or (stage == 'train_ground_more' and resumed_to == first):
            continue  # finished earlier (--resume goes on with the next stage), or no resume
        resume = stage == 'train_ground_more' or (args.resume and trained > 0)
        stages[stage] = train(data, run, steps, *options, *(['--resume'] if resume else []))
    return stages


def checkpoint(run: Path, step: int) -> str:
    return str(run / 'checkpoints' / f'step_{step:07d}')


def latest_step(run: Path) -> int:
    """The step of a training run's newest checkpoint (train writes checkpoints/latest), or 0."""
    latest = run / 'checkpoints' / 'latest'
    return int(latest.read_text().strip().removeprefix('step_')) if latest.exists() else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='train_sim', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scene', default='put_x_into_pot', choices=list(SCENES),
                        help='simulation scene (default: %(default)s)')
    parser.add_argument('--recipe', choices=('plain', 'grounded'), default='plain',
                        help='plain: one training stage (the options below); grounded: '
                             'pretrained vision, grounding co-training and staged training, the '
                             'policy that follows language (see above; default: %(default)s)')
    parser.add_argument('--episodes', type=int, default=None,
                        help=f'scripted demos to record (default: 36; grounded: '
                             f'{GROUNDED_EPISODES})')
    parser.add_argument('--start-episodes', type=int, default=GROUNDED_START_EPISODES,
                        help='grounded: the first stage trains on the first this many demos '
                             '(default: %(default)s)')
    parser.add_argument('--recipe-steps', type=int, nargs=5, default=GROUNDED_STEPS,
                        metavar=('FIRST', 'RESUMED_TO', 'FROZEN', 'UNFROZEN', 'POLISH'),
                        help='grounded: the steps of its stages (default: %(default)s)')
    parser.add_argument('--grounding-layouts', type=int, default=6000,
                        help='layouts render_grounding renders (default: %(default)s)')
    parser.add_argument('--demo-seed', type=int, default=1000,
                        help='seed of the first demo; demo k uses seed+k (default: %(default)s; '
                             'eval-sim seeds start at 0, so no evaluated layout was a demo)')
    parser.add_argument('--demos', type=Path, default=None,
                        help='reuse a record_demos folder instead of recording')
    parser.add_argument('--preset', default='small', choices=sorted(PRESETS),
                        help='model preset (default: %(default)s; small-112: 112 px cameras, '
                             '1.7x the step time)')
    parser.add_argument('--no-film', action='store_true', help='the FiLM ablation')
    parser.add_argument('--start-repeats', type=int, default=None,
                        help='train on the first second of every demo this many times per epoch '
                             '(default: 1; grounded: 8; see train --help)')
    vision = parser.add_mutually_exclusive_group()
    vision.add_argument('--pretrain-vision', action='store_true',
                        help='pretrain the vision backbone to localise objects first (about 15 '
                             'min), as the paper starts from pretrained DINOv2/SigLIP')
    vision.add_argument('--init-vision', type=Path, metavar='BACKBONE_PT',
                        help='start from this pretrain_vision backbone (e.g. another run\'s '
                             '<out>/vision/backbone.pt, for an ablation on the same one)')
    parser.add_argument('--grounding', action='store_true',
                        help='co-train "where is the named object" on rendered views (about 2 '
                             'min to render, 2x the step time; see train --help)')
    parser.add_argument('--steps', type=int, default=7200,
                        help='optimizer steps (default: %(default)s)')
    parser.add_argument('--batch-size', type=int, default=8, help='(default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='training seed (default: %(default)s)')
    parser.add_argument('--val-every', type=int, default=200,
                        help='validation and checkpoint interval (default: %(default)s)')
    parser.add_argument('--out', type=Path, default=None,
                        help='run folder (default: runs/train_sim/<scene>[-grounded][-nofilm])')
    parser.add_argument('--resume', action='store_true',
                        help='continue an interrupted training stage')
    parser.add_argument('--install', type=Path, default=None,
                        help='copy the final checkpoint here (e.g. checkpoints/<scene>)')
    args = parser.parse_args(argv)
    grounded = args.recipe == 'grounded'
    if args.episodes is None:
        args.episodes = GROUNDED_EPISODES if grounded else 36
    if args.start_repeats is None:
        args.start_repeats = 8 if grounded else 1
    for name in ('episodes', 'steps', 'batch_size', 'val_every', 'start_repeats',
                 'start_episodes', 'grounding_layouts'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if grounded and args.start_episodes > args.episodes:
        parser.error(f'--start-episodes {args.start_episodes} exceeds --episodes '
                     f'{args.episodes}')
    first, resumed_to, *later = args.recipe_steps
    if grounded and not (1 <= first <= resumed_to and min(later) >= 1):
        parser.error(f'--recipe-steps {args.recipe_steps}: need 1 <= FIRST <= RESUMED_TO and '
                     'FROZEN, UNFROZEN, POLISH >= 1')
    if args.out is None:
        args.out = REPO_ROOT / 'runs' / 'train_sim' / (
            args.scene + ('-grounded' if grounded else '') + ('-nofilm' if args.no_film else ''))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    demos = args.demos if args.demos is not None else out / 'demos'
    summary = {'scene': args.scene, 'preset': args.preset, 'film': not args.no_film,
               'vision': vision_source(args),
               'recipe': args.recipe, 'grounding': args.grounding or args.recipe == 'grounded',
               'steps': list(args.recipe_steps) if args.recipe == 'grounded' else args.steps,
               'batch_size': args.batch_size, 'stages': {}}
    started = time.monotonic()
    for stage, command in stage_commands(args, out, demos).items():
        print(f'train_sim: [{stage}] {shlex.join(command)}', flush=True)
        t0 = time.monotonic()
        code = subprocess.call(command)
        summary['stages'][stage] = {'command': shlex.join(command),
                                    'wall_s': round(time.monotonic() - t0, 1), 'exit': code}
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + '\n')
        if code == INTERRUPTED:
            print(f'train_sim: stage {stage} interrupted; the same command with --resume '
                  'continues it (finished stages are kept).', file=sys.stderr)
            return code
        if code != 0:
            print(f'train_sim: stage {stage} failed with exit code {code}; see its output '
                  f'above. Fix it and re-run (finished stages are kept; add --resume to '
                  f'continue training).', file=sys.stderr)
            return code
    summary['total_wall_s'] = round(time.monotonic() - started, 1)
    if args.install is not None:
        if args.install.exists():
            shutil.rmtree(args.install)
        shutil.copytree(out / 'train' / 'final', args.install)
        summary['installed'] = str(args.install)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + '\n')
    print(f'train_sim: done in {summary["total_wall_s"] / 60:.1f} min; final checkpoint '
          f'{out / "train" / "final"}; open-loop results in {out / "evaluate"}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
