"""render_grounding: simulator views for grounding co-training (`train --grounding`).

    python -m aloha_bringup.recipes.render_grounding --scene put_x_into_pot \
        --out runs/grounding/pot.npz
    python -m oft_training.train ... --grounding runs/grounding/pot.npz

Renders every policy camera and reads the arms' proprio over many seeded layouts (arms at the
start pose, or moved at random), and pairs each view with each of the scene's instructions and
the object that instruction names; see oft_training.grounding for why. Layout seeds start at
200000, apart from the demos' (1000+), eval-sim's (0+) and pretrain_vision's (100000+).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from aloha_bringup.recipes.stages import DEMO_IMAGE_HEIGHT, DEMO_IMAGE_WIDTH
from aloha_sim.layout_views import render_views
from aloha_sim.scenes import SCENES, get_scene
from oft_policy_node import robot
from oft_training.grounding import GroundingSet

FIRST_SEED = 200000


def render_grounding(
    scene_name: str,
    count: int,
    first_seed: int,
    height: int = DEMO_IMAGE_HEIGHT,
    width: int = DEMO_IMAGE_WIDTH,
) -> GroundingSet:
    scene = get_scene(scene_name)
    views = render_views(scene_name, count, first_seed, height, width, robot.CAMERAS)
    instructions = scene.instructions()
    return GroundingSet(
        views.images,
        views.proprio,
        views.positions,
        views.objects,
        instructions,
        tuple(views.objects.index(scene.target_object(i)) for i in instructions),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog='render_grounding',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument('--scene', default='put_x_into_pot', choices=list(SCENES))
    p.add_argument(
        '--layouts',
        type=int,
        default=6000,
        help='layouts to render (default: %(default)s: about 2 min, 1 GB)',
    )
    p.add_argument(
        '--seed', type=int, default=FIRST_SEED, help='first layout seed (default: %(default)s)'
    )
    p.add_argument('--out', type=Path, required=True, help='output .npz file')
    args = p.parse_args(argv)
    if args.layouts < 2:
        p.error('--layouts must be >= 2')
    if args.out.suffix != '.npz':
        p.error(f'--out {args.out} must end in .npz')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    data = render_grounding(args.scene, args.layouts, args.seed)
    data.save(args.out)
    print(
        f'render_grounding: {data.views} views x {len(data.instructions)} instructions in '
        f'{time.monotonic() - started:.0f} s -> {args.out}'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
