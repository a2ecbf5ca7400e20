"""`train`'s configuration: every option, validated on construction, and the settings a resumed
run must share with the run it resumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from oft_policy_node.model.config import get_preset
from oft_training.training.precision import DTYPES, PRECISIONS

# Settings that must not change when a run resumes (they change the result of every step).
FROZEN_ON_RESUME = (
    'data',
    'preset',
    'no_film',
    'action_slots',
    'prefix_steps',
    'base',
    'init_vision',
    'init_policy',
    'freeze_vision',
    'start_repeats',
    'start_seconds',
    'grounding',
    'grounding_weight',
    'batch_size',
    'lr',
    'lr_decay_step',
    'weight_decay',
    'trainable_dtype',
    'val_fraction',
    'seed',
)
# Compared as resolved paths: `runs/x` and `/repo/runs/x` match.
PATH_SETTINGS = ('data', 'base', 'init_vision', 'init_policy', 'grounding')


@dataclass(frozen=True)
class TrainConfig:
    """Every `train` option; validated on construction."""

    data: str
    out: str
    preset: str = 'tiny'
    no_film: bool = False  # ablation: the preset without FiLM (no language in the vision path)
    action_slots: str | None = None  # 'learned' / 'zeros' instead of the preset's
    prefix_steps: int = 0  # real-time chunking: samples are given 0..prefix_steps first rows
    base: str | None = None  # base OpenVLA checkpoint folder (openvla-7b), else random init
    init_vision: str | None = None  # pretrain_vision backbone.pt: DINOv2 + SigLIP start weights
    init_policy: str | None = None  # a trained policy (or training checkpoint) to start from
    freeze_vision: bool = False  # keep those weights (FiLM maps still train), as LoRA keeps a base
    start_repeats: int = 1  # samples of an episode's first start_seconds are drawn this often
    start_seconds: float = 1.0
    grounding: str | None = None  # render_grounding .npz: co-train "where is the named object"
    grounding_weight: float = 1.0  # its L1 (standardised positions) relative to the action L1
    steps: int = 1000
    batch_size: int = 8  # global: over all processes and accumulation micro-batches
    grad_accumulation: int = 1
    lr: float = 5e-4
    lr_decay_step: int | None = None  # step of the x0.1 decay; None: decay_fraction of `steps`
    decay_fraction: float = 0.8
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    val_every: int = 100
    val_samples: int = 64
    save_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    workers: int = 0
    device: str = 'auto'
    precision: str = 'auto'  # 'float32' / 'bfloat16' autocast; auto: bf16 on CUDA (precision.py)
    trainable_dtype: str = 'float32'  # of the weights that train, and so of AdamW's states
    compile: bool = False  # torch.compile the training forward
    gradient_checkpointing: bool = False  # recompute ViT block / Llama layer activations
    fsdp: bool = False  # shard weights, gradients and AdamW states over the processes (FSDP2)
    resume: bool = False

    def __post_init__(self) -> None:
        get_preset(self.preset)  # unknown preset: "did you mean" error
        for name in (
            'steps',
            'batch_size',
            'grad_accumulation',
            'val_every',
            'val_samples',
            'save_every',
        ):
            if getattr(self, name) < 1:
                raise ValueError(f'{name}={getattr(self, name)} must be >= 1')
        if self.lr <= 0:
            raise ValueError(f'lr={self.lr} must be > 0')
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f'decay_fraction={self.decay_fraction} must be in (0, 1]')
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision={self.precision!r}; expected one of {PRECISIONS}')
        if self.trainable_dtype not in DTYPES:
            raise ValueError(
                f'trainable_dtype={self.trainable_dtype!r}; expected one of {tuple(DTYPES)}'
            )
        if self.workers < 0 or self.keep_checkpoints < 1:
            raise ValueError('workers must be >= 0 and keep_checkpoints >= 1')
        if self.start_repeats < 1 or self.start_seconds < 0:
            raise ValueError(
                f'start_repeats={self.start_repeats} must be >= 1 and '
                f'start_seconds={self.start_seconds} >= 0'
            )
        if self.prefix_steps < 0:
            raise ValueError(f'prefix_steps={self.prefix_steps} must be >= 0')
        if self.grounding_weight <= 0:
            raise ValueError(f'grounding_weight={self.grounding_weight} must be > 0')
        if self.freeze_vision and self.init_vision is None and self.init_policy is None:
            raise ValueError(
                'freeze_vision needs init_vision or init_policy: frozen random '
                'encoders see nothing'
            )
        if self.trainable_dtype != 'float32' and self.base is None:
            raise ValueError(
                'trainable_dtype applies to fine-tuning a base checkpoint (--base); a policy '
                'trained from scratch trains every weight in float32'
            )
        if self.fsdp and self.grounding is not None:
            raise ValueError(
                'fsdp shards the fine-tuning of a base (openvla-7b); grounding co-training is '
                "the small presets' recipe and runs under DDP"
            )
        if self.init_policy is not None and (
            self.base is not None or self.init_vision is not None
        ):
            raise ValueError(
                'init_policy already holds every weight; it cannot be combined '
                'with base or init_vision'
            )

    @property
    def decay_step(self) -> int:
        if self.lr_decay_step is not None:
            return self.lr_decay_step
        return int(self.decay_fraction * self.steps)


def check_resume(saved: dict, cfg: TrainConfig, folder: Path) -> None:
    """Refuse to resume with settings that change every step. A setting a run saved before
    it existed counts as its default, which is what that run used."""
    now = dataclasses.asdict(cfg)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changed = {
        k: (saved.get(k, defaults[k]), now[k])
        for k in FROZEN_ON_RESUME
        if _setting_key(k, saved.get(k, defaults[k])) != _setting_key(k, now[k])
    }
    if changed:
        raise ValueError(
            f'cannot resume from {folder}: settings changed since it was saved '
            f'(saved, now): {changed}'
        )


def _setting_key(name: str, value: object) -> object:
    return str(Path(value).resolve()) if name in PATH_SETTINGS and value else value
