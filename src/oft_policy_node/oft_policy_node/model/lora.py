"""What trains: LoRA (peft) on the backbones, FiLM / projectors / head fully, and a report.

Following the paper (OpenVLA's `target_modules='all-linear'`), LoRA rank 32, alpha 16 goes on
every linear layer of the pretrained backbone: both ViTs, the vision projector and the Llama
(not its unused LM head). The authors' finetune.py applies peft's "all-linear" to the whole
base VLA (moojink/openvla-oft vla-scripts/finetune.py lines 846-853), the projector's three
linear layers included, and trains in full only what OFT adds: FiLM maps, the proprio
projector, the action slots, the action-prefix embedding and the action head. `lora_rank=0`
(the from-scratch CPU presets) trains every parameter instead.
"""

from __future__ import annotations

from torch import nn

from oft_policy_node.model.config import OftConfig

LORA_TARGET_PARENTS = ('vision.dino.', 'vision.siglip.', 'projector.', 'llm.model.')
FULLY_TRAINED = (
    'vision.dino_film.',
    'vision.siglip_film.',
    'proprio_projector.',
    'action_slots',
    'action_prefix.',
    'action_head.',
)
# Parts in the order of the trainable-parameter table; "base" = OpenVLA's own weights.
PARTS = {
    'dinov2': 'vision.dino.',
    'siglip': 'vision.siglip.',
    'projector': 'projector.',
    'llm': 'llm.',
    'film': ('vision.dino_film.', 'vision.siglip_film.'),
    'proprio': 'proprio_projector.',
    'action_slots': 'action_slots',
    'action_prefix': 'action_prefix.',
    'action_head': 'action_head.',
}
BASE_PARTS = ('dinov2', 'siglip', 'projector', 'llm')


def lora_targets(network: nn.Module) -> list[str]:
    """Full names of every nn.Linear inside the pretrained backbones."""
    return [
        name
        for name, module in network.named_modules()
        if isinstance(module, nn.Linear) and name.startswith(LORA_TARGET_PARENTS)
    ]


def apply_lora(network: nn.Module, cfg: OftConfig) -> None:
    """Inject peft LoRA adapters in place (keys gain `.base_layer` / `.lora_A.default`)."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(
        LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=0.0,
            target_modules=lora_targets(network),
        ),
        network,
    )


def _unused_film(cfg: OftConfig) -> tuple[str, ...]:
    """FiLM maps of the last ViT blocks, which never run (second-to-last block features)."""
    return tuple(
        f'vision.{enc}_film.{kind}.{layers - 1}.'
        for enc, layers in (('dino', cfg.dino.num_layers), ('siglip', cfg.siglip.num_layers))
        for kind in ('scale', 'shift')
    )


def set_trainable(network: nn.Module, cfg: OftConfig) -> None:
    """requires_grad per the rules in the module docstring; unused parameters stay frozen."""
    unused = _unused_film(cfg)
    for name, param in network.named_parameters():
        if name.startswith(unused):
            param.requires_grad_(False)
        elif cfg.lora_rank == 0:
            param.requires_grad_(True)
        else:
            param.requires_grad_('lora_' in name or name.startswith(FULLY_TRAINED))


def _part_of(name: str) -> str:
    for part, prefixes in PARTS.items():
        if name.startswith(prefixes):
            return part
    raise KeyError(f'parameter {name!r} belongs to no known part')


def count_parameters(network: nn.Module) -> dict[str, dict[str, int]]:
    """Per part: total (without LoRA), lora and trainable parameter counts (meta works too)."""
    counts = {part: {'total': 0, 'lora': 0, 'trainable': 0} for part in PARTS}
    for name, param in network.named_parameters():
        row = counts[_part_of(name)]
        row['lora' if 'lora_' in name else 'total'] += param.numel()
        row['trainable'] += param.numel() if param.requires_grad else 0
    return counts


def parameter_table(network: nn.Module) -> str:
    """A printable table of parameters per part, with the paper's Table V groups summed."""
    counts = count_parameters(network)
    lines = [f'{"part":<14}{"params":>16}{"LoRA":>14}{"trainable":>16}']
    for part, row in counts.items():
        lines.append(f'{part:<14}{row["total"]:>16,}{row["lora"]:>14,}{row["trainable"]:>16,}')
    totals = {k: sum(row[k] for row in counts.values()) for k in ('total', 'lora', 'trainable')}
    lines.append(
        f'{"all":<14}{totals["total"]:>16,}{totals["lora"]:>14,}{totals["trainable"]:>16,}'
    )
    base = sum(counts[p]['total'] for p in BASE_PARTS)
    lines.append(
        f'Table V groups: base {base:,}  FiLM {counts["film"]["total"]:,}  '
        f'action head {counts["action_head"]["total"]:,}  '
        f'proprio {counts["proprio"]["total"]:,}'
    )
    return '\n'.join(lines)
