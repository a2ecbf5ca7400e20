"""Import a run folder of the authors' fine-tuning code (moojink/openvla-oft) as a checkpoint.

    python -m oft_policy_node.import_oft RUN_DIR --out DIR [--unnorm-key NAME] [--step N]

RUN_DIR is what vla-scripts/finetune.py saved (runs/<run id>--<step>_chkpt): the LoRA-merged
model shards (or, with --merge_lora_during_training False, --base and lora_adapter/), the
vision backbone with FiLM, the proprio projector, the L1 action head, dataset_statistics.json
and the tokenizer. DIR becomes a checkpoint of this stack that runs the same computation as the
authors' deployment: their sequence layout and image pipeline are recorded in its config
(docs/model.md, "Coming from openvla-oft"). `policy_node checkpoint:=RUN_DIR` reads a run folder
directly with the defaults below; importing once makes later starts faster and lets you choose.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from oft_policy_node.model.openvla_oft_run import ALOHA_CHUNK, RunOptions

DTYPES = {'bfloat16': torch.bfloat16, 'float32': torch.float32}


def import_run(
    run_dir: Path,
    out: Path,
    options: RunOptions,
    instructions: Sequence[str] = (),
    dtype: torch.dtype = torch.bfloat16,
) -> tuple[Path, int]:
    """Write the checkpoint; returns its directory and the number of tensors written."""
    from tqdm import tqdm

    from oft_policy_node.model import checkpoint
    from oft_policy_node.model.openvla_oft_run import collect_run, prepare_run

    run, config, stats, tokenizer = prepare_run(run_dir, options)
    state = {
        name: tensor.to(dtype)
        for name, tensor in tqdm(
            collect_run(run, config, options.base),
            desc='mapping tensors',
            unit=' tensors',
            leave=False,
        )
    }
    path = checkpoint.write_checkpoint(out, config, state, stats, tuple(instructions))
    tokenizer.save(path)
    return path, len(state)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m oft_policy_node.import_oft',
        description=__doc__.split('\n\n')[0],
        epilog=(
            'Then: ros2 launch aloha_bringup oft_bimanual.launch.py checkpoint:=DIR '
            'task:="put green pepper into pot". What is mapped and what differs: '
            'docs/model.md, "Coming from openvla-oft".'
        ),
    )
    parser.add_argument('run', type=Path, help='the run folder (<run id>--<step>_chkpt)')
    parser.add_argument('--out', type=Path, required=True, help='checkpoint directory to write')
    parser.add_argument(
        '--step', help='saved step (a number or "latest"); default: the only one in RUN_DIR'
    )
    parser.add_argument(
        '--unnorm-key',
        help="dataset in dataset_statistics.json (as the authors' --unnorm_key); default: "
        'the only one',
    )
    parser.add_argument(
        '--base',
        type=Path,
        help='the base checkpoint the run was fine-tuned from (openvla/openvla-7b), for runs '
        'saved without merged model shards (--merge_lora_during_training False)',
    )
    parser.add_argument(
        '--instruction',
        action='append',
        default=[],
        help='a task the run was trained on (repeatable); the policy node starts with the '
        'first and accepts only these unless allow_unknown_instructions:=true',
    )
    parser.add_argument(
        '--normalization',
        choices=('bounds', 'bounds_q99'),
        default='bounds',
        help="the run's ACTION_PROPRIO_NORMALIZATION_TYPE (prismatic/vla/constants.py): "
        "ALOHA's is bounds (default), LIBERO's and Bridge's bounds_q99",
    )
    parser.add_argument(
        '--no-center-crop',
        action='store_true',
        help="for runs trained with --image_aug False (the authors' --center_crop False)",
    )
    parser.add_argument(
        '--chunk-size',
        type=int,
        default=ALOHA_CHUNK,
        help="actions per chunk (NUM_ACTIONS_CHUNK; ALOHA's 25): no weight's shape holds it",
    )
    parser.add_argument(
        '--dtype',
        choices=tuple(DTYPES),
        default='bfloat16',
        help="of the written weights (default bfloat16, as the authors' shards)",
    )
    args = parser.parse_args(argv)
    from oft_policy_node.model.checkpoint import CheckpointError

    try:
        options = RunOptions(
            args.step,
            args.unnorm_key,
            args.base,
            args.normalization,
            not args.no_center_crop,
            args.chunk_size,
        )
        path, count = import_run(args.run, args.out, options, args.instruction, DTYPES[args.dtype])
    except (CheckpointError, ValueError, OSError) as exc:
        print(f'import_oft: {exc}', file=sys.stderr)
        return 2
    print(f'import_oft: wrote {count} tensors to {path}')
    print(f'  run it: ros2 launch aloha_bringup oft_bimanual.launch.py checkpoint:={path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
