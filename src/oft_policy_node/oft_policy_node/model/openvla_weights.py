"""Load the base OpenVLA checkpoint (`openvla/openvla-7b` layout) onto the OFT+ modules.

The base checkpoint is the authors' Hugging Face export (moojink/openvla-oft,
vla-scripts/extern/convert_openvla_weights_to_hf.py): a directory of safetensors shards whose
keys are

    vision_backbone.featurizer.<timm DINOv2 ViT-L/14 reg4 keys>        -> vision.dino
    vision_backbone.fused_featurizer.<timm SigLIP SO400M/14 keys>      -> vision.siglip
    projector.fc1/fc2/fc3.{weight,bias}                                -> projector
    language_model.model.* / language_model.lm_head.weight             -> llm.model.* / llm.lm_head

(every name and shape: test/data/openvla_7b_tensors.txt). The exporter renames DINOv2's
LayerScale `ls1.gamma` to `ls1.scale_factor`, because transformers rewrites parameter names
containing "gamma" when it loads them; the Prismatic-native and timm spelling `gamma` is read
too. timm fuses q, k, v into one `attn.qkv` (3H, H) tensor: it is split in that order. timm's
DINOv2 position embedding covers the patches only (`no_embed_class`), transformers' has one more
row for CLS: that row is zero, which gives CLS exactly timm's (absent) position term. SigLIP's
attention-pooling head (`attn_pool.*`) is skipped: OpenVLA never uses it. Tensors are streamed
shard by shard into the existing parameters, so a 15 GB checkpoint is never held twice.

Base weights by reference. LoRA fine-tuning leaves the base weights untouched, so a fine-tuned
checkpoint can hold only the tensors fine-tuning changed (`fine_tuned_keys`: LoRA adapters,
FiLM, proprio projector, action slots and head: 0.85 B of 8.37 B parameters for openvla-7b, 1.7 GB
instead of 17 GB in bf16) plus `base_checkpoint.json`, which names the base directory and the
names and byte sizes of its shards, so a moved, deleted or replaced base fails loudly instead
of loading wrong weights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from oft_policy_node.model.checkpoint import CheckpointError
from oft_policy_node.model.lora import FULLY_TRAINED

DINO_PREFIX = 'vision_backbone.featurizer.'
SIGLIP_PREFIX = 'vision_backbone.fused_featurizer.'
SKIPPED = re.compile(r'^vision_backbone\.fused_featurizer\.attn_pool\.')
# Parameters of our modules that the base checkpoint does not have (never used by OpenVLA).
NOT_IN_BASE = ('vision.dino.embeddings.mask_token',)
BASE_PREFIXES = ('vision.dino.', 'vision.siglip.', 'projector.', 'llm.')
REFERENCE_FILE = 'base_checkpoint.json'

_DINO_BLOCK = {
    'norm1': 'norm1',
    'attn.proj': 'attention.o_proj',
    'ls1.scale_factor': 'layer_scale1.lambda1',  # the Hugging Face export
    'ls1.gamma': 'layer_scale1.lambda1',  # Prismatic-native / timm
    'norm2': 'norm2',
    'mlp.fc1': 'mlp.fc1',
    'mlp.fc2': 'mlp.fc2',
    'ls2.scale_factor': 'layer_scale2.lambda1',
    'ls2.gamma': 'layer_scale2.lambda1',
}
_SIGLIP_BLOCK = {
    'norm1': 'layer_norm1',
    'attn.proj': 'self_attn.out_proj',
    'norm2': 'layer_norm2',
    'mlp.fc1': 'mlp.fc1',
    'mlp.fc2': 'mlp.fc2',
}
_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.(.+)\.(weight|bias|gamma|scale_factor)$')


def _vit_targets(
    key: str,
    tensor: torch.Tensor,
    dst: str,
    block_map: dict[str, str],
    attn: str,
    layers: str,
    stem: dict[str, str],
) -> Iterator[tuple[str, torch.Tensor]]:
    """timm ViT key -> (our key, tensor) pairs; qkv yields three."""
    m = _BLOCK_KEY.match(key)
    if m:
        idx, name, kind = m.groups()
        base = f'{dst}.{layers}.{idx}.'
        if name == 'attn.qkv':
            for part, chunk in zip(
                ('q_proj', 'k_proj', 'v_proj'), tensor.chunk(3, dim=0), strict=True
            ):
                yield f'{base}{attn}.{part}.{kind}', chunk
            return
        full = f'{name}.{kind}'
        if full in block_map:  # layer scales map as whole names
            yield base + block_map[full], tensor
        elif name in block_map:
            yield f'{base}{block_map[name]}.{kind}', tensor
        return
    if key in stem:
        yield f'{dst}.{stem[key]}', tensor


def map_key(key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """One base-checkpoint tensor -> the (module key, tensor) pairs it becomes ([] = unknown)."""
    if key.startswith(DINO_PREFIX):
        key = key[len(DINO_PREFIX) :]
        if key == 'pos_embed':  # (1, P, H) -> (1, 1 + P, H), zero row for CLS
            return [
                (
                    'vision.dino.embeddings.position_embeddings',
                    torch.cat([tensor.new_zeros(1, 1, tensor.shape[-1]), tensor], dim=1),
                )
            ]
        stem = {
            'cls_token': 'embeddings.cls_token',
            'reg_token': 'embeddings.register_tokens',  # timm's name, (1, R, H)
            'patch_embed.proj.weight': 'embeddings.patch_embeddings.projection.weight',
            'patch_embed.proj.bias': 'embeddings.patch_embeddings.projection.bias',
            'norm.weight': 'layernorm.weight',
            'norm.bias': 'layernorm.bias',
        }
        return list(
            _vit_targets(
                key, tensor, 'vision.dino', _DINO_BLOCK, 'attention', 'encoder.layer', stem
            )
        )
    if key.startswith(SIGLIP_PREFIX):
        key = key[len(SIGLIP_PREFIX) :]
        if key == 'pos_embed':  # (1, P, H) -> embedding table (P, H)
            return [('vision.siglip.embeddings.position_embedding.weight', tensor[0])]
        stem = {
            'patch_embed.proj.weight': 'embeddings.patch_embedding.weight',
            'patch_embed.proj.bias': 'embeddings.patch_embedding.bias',
            'norm.weight': 'post_layernorm.weight',
            'norm.bias': 'post_layernorm.bias',
        }
        return list(
            _vit_targets(
                key, tensor, 'vision.siglip', _SIGLIP_BLOCK, 'self_attn', 'encoder.layers', stem
            )
        )
    if key.startswith('projector.'):
        return [(key, tensor)]
    if key.startswith('language_model.'):
        return [('llm.' + key[len('language_model.') :], tensor)]
    return []


def resolve_key(key: str, params: dict[str, torch.Tensor]) -> str | None:
    """Our key, or its LoRA-wrapped form (`x.q_proj.base_layer.weight`) once peft injected."""
    if key in params:
        return key
    head, _, leaf = key.rpartition('.')
    wrapped = f'{head}.base_layer.{leaf}'
    return wrapped if wrapped in params else None


def shard_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob('*.safetensors'))
    if not files:
        raise CheckpointError(
            f'{directory}: no *.safetensors shards of a base OpenVLA '
            'checkpoint (expected model-0000x-of-0000y.safetensors)'
        )
    return files


@torch.no_grad()
def load_openvla_base(network: nn.Module, directory: str | Path) -> list[str]:
    """Copy the base weights into `network` (an `OftNetwork`, LoRA or not); returns loaded keys.

    Raises CheckpointError naming shard and tensor on unknown keys, wrong shapes or base
    parameters the checkpoint lacks. FiLM, proprio projector, action slots/head and LoRA keep
    their fresh initialisation: they are what fine-tuning learns. The base parts OpenVLA never
    has (NOT_IN_BASE) are zeroed, so a network built without base init holds no stray memory.
    """
    directory = Path(directory)
    targets = dict(network.state_dict(keep_vars=True))
    loaded: list[str] = []
    for shard in shard_files(directory):
        with safe_open(str(shard), framework='pt') as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if SKIPPED.match(key):
                    continue
                pairs = map_key(key, f.get_tensor(key))
                if not pairs:
                    raise CheckpointError(
                        f'{shard}: tensor {key!r} is not part of the OpenVLA '
                        'base layout (is this an OpenVLA checkpoint?)'
                    )
                for ours, tensor in pairs:
                    name = resolve_key(ours, targets)
                    if name is None:
                        raise CheckpointError(
                            f'{shard}: tensor {key!r} maps to {ours!r}, '
                            'which this model does not have'
                        )
                    if tuple(targets[name].shape) != tuple(tensor.shape):
                        raise CheckpointError(
                            f'{shard}: tensor {key!r} has shape {tuple(tensor.shape)} but '
                            f'{name} is {tuple(targets[name].shape)} (wrong preset?)'
                        )
                    targets[name].copy_(tensor)
                    loaded.append(name)
    missing = sorted(set(base_keys(targets)) - set(loaded))
    if missing:
        raise CheckpointError(
            f'{directory}: base checkpoint lacks {len(missing)} tensors, e.g. {missing[:5]}'
        )
    with torch.no_grad():
        for name in NOT_IN_BASE:
            if name in targets:
                targets[name].zero_()
    return loaded


def base_keys(names: Iterable[str]) -> list[str]:
    """The state-dict keys a base OpenVLA checkpoint supplies (never LoRA adapters)."""
    return [
        k
        for k in names
        if k.startswith(BASE_PREFIXES) and 'lora_' not in k and k not in NOT_IN_BASE
    ]


def fine_tuned_keys(names: Iterable[str]) -> list[str]:
    """Every key except the frozen base weights: what a by-reference checkpoint must hold."""
    names = list(names)
    frozen = {k for k in base_keys(names) if not k.startswith(FULLY_TRAINED)}
    return [k for k in names if k not in frozen]


def _shard_sizes(directory: Path) -> dict[str, int]:
    """{shard file name: bytes}: a cheap fingerprint of a base checkpoint's contents."""
    return {shard.name: shard.stat().st_size for shard in sorted(directory.glob('*.safetensors'))}


@torch.no_grad()
def check_base_matches(state: Mapping[str, torch.Tensor], directory: str | Path) -> None:
    """Compare a network's frozen 1-D base tensors (norms, biases; `state` is its state dict)
    with the base's own.

    A cheap guard (a few MB read for openvla-7b) against referencing a base that is not the
    one the network was loaded from. Raises CheckpointError naming shard and tensor.
    """
    directory = Path(directory)
    targets = dict(state)
    for shard in shard_files(directory):
        with safe_open(str(shard), framework='pt') as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if SKIPPED.match(key) or len(f.get_slice(key).get_shape()) != 1:
                    continue
                for ours, tensor in map_key(key, f.get_tensor(key)):
                    name = resolve_key(ours, targets)
                    if name is None or name.startswith(FULLY_TRAINED):
                        continue
                    mine = targets[name]
                    if not torch.equal(tensor.to(mine.device, mine.dtype), mine):
                        raise CheckpointError(
                            f"{shard}: tensor {key!r} differs from this model's {name}: the "
                            'model was not loaded from this base checkpoint'
                        )


def write_reference(checkpoint_dir: Path, base_dir: str | Path) -> Path:
    """Write `base_checkpoint.json` naming the base directory and its shards' sizes."""
    base_dir = Path(base_dir).resolve()
    path = Path(checkpoint_dir) / REFERENCE_FILE
    path.write_text(
        json.dumps(
            {'format': 'openvla', 'path': str(base_dir), 'shards': _shard_sizes(base_dir)},
            indent=2,
        )
        + '\n'
    )
    return path


def read_reference(checkpoint_dir: Path) -> Path | None:
    """The base directory a checkpoint references (None: weights are all in the checkpoint).

    Raises CheckpointError naming the file and the base path when the base is gone or its
    shards are not the ones the checkpoint was saved against.
    """
    path = Path(checkpoint_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        base, shards = Path(data['path']), dict(data['shards'])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f'{path}: expected {{"path": ..., "shards": {{...}}}}: {exc}'
        ) from exc
    fix = f'put the base OpenVLA checkpoint back there or set "path" in {path}'
    if not base.is_dir():
        raise CheckpointError(
            f'{path}: the base checkpoint {base} is missing (moved or deleted); {fix}'
        )
    found = _shard_sizes(base)
    if found != shards:
        raise CheckpointError(
            f'{path}: the base checkpoint {base} has shards {found}, but '
            f'this checkpoint was saved against {shards}; {fix}'
        )
    return base
