"""pretrain_vision: teach a from-scratch vision backbone where a scene's objects are.

    python -m aloha_bringup.recipes.pretrain_vision --scene put_x_into_pot --out runs/vision/pot
    python -m oft_training.train ... --init-vision runs/vision/pot/backbone.pt

Renders the top camera over many seeded layouts (arms at the start pose, or moved at random so
they sometimes hide objects), then trains the preset's DINOv2 + SigLIP to regress every object's
table position from the image (see oft_training.vision_pretraining for why). Layout seeds start
at 100000, apart from the demos' (1000+) and eval-sim's (0+). Writes <out>/backbone.pt,
<out>/pretrain_vision.json (settings, held-out error per object in cm, wall times) and
<out>/localisation.png (held-out true vs predicted positions, seen from above).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aloha_bringup.recipes.stages import DEMO_IMAGE_HEIGHT, DEMO_IMAGE_WIDTH
from aloha_sim.layout_views import render_views
from aloha_sim.scenes import SCENES
from oft_policy_node.model.config import PRESETS, get_preset
from oft_training.vision_pretraining import (
    LocalisationSet,
    PretrainSettings,
    pretrain,
    save_backbone,
)

CAMERA = 'cam_high'  # the one view that shows every object from the start pose
FIRST_SEED = 100000
PLOT_LAYOUTS = 120
OUTPUT_FILES = ('backbone.pt', 'pretrain_vision.json', 'localisation.png')


def render_layouts(
    scene: str, count: int, first_seed: int, height: int, width: int
) -> LocalisationSet:
    """`count` top-camera images of seeded layouts and where each object starts."""
    views = render_views(scene, count, first_seed, height, width, (CAMERA,))
    return LocalisationSet(views.images[CAMERA], views.positions, views.objects)


def plot(path: Path, objects: tuple[str, ...], metrics: dict) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    # The first PLOT_LAYOUTS held-out layouts: thousands of points would hide the error lines.
    true = np.asarray(metrics['true'])[:PLOT_LAYOUTS]
    pred = np.asarray(metrics['predicted'])[:PLOT_LAYOUTS]
    fig, ax = plt.subplots(figsize=(7, 5))
    for t, name in enumerate(objects):
        colour = f'C{t}'
        ax.scatter(
            true[:, t, 0],
            true[:, t, 1],
            s=12,
            color=colour,
            label=f'{name}: {metrics["error_cm"][name]:.1f} cm mean error',
        )
        ax.scatter(pred[:, t, 0], pred[:, t, 1], s=12, color=colour, marker='x')
        ax.plot(
            np.stack([true[:, t, 0], pred[:, t, 0]]),
            np.stack([true[:, t, 1], pred[:, t, 1]]),
            color=colour,
            lw=0.4,
            alpha=0.5,
        )
    ax.set(
        xlabel='x (m)',
        ylabel='y (m)',
        aspect='equal',
        title=f'{len(true)} held-out layouts: true (o) and predicted (x) positions',
    )
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog='pretrain_vision',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument('--scene', default='put_x_into_pot', choices=list(SCENES))
    p.add_argument(
        '--preset',
        default='small',
        choices=sorted(p for p in PRESETS if p != 'openvla-7b'),
        help='the policy preset the backbone is for (default: %(default)s)',
    )
    p.add_argument(
        '--layouts',
        type=int,
        default=16000,
        help='layouts to render (default: %(default)s, about 6 ms each; 1 GB)',
    )
    p.add_argument(
        '--steps',
        type=int,
        default=PretrainSettings.steps,
        help='optimizer steps (default: %(default)s: 12 min on two cores for small)',
    )
    p.add_argument(
        '--batch-size',
        type=int,
        default=PretrainSettings.batch_size,
        help='(default: %(default)s)',
    )
    p.add_argument('--lr', type=float, default=PretrainSettings.lr)
    p.add_argument(
        '--seed', type=int, default=FIRST_SEED, help='first layout seed (default: %(default)s)'
    )
    p.add_argument('--out', type=Path, required=True, help='output folder')
    args = p.parse_args(argv)
    for name in ('layouts', 'steps', 'batch_size'):
        if getattr(args, name) < 2:
            p.error(f'--{name.replace("_", "-")} must be >= 2')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = get_preset(args.preset)
    t0 = time.monotonic()
    data = render_layouts(args.scene, args.layouts, args.seed, DEMO_IMAGE_HEIGHT, DEMO_IMAGE_WIDTH)
    render_s = time.monotonic() - t0
    settings = PretrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    backbone, metrics = pretrain(cfg, data, settings)
    train_s = time.monotonic() - t0 - render_s
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in metrics.items() if k not in ('predicted', 'true')}
    save_backbone(args.out / 'backbone.pt', backbone, cfg, data.objects, summary)
    (args.out / 'pretrain_vision.json').write_text(
        json.dumps(
            {
                'scene': args.scene,
                'preset': args.preset,
                'layouts': args.layouts,
                'first_seed': args.seed,
                'camera': CAMERA,
                'settings': settings.__dict__,
                'render_s': round(render_s, 1),
                'train_s': round(train_s, 1),
                **summary,
            },
            indent=2,
        )
        + '\n'
    )
    plot(args.out / 'localisation.png', data.objects, metrics)
    for name in data.objects:
        print(
            f'pretrain_vision: {name}: held-out error {metrics["error_cm"][name]:.1f} cm '
            f'(guessing the mean: {metrics["mean_guess_error_cm"][name]:.1f} cm)'
        )
    print(f'pretrain_vision: wrote {", ".join(str(args.out / f) for f in OUTPUT_FILES)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
