"""Tensor names of the authors' run files -> this stack's (pure: state dicts in, keys out).

The rules, each from the code that writes the names (moojink/openvla-oft at its main branch, peft
0.11.1 and timm 0.9.10 as their pyproject.toml pins):

* DDP: the proprio projector and action head are saved DDP-wrapped, "module." first
  (finetune.py init_module; their loader strips it, `remove_ddp_in_checkpoint`, line 123).
* The action head: prismatic/models/action_heads.py `L1RegressionActionHead.model` is an
  `MLPResNet` (layer_norm1, fc1, mlp_resnet_blocks.N.ffn.{0,1}, layer_norm2, fc2) -> heads.py
  `ActionHead` (the same, blocks.N).
* FiLM: prismatic/models/film_vit_wrapper.py wraps every ViT block, so the block's own tensors
  move under `blocks.N.block.` and the block gains `blocks.N.scale` / `blocks.N.shift` (Linear,
  language width -> ViT width) -> vision.{dino,siglip}_film.{scale,shift}.N. `featurizer` is
  DINOv2, `fused_featurizer` SigLIP (modeling_prismatic.py PrismaticVisionBackbone: timm ids in
  that order; film_vit_wrapper.py's comments have them the other way round).
* peft: a LoRA-wrapped layer X holds X.base_layer.{weight,bias}, X.lora_A.<adapter>.weight
  (r, in) and X.lora_B.<adapter>.weight (out, r) in a module's state dict; an adapter file
  names them base_model.model.<path>.lora_{A,B}.weight. Merged here as peft merges:
  W + alpha / r * B A, for Conv2d (A a conv of the layer's kernel, B 1 x 1) B and A contracted
  over r (peft's Conv2d.get_delta_weight).
* The fused qkv, the layer scales, the position embeddings and the rest of the base names:
  openvla_weights.map_key, as for the base checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping

import torch

from oft_policy_node.model.checkpoint import CheckpointError
from oft_policy_node.model.openvla_weights import SKIPPED, map_key

Mapped = Iterator[tuple[str, torch.Tensor, str]]  # (our key, tensor, source file)

_FILM_NESTING = re.compile(r'(featurizer)\.blocks\.(\d+)\.block\.')
_FILM_MAP = re.compile(
    r'^vision_backbone\.(featurizer|fused_featurizer)\.blocks\.(\d+)\.(scale|shift)\.'
)
_LORA = re.compile(r'^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$')
_ADAPTER_PREFIX = 'base_model.model.'
# peft saves the LM head's own weight with the adapter (save_embedding_layers, as "all-linear"
# put 'lm_head' among the targets): a copy of the base's, not a LoRA weight.
_ADAPTER_LM_HEAD_COPY = 'language_model.lm_head.base_layer.weight'
_HEAD_RENAMES = (
    (re.compile(r'^model\.mlp_resnet_blocks\.'), 'blocks.'),
    (re.compile(r'^model\.'), ''),
)
_COMPONENT_PREFIX = {'proprio_projector': 'proprio_projector', 'action_head': 'action_head'}


def canonical_vision_key(key: str) -> str:
    """A vision tensor name without the FiLM nesting (`blocks.N.block.` -> `blocks.N.`)."""
    return _FILM_NESTING.sub(r'\1.blocks.\2.', key)


def merge_lora(
    base: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float
) -> torch.Tensor:
    """One LoRA pair merged into its layer's weight, in float32."""
    a, b = a.float(), b.float()
    delta = torch.einsum('or,rihw->oihw', b[:, :, 0, 0], a) if a.dim() == 4 else b @ a
    return base.float() + scaling * delta


def merged_state(
    state: Mapping[str, torch.Tensor], source: str, scaling: Callable[[int], float]
) -> dict[str, torch.Tensor]:
    """A module's state dict with its LoRA layers merged into plain X.weight / X.bias;
    scaling(rank) gives alpha / r."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    plain: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if m := _LORA.match(key):
            pairs.setdefault(m['module'], {})[m['ab']] = tensor
        else:
            plain[key.replace('.base_layer.', '.')] = tensor
    for module, ab in pairs.items():
        weight = f'{module}.weight'
        if set(ab) != {'A', 'B'} or weight not in plain:
            raise CheckpointError(f'{source}: incomplete LoRA layer {module!r}')
        plain[weight] = merge_lora(plain[weight], ab['A'], ab['B'], scaling(ab['A'].shape[0]))
    return plain


def base_layout(key: str, tensor: torch.Tensor, source: str) -> Mapped:
    """One tensor under the base OpenVLA names -> our keys (nothing for SigLIP's unused
    attention-pooling head)."""
    if SKIPPED.match(key):
        return
    pairs = map_key(key, tensor)
    if not pairs:
        raise CheckpointError(f'{source}: tensor {key!r} is not part of the OpenVLA-OFT layout')
    for ours, value in pairs:
        yield ours, value, source


def vision_tensors(
    state: Mapping[str, torch.Tensor], source: str, scaling: Callable[[int], float]
) -> Mapped:
    """The FiLM-wrapped vision backbone's state dict (vision_backbone--STEP_checkpoint.pt)."""
    for key, tensor in merged_state(state, source, scaling).items():
        if m := _FILM_MAP.match(key):
            encoder = 'dino' if m[1] == 'featurizer' else 'siglip'
            yield f'vision.{encoder}_film.{m[3]}.{m[2]}.{key[m.end() :]}', tensor, source
        else:
            yield from base_layout(canonical_vision_key(key), tensor, source)


def component_tensors(part: str, state: Mapping[str, torch.Tensor], source: str) -> Mapped:
    """The proprio projector's or action head's state dict -> our keys."""
    prefix = _COMPONENT_PREFIX[part]
    for key, tensor in state.items():
        key = key.removeprefix('module.')
        if part == 'action_head':
            for pattern, replacement in _HEAD_RENAMES:
                key = pattern.sub(replacement, key, count=1)
        yield f'{prefix}.{key}', tensor, source


def adapter_entry(key: str, source: str) -> tuple[str, str] | None:
    """An adapter file's tensor name -> (module under the base names, 'A' or 'B'); None for
    the LM head's saved copy. The ViT modules lose the FiLM wrapper's nesting."""
    name = key.removeprefix(_ADAPTER_PREFIX)
    name = canonical_vision_key(
        name.replace('vision_backbone.vision_backbone.', 'vision_backbone.')
    )
    if name == _ADAPTER_LM_HEAD_COPY:
        return None
    m = _LORA.match(name)
    if not m:
        raise CheckpointError(f'{source}: tensor {key!r} is not a LoRA weight')
    return m['module'], m['ab']
