r"""train: fine-tune an OFT+ policy (LoRA + FiLM + L1) on a training set written by `convert`.

    train --data datasets/pot --out runs/pot --preset small --steps 20000
    train --data datasets/pot --out runs/pot --preset small --steps 20000 --resume
    train ... --preset small --init-vision runs/vision/pot/backbone.pt  # pretrained encoders
    train ... --preset small --grounding runs/grounding/pot.npz  # + "where is the named object"
    train ... --preset small --init-policy runs/pot/final --data datasets/pot-more  # go on
    # one machine, 8 GPUs (or CPU processes with gloo):
    # (openvla-7b's defaults are the authors' ALOHA recipe: 4 per GPU, 100005 steps, ...)
    torchrun --nproc-per-node 8 -m oft_training.train --preset openvla-7b \
        --base /models/openvla-7b --data datasets/pot --out runs/pot
    # two machines, 8 GPUs each: run on both, with node-rank 0 and 1
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint HOST0:29500 -m oft_training.train ...same options...

Writes <out>/checkpoints/step_N (policy + optimizer, scheduler, step and RNG states: --resume
continues exactly where it stopped, Ctrl-C saves first), <out>/metrics.jsonl, TensorBoard logs
in <out>/tensorboard and the final checkpoint <out>/final, which policy_node loads.
"""

from __future__ import annotations

import argparse
import os
import sys

from oft_policy_node.model.config import ACTION_SLOTS, PRESETS
from oft_training.training.config import TrainConfig
from oft_training.training.loop import run
from oft_training.training.precision import DTYPES, PRECISIONS
from oft_training.training.recipes import CPU_RECIPE, RECIPES, fill_defaults

DEFAULTS = TrainConfig(data='', out='')


def parse_args(argv: list[str] | None) -> TrainConfig:
    p = argparse.ArgumentParser(
        prog='train', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--data', required=True, help='training set folder (from convert)')
    p.add_argument('--out', required=True, help='run folder: checkpoints, logs, final')
    p.add_argument(
        '--preset',
        default=DEFAULTS.preset,
        choices=sorted(PRESETS),
        help='model preset (default: %(default)s)',
    )
    p.add_argument(
        '--no-film',
        action='store_true',
        help='ablation: train the preset without FiLM, so the instruction reaches '
        'the policy only through the LLM prompt (as OpenVLA-OFT without "+")',
    )
    p.add_argument(
        '--action-slots',
        choices=ACTION_SLOTS,
        help="the Llama's action-slot inputs: 'zeros' as the authors (told apart by RoPE "
        "positions only; the default but for 'tiny') or one 'learned' embedding per slot",
    )
    p.add_argument(
        '--prefix-steps',
        type=int,
        default=DEFAULTS.prefix_steps,
        metavar='D',
        help='real-time chunking: give each sample its first d recorded rows, d drawn from '
        '0..D (0 stays in the mix), and train the rows after them; the policy can then be '
        'given what the robot follows while it thinks (merge_rule prefix). 0: off (default)',
    )
    p.add_argument(
        '--base',
        help='base OpenVLA checkpoint folder (safetensors shards + '
        'tokenizer), needed for openvla-7b; small presets start from random weights',
    )
    p.add_argument(
        '--init-vision',
        metavar='BACKBONE_PT',
        help='start DINOv2 + SigLIP from a pretrain_vision backbone.pt (small '
        'presets: stands in for the internet-pretrained encoders of openvla-7b)',
    )
    p.add_argument(
        '--init-policy',
        metavar='DIR',
        help="start every weight from a trained policy folder (a run's final) or "
        'training checkpoint (checkpoints/step_N, whose grounding head comes '
        "along), e.g. to go on with more demos; the new data's statistics "
        'are used, optimizer and schedule start afresh',
    )
    p.add_argument(
        '--freeze-vision',
        action='store_true',
        help='with --init-vision or --init-policy: keep the pretrained DINOv2 + '
        'SigLIP weights fixed (FiLM, projector, LLM and head train), so fitting '
        'the demos cannot wash out the localisation',
    )
    p.add_argument(
        '--start-repeats',
        type=int,
        default=DEFAULTS.start_repeats,
        help="draw the samples of each episode's first --start-seconds this many "
        'times per epoch (default %(default)s): there only the cameras say '
        "which object to reach for, later the arm's pose gives it away",
    )
    p.add_argument(
        '--start-seconds', type=float, default=DEFAULTS.start_seconds, help='(default %(default)s)'
    )
    p.add_argument(
        '--grounding',
        metavar='NPZ',
        help='co-train on a render_grounding set: each step adds as many rendered '
        'views, and the policy must also say where the instructed object is '
        "(stands in for the grounding pretraining of openvla-7b's VLM)",
    )
    p.add_argument(
        '--grounding-weight',
        type=float,
        default=DEFAULTS.grounding_weight,
        help='weight of the grounding L1 against the action L1 (default %(default)s)',
    )
    seven_b = RECIPES['openvla-7b']
    p.add_argument(
        '--steps',
        type=int,
        help=f'optimizer steps (default: {CPU_RECIPE.steps}; openvla-7b: {seven_b.steps}, the '
        "authors' ALOHA recipe)",
    )
    p.add_argument(
        '--batch-size',
        type=int,
        help='global batch (all processes x accumulation); default: '
        f'{CPU_RECIPE.batch}; openvla-7b: {seven_b.batch} per process, as the '
        'authors (8 GPUs: 32)',
    )
    p.add_argument(
        '--grad-accumulation',
        type=int,
        default=DEFAULTS.grad_accumulation,
        help='micro-batches per step and process (default %(default)s)',
    )
    p.add_argument(
        '--lr', type=float, help=f'AdamW learning rate (default: {CPU_RECIPE.lr}, both recipes)'
    )
    p.add_argument(
        '--lr-decay-step',
        type=int,
        help='step at which the learning rate drops x0.1 (default: '
        f'{CPU_RECIPE.decay_fraction:.0%}% of --steps; openvla-7b: {seven_b.decay_step}, or '
        f'{seven_b.decay_fraction:.0%}% of --steps when given)',
    )
    p.add_argument(
        '--weight-decay',
        type=float,
        help=f'AdamW weight decay (default: {CPU_RECIPE.weight_decay}; openvla-7b: '
        f"{seven_b.weight_decay}, torch's AdamW default the authors keep)",
    )
    p.add_argument(
        '--val-fraction',
        type=float,
        default=DEFAULTS.val_fraction,
        help='share of episodes held out for validation (seeded split)',
    )
    p.add_argument('--val-every', type=int, default=DEFAULTS.val_every)
    p.add_argument('--val-samples', type=int, default=DEFAULTS.val_samples)
    p.add_argument('--save-every', type=int, default=DEFAULTS.save_every)
    p.add_argument('--keep-checkpoints', type=int, default=DEFAULTS.keep_checkpoints)
    p.add_argument('--seed', type=int, default=DEFAULTS.seed)
    p.add_argument(
        '--workers',
        type=int,
        default=DEFAULTS.workers,
        help='DataLoader worker processes per training process',
    )
    p.add_argument('--device', default=DEFAULTS.device, help='auto, cpu, cuda')
    p.add_argument(
        '--precision',
        choices=PRECISIONS,
        default=DEFAULTS.precision,
        help='float32, or bfloat16 autocast (CUDA, or a CPU with AVX-512 BF16 / AMX); auto: '
        'bfloat16 on CUDA, float32 on the CPU, where bf16 measured no faster',
    )
    p.add_argument(
        '--trainable-dtype',
        choices=tuple(DTYPES),
        default=DEFAULTS.trainable_dtype,
        help='with --base: dtype of the weights that train (LoRA, FiLM, heads) and so of '
        'their AdamW states; the frozen base weights are bf16 whenever --precision resolves '
        'to bfloat16 (default %(default)s)',
    )
    p.add_argument(
        '--compile',
        action='store_true',
        help='torch.compile the training forward: about a minute to compile, then 1.17x the '
        'samples/s of `small` on a 2-core CPU (1.21x with --precision bfloat16); for long runs',
    )
    p.add_argument(
        '--gradient-checkpointing',
        action='store_true',
        help="recompute the ViT blocks' and Llama layers' activations in backward instead of "
        'keeping them: most of the activation memory for about a third more compute',
    )
    p.add_argument(
        '--fsdp',
        action='store_true',
        help='shard weights, gradients and AdamW states over the processes (FSDP2, '
        'fully_shard per Llama layer and per ViT attention and MLP) for GPUs that cannot hold '
        "a whole bf16 copy each; default DDP, as the authors (torchrun's processes only)",
    )
    p.add_argument(
        '--resume', action='store_true', help='continue from the newest checkpoint in --out'
    )
    args = p.parse_args(argv)
    world_size = int(os.environ.get('WORLD_SIZE', '1'))  # torchrun's, known before the group
    try:
        return TrainConfig(**fill_defaults(vars(args), world_size))
    except ValueError as exc:
        p.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        run(cfg)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as exc:
        print(f'train: error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
