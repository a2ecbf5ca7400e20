"""The OFT+ model configuration: one frozen dataclass, validated on construction, and presets.

`openvla-7b` carries the real sizes of OpenVLA-OFT+ (DINOv2 ViT-L/14 with registers + SigLIP
SO400M/14 at 224 px, Llama-2-7B); `small` and `tiny` have the same structure at sizes a 2-core
CPU can train (`small`) or test in seconds (`tiny`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from oft_policy_node import robot

TOKENIZERS = ('bytes', 'pretrained')
ACTION_SLOTS = ('learned', 'zeros')
# How the Llama's sequence is laid out and read (network.py): this stack's own, or the one
# moojink/openvla-oft's code computes, for checkpoints imported from it (import_oft.py).
SEQUENCE_LAYOUTS = ('stack', 'openvla_oft')
# How camera frames become model inputs: this stack's resize (processing.py) or the authors'
# deployment pipeline (openvla_oft_images.py), for checkpoints imported from it.
IMAGE_PIPELINES = ('resize', 'openvla_oft')


@dataclass(frozen=True)
class VitConfig:
    """One vision transformer (DINOv2-with-registers or SigLIP vision tower)."""

    hidden_size: int
    num_layers: int  # all blocks; features come from the second-to-last one
    num_heads: int
    intermediate_size: int
    num_registers: int = 0  # DINOv2 register tokens (0 for SigLIP)

    def validate(self, name: str) -> None:
        _positive(self, name, ('hidden_size', 'num_heads', 'intermediate_size'))
        if self.num_layers < 2:
            raise ValueError(
                f'{name}.num_layers={self.num_layers}: need >= 2 (features come '
                'from the second-to-last block)'
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f'{name}.hidden_size={self.hidden_size} is not divisible by '
                f'{name}.num_heads={self.num_heads}'
            )
        if self.num_registers < 0:
            raise ValueError(f'{name}.num_registers={self.num_registers} must be >= 0')


@dataclass(frozen=True)
class LlmConfig:
    """The Llama decoder."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int  # embedding rows (OpenVLA pads Llama-2's 32000 to 32064)
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5

    def validate(self, name: str) -> None:
        _positive(
            self,
            name,
            (
                'hidden_size',
                'num_layers',
                'num_heads',
                'intermediate_size',
                'vocab_size',
                'max_position_embeddings',
            ),
        )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f'{name}.hidden_size={self.hidden_size} is not divisible by '
                f'{name}.num_heads={self.num_heads}'
            )


@dataclass(frozen=True)
class OftConfig:
    """Everything that fixes the network's shapes and behaviour; saved in every checkpoint."""

    name: str
    dino: VitConfig
    siglip: VitConfig
    llm: LlmConfig
    image_size: int = 224  # square model input per camera (pixels)
    patch_size: int = 14
    camera_names: tuple[str, ...] = robot.CAMERAS  # model order: cam_high, left, right wrist
    chunk_size: int = robot.CHUNK_SIZE  # K actions per chunk
    action_dim: int = robot.ACTION_DIM  # D
    proprio_dim: int = robot.ACTION_DIM
    action_head_blocks: int = 2  # residual blocks of the MLP action head
    use_film: bool = True
    # The Llama's K*D action-slot inputs: 'learned', one trained embedding per slot, or
    # 'zeros', the authors' empty inputs, told apart by RoPE positions (network.py), the default
    # since it measured better (docs/model.md).
    action_slots: str = 'zeros'
    # Real-time chunking: the most rows of a chunk that may be given as an action prefix (the
    # targets the robot follows while the model thinks); 0: none, the model as before.
    prefix_steps: int = 0
    crop_scale: float = 0.9  # area kept by the training random crop / inference centre crop
    sequence_layout: str = 'stack'
    image_pipeline: str = 'resize'
    tokenizer: str = 'bytes'  # 'bytes' (no download) or 'pretrained' (from the checkpoint dir)
    num_action_bins: int = 256  # baseline autoregressive decoding only
    lora_rank: int = 0  # 0: every parameter trains (from scratch); >0: LoRA fine-tuning
    lora_alpha: int = 16
    instruction_template: str = 'In: What action should the robot take to {}?\nOut:'
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with checkpoints

    def __post_init__(self) -> None:
        self.dino.validate('dino')
        self.siglip.validate('siglip')
        self.llm.validate('llm')
        if self.dino.intermediate_size % self.dino.hidden_size:
            raise ValueError(
                f'dino.intermediate_size={self.dino.intermediate_size} must be a '
                f'multiple of dino.hidden_size={self.dino.hidden_size} (DINOv2 '
                'sizes its MLP by an integer ratio)'
            )
        _positive(
            self,
            'OftConfig',
            (
                'image_size',
                'patch_size',
                'chunk_size',
                'action_dim',
                'proprio_dim',
                'num_action_bins',
                'lora_alpha',
            ),
        )
        if self.image_size % self.patch_size:
            raise ValueError(
                f'image_size={self.image_size} is not a multiple of patch_size={self.patch_size}'
            )
        if not self.camera_names or len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f'camera_names={self.camera_names!r} must be non-empty and unique')
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f'crop_scale={self.crop_scale} must be in (0, 1]')
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f'tokenizer={self.tokenizer!r}; expected one of {TOKENIZERS}')
        if self.sequence_layout not in SEQUENCE_LAYOUTS:
            raise ValueError(
                f'sequence_layout={self.sequence_layout!r}; expected one of {SEQUENCE_LAYOUTS}'
            )
        if self.image_pipeline not in IMAGE_PIPELINES:
            raise ValueError(
                f'image_pipeline={self.image_pipeline!r}; expected one of {IMAGE_PIPELINES}'
            )
        if self.action_slots not in ACTION_SLOTS:
            raise ValueError(f'action_slots={self.action_slots!r}; expected one of {ACTION_SLOTS}')
        if not 0 <= self.prefix_steps < self.chunk_size:
            raise ValueError(
                f'prefix_steps={self.prefix_steps} must be >= 0 and less than '
                f'chunk_size={self.chunk_size} (at least one row is predicted)'
            )
        if self.lora_rank < 0:
            raise ValueError(f'lora_rank={self.lora_rank} must be >= 0 (0 disables LoRA)')
        if self.action_head_blocks < 0:
            raise ValueError(f'action_head_blocks={self.action_head_blocks} must be >= 0')
        if '{}' not in self.instruction_template:
            raise ValueError(
                f'instruction_template={self.instruction_template!r} needs a {{}} '
                'where the instruction goes'
            )

    @property
    def patches_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def vision_dim(self) -> int:
        """Width of the fused per-patch feature (DINOv2 + SigLIP), 2176 for the real model."""
        return self.dino.hidden_size + self.siglip.hidden_size

    @property
    def num_action_slots(self) -> int:
        return self.chunk_size * self.action_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OftConfig:
        data = dict(data)
        try:
            data['dino'] = VitConfig(**data['dino'])
            data['siglip'] = VitConfig(**data['siglip'])
            data['llm'] = LlmConfig(**data['llm'])
            data['camera_names'] = tuple(data.get('camera_names', robot.CAMERAS))
            # Configs saved before the field existed had learned slots (and carry their weights).
            data.setdefault('action_slots', 'learned')
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise ValueError(f'invalid OftConfig dict: {exc}') from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes: Any) -> OftConfig:
        return dataclasses.replace(self, **changes)


def _positive(obj: object, name: str, fields: tuple[str, ...]) -> None:
    for f in fields:
        value = getattr(obj, f)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f'{name}.{f}={value!r} must be a positive integer')


PRESETS: dict[str, OftConfig] = {
    'openvla-7b': OftConfig(
        name='openvla-7b',
        dino=VitConfig(
            hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, num_registers=4
        ),
        siglip=VitConfig(hidden_size=1152, num_layers=27, num_heads=16, intermediate_size=4304),
        llm=LlmConfig(
            hidden_size=4096,
            num_layers=32,
            num_heads=32,
            intermediate_size=11008,
            vocab_size=32064,
            max_position_embeddings=2048,
            # openvla/openvla-7b's text_config is LlamaConfig's defaults but the vocabulary
            # (moojink/openvla-oft vla-scripts/extern/convert_openvla_weights_to_hf.py lines
            # 152-176): RMSNorm eps 1e-6, not Llama-2's 1e-5.
            rms_norm_eps=1e-6,
        ),
        tokenizer='pretrained',
        lora_rank=32,
    ),
    # Trained from scratch on a CPU, so every parameter trains (lora_rank=0). Sized for steps:
    # the K*D = 350 action slots dominate the Llama's sequence, so its width sets the cost;
    # at 56 px (4 x 4 patches per camera) and width 128 a batch-8 step takes 0.27 s on two
    # cores, 4x less than at 112 px and width 256: 7200 steps take about half an hour alone.
    'small': OftConfig(
        name='small',
        dino=VitConfig(
            hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, num_registers=4
        ),
        siglip=VitConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512),
        llm=LlmConfig(
            hidden_size=128,
            num_layers=4,
            num_heads=4,
            intermediate_size=344,
            vocab_size=515,
            max_position_embeddings=1024,
        ),
        image_size=56,
    ),
    # Seconds per test; LoRA on so tests exercise the paper's fine-tuning structure.
    'tiny': OftConfig(
        name='tiny',
        dino=VitConfig(
            hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, num_registers=4
        ),
        siglip=VitConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
        llm=LlmConfig(
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            intermediate_size=128,
            vocab_size=515,
            max_position_embeddings=1024,
        ),
        image_size=56,
        lora_rank=32,
        # With 2 Llama layers zero slots differ only in the last one (RoPE needs a layer of
        # non-zero states first): 40 steps of the training test stay on the mean-action
        # plateau (loss 0.38) where learned slots leave it.
        action_slots='learned',
    ),
}

# `small` at 112 px (8 x 8 patches per camera): the top camera's vegetables are 2-3 pixel dots
# at 56 px, too faint for a from-scratch ViT to localise from a few dozen demos; at 112 px
# they cover 4x the pixels. A step costs 1.7x `small`'s (the Llama sees 192 patch tokens, not 48).
PRESETS['small-112'] = PRESETS['small'].replace(name='small-112', image_size=112)


def get_preset(name: str) -> OftConfig:
    """The named preset; an unknown name raises ValueError with the closest names."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=2, cutoff=0.3)
        hint = f' did you mean {" or ".join(map(repr, close))}?' if close else ''
        raise ValueError(f'unknown preset {name!r};{hint} available: {sorted(PRESETS)}')
    return PRESETS[name]
