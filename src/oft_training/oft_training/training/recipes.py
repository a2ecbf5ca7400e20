"""`train`'s defaults per preset: the authors' ALOHA recipe for openvla-7b, the measured CPU
recipe (TrainConfig's own defaults) for the small presets. An option given on the command line
always wins; only the ones left out are filled in here.

The openvla-7b recipe is the authors' ALOHA fine-tuning command (moojink/openvla-oft ALOHA.md,
"Fine-Tuning on ALOHA Robot Data": `torchrun --nproc-per-node X vla-scripts/finetune.py ...
--batch_size 4 --learning_rate 5e-4 --num_steps_before_decay 50000 --max_steps 100005 ...
--lora_rank 32`) with what their finetune.py does with it: the batch is per device (its
FinetuneConfig: "total batch size = batch_size * num GPUs"), AdamW with torch's default weight
decay 0.01 (`AdamW(trainable_params, lr=cfg.learning_rate)`, line 935) and one x0.1 step of
MultiStepLR at `num_steps_before_decay` (lines 941-945). 100005 steps make the step-100000
checkpoint (their save_freq 10000) the last one written.
"""

from __future__ import annotations

from dataclasses import dataclass

from oft_training.training.config import TrainConfig

_CPU = TrainConfig(data='', out='')


@dataclass(frozen=True)
class Recipe:
    steps: int
    lr: float
    weight_decay: float
    decay_fraction: float  # the x0.1 decay at this share of --steps when they are given
    decay_step: int | None  # ... and at this step when they are not (None: the share)
    batch: int
    per_process: bool  # `batch` per process, as the authors count it, else over all of them

    def global_batch(self, world_size: int) -> int:
        return self.batch * world_size if self.per_process else self.batch


CPU_RECIPE = Recipe(
    steps=_CPU.steps,
    lr=_CPU.lr,
    weight_decay=_CPU.weight_decay,
    decay_fraction=_CPU.decay_fraction,
    decay_step=None,
    batch=_CPU.batch_size,
    per_process=False,
)
RECIPES = {
    'openvla-7b': Recipe(
        steps=100_005,
        lr=5e-4,
        weight_decay=0.01,
        decay_fraction=0.5,
        decay_step=50_000,
        batch=4,
        per_process=True,
    )
}


def recipe(preset: str) -> Recipe:
    return RECIPES.get(preset, CPU_RECIPE)


def fill_defaults(options: dict, world_size: int) -> dict:
    """`options` (train's parsed arguments, None where left out) with the preset's recipe
    filled in where an option was not given."""
    chosen = recipe(options['preset'])
    defaults = {
        'steps': chosen.steps,
        'lr': chosen.lr,
        'weight_decay': chosen.weight_decay,
        'decay_fraction': chosen.decay_fraction,
        'batch_size': chosen.global_batch(world_size),
    }
    if options.get('steps') is None and options.get('lr_decay_step') is None:
        defaults['lr_decay_step'] = chosen.decay_step
    return {**options, **{k: v for k, v in defaults.items() if options.get(k) is None}}
