"""The stages of the simulation training recipes as command lines (train_sim runs them).

Each stage is the project's own tool in its own process, so a recipe is exactly what a user
would type by hand; `stage_commands` leaves out what an earlier run already finished.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from aloha_bringup.record_demos import bag_name

PYTHON_M = [sys.executable, '-m']  # each stage runs a module of this environment


def flags(**values: object) -> list[str]:
    """`--name value` words in order (underscores become dashes)."""
    return [
        word
        for name, value in values.items()
        for word in (f'--{name.replace("_", "-")}', str(value))
    ]


# Camera size of the recorded demos and of `make eval-sim` for these checkpoints: 4:3 like the
# real 480x640 cameras, small enough to render three of them at 25 Hz on two cores. The model
# resizes them to its preset's input (56 px `small`, 112 px `small-112`).
DEMO_IMAGE_HEIGHT, DEMO_IMAGE_WIDTH = 120, 160
# --recipe grounded: steps of (first stage, resumed to, 144 demos frozen, 144 demos unfrozen,
# polish); demos of the first stage; lr and grounding weight of the later stages, lr of the
# polish stage (docs/training.md says what each bought).
GROUNDED_STEPS = (4000, 6000, 4000, 3000, 2400)
GROUNDED_EPISODES, GROUNDED_START_EPISODES = 144, 36
GROUNDED_LATER_LR, GROUNDED_LATER_WEIGHT = '2.5e-4', '0.5'
GROUNDED_POLISH_LR = '1e-4'


def stage_commands(args: argparse.Namespace, out: Path, demos: Path) -> dict[str, list[str]]:
    """The command of every stage, in order: record is absent when demos are reused, convert
    when resuming onto a converted training set (the run being resumed was trained on it)."""
    py = PYTHON_M
    commands = {}
    if not (demos / 'summary.json').exists():
        commands['record'] = [
            *py,
            'aloha_bringup.record_demos',
            *flags(
                scene=args.scene,
                episodes=args.episodes,
                seed=args.demo_seed,
                output=demos,
                image_height=DEMO_IMAGE_HEIGHT,
                image_width=DEMO_IMAGE_WIDTH,
            ),
        ]
    init_vision = args.init_vision
    if pretrains_vision(args):
        init_vision = out / 'vision' / 'backbone.pt'
        if not init_vision.exists():
            commands['pretrain_vision'] = [
                *py,
                'aloha_bringup.recipes.pretrain_vision',
                *flags(scene=args.scene, preset=args.preset, out=init_vision.parent),
            ]
    grounding = out / 'grounding' / 'grounding.npz'
    if (args.grounding or args.recipe == 'grounded') and not grounding.exists():
        commands['render_grounding'] = [
            *py,
            'aloha_bringup.recipes.render_grounding',
            *flags(scene=args.scene, layouts=args.grounding_layouts, out=grounding),
        ]
    if not (args.resume and (out / 'dataset' / 'index.json').exists()):
        commands['convert'] = [
            *py,
            'oft_training.convert',
            str(demos),
            *flags(out=out / 'dataset', preset=args.preset),
            '--overwrite',
        ]

    def train(data: str, run: str, steps: int, *options: str) -> list[str]:
        return [
            *py,
            'oft_training.train',
            *flags(
                data=out / data,
                out=out / run,
                preset=args.preset,
                steps=steps,
                batch_size=args.batch_size,
                seed=args.seed,
                val_every=args.val_every,
                save_every=args.val_every,
            ),
            *(['--no-film'] if args.no_film else []),
            *flags(start_repeats=args.start_repeats),
            *options,
        ]

    if args.recipe == 'grounded':
        commands.update(grounded_stages(args, out, demos, init_vision, grounding, train))
    else:
        commands['train'] = train(
            'dataset',
            'train',
            args.steps,
            *(['--init-vision', str(init_vision), '--freeze-vision'] if init_vision else []),
            *(['--grounding', str(grounding)] if args.grounding else []),
            *(['--resume'] if args.resume else []),
        )
    commands['evaluate'] = [
        *py,
        'oft_training.evaluate',
        *flags(
            checkpoint=out / 'train' / 'final',
            data=out / 'dataset',
            run=out / 'train',
            out=out / 'evaluate',
            every=5,
        ),
    ]
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


def grounded_stages(
    args: argparse.Namespace,
    out: Path,
    demos: Path,
    init_vision: Path,
    grounding: Path,
    train: Callable[..., list[str]],
) -> dict[str, list[str]]:
    """The grounded recipe's convert of its first demos and its five training commands. Why
    stages: on 36 layouts the grounding head first teaches the Llama to look the named object
    up (the loss collapses within a few hundred steps); more demos and trainable encoders
    then buy the action precision, and a last run at a lower learning rate the last
    centimetres a grasp needs. --resume continues the first unfinished stage."""
    first, resumed_to, frozen, unfrozen, polish = args.recipe_steps
    start_bags = [
        str(demos / bag_name(args.scene, args.demo_seed + k)) for k in range(args.start_episodes)
    ]
    stages = {}
    if not (out / 'dataset-start' / 'index.json').exists():
        stages['convert_start'] = [
            *PYTHON_M,
            'oft_training.convert',
            *start_bags,
            *flags(out=out / 'dataset-start', preset=args.preset),
            '--overwrite',
        ]
    ground = ['--init-vision', str(init_vision), '--freeze-vision', '--grounding', str(grounding)]

    def later(lr: str) -> list[str]:
        return flags(grounding=grounding, lr=lr, grounding_weight=GROUNDED_LATER_WEIGHT)

    plan = [
        ('train_ground', 'train-ground', 'dataset-start', first, ground),
        ('train_ground_more', 'train-ground', 'dataset-start', resumed_to, ground),
        (
            'train_demos',
            'train-demos',
            'dataset',
            frozen,
            [
                '--init-policy',
                checkpoint(out / 'train-ground', resumed_to),
                '--freeze-vision',
                *later(GROUNDED_LATER_LR),
            ],
        ),
        (
            'train_unfrozen',
            'train-unfrozen',
            'dataset',
            unfrozen,
            ['--init-policy', checkpoint(out / 'train-demos', frozen), *later(GROUNDED_LATER_LR)],
        ),
        (
            'train',
            'train',
            'dataset',
            polish,
            [
                '--init-policy',
                checkpoint(out / 'train-unfrozen', unfrozen),
                *later(GROUNDED_POLISH_LR),
            ],
        ),
    ]
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
