"""Run folders of the authors' fine-tuning code (moojink/openvla-oft), read as this stack's model.

vla-scripts/finetune.py `save_training_checkpoint` (lines 574-666) writes, per saved step:

    dataset_statistics.json              {dataset name: {"action": {...}, "proprio": {...}, ...}}
    lora_adapter/                        peft's save_pretrained of the whole LoRA model (line 628)
    vision_backbone--STEP_checkpoint.pt  FiLM runs: the FiLM-wrapped vision backbone's state dict,
                                         LoRA layers inside under peft's names (line 644)
    proprio_projector--STEP_checkpoint.pt, action_head--STEP_checkpoint.pt
                                         DDP-wrapped, so keys start with "module." (init_module)
    config.json, model*.safetensors      the LoRA-merged model (merge_lora_during_training, the
                                         default; lines 653-661), absent when merged offline
    tokenizer and preprocessor files     processor.save_pretrained (line 627)

STEP is the step number, or "latest" with save_latest_checkpoint_only.

Which file is the truth for each part:

* Both ViTs, their LoRA and FiLM: vision_backbone--STEP_checkpoint.pt. The merge (lines
  655-658) loads the adapter into a freshly loaded, unwrapped base, but the adapter's ViT keys
  carry the FiLM wrapper's nesting (`vision_backbone.vision_backbone.featurizer.blocks.N.block.`)
  and peft loads adapter weights non-strictly: the ViT LoRA stays at its initialisation (B = 0)
  and the merged shards hold the base's ViT weights, without a word (the test fixture, written
  by the authors' code, shows it). Their inference re-applies LoRA and FiLM and loads this file
  over the merged model (experiments/robot/openvla_utils.py `_apply_film_to_vla`, lines
  311-349); the LoRA it re-applies to the Llama starts with B = 0, so adds nothing.
* Projector and Llama (and its LM head, which parallel decoding never uses): the merged
  shards; for a run merged offline, the base checkpoint plus lora_adapter/, merged here the way
  peft merges (W + alpha / r * B A, in float32).
* Proprio projector and action head: their files, "module." removed as the authors'
  `remove_ddp_in_checkpoint` (finetune.py line 123) does.

peft's "all-linear" (finetune.py line 851) also reaches modules that are not linear layers but
share a name with one: the ViTs' patch embeddings (Conv2d `patch_embed.proj`, matched by `proj`)
carry a convolutional LoRA, and the LM head is adapted too. Everything is merged into plain
weights (the name rules: openvla_oft_mapping.py): the imported model has no LoRA modules
(lora_rank 0). SigLIP's attention-pooling head, its LoRA included, is skipped: OpenVLA never
runs it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from oft_policy_node import robot
from oft_policy_node.model.checkpoint import CheckpointError
from oft_policy_node.model.config import LlmConfig, OftConfig, VitConfig
from oft_policy_node.model.normalization import NormStats
from oft_policy_node.model.openvla_oft_mapping import (
    adapter_entry,
    base_layout,
    canonical_vision_key,
    component_tensors,
    merge_lora,
    vision_tensors,
)
from oft_policy_node.model.openvla_weights import NOT_IN_BASE as NOT_IN_RUN
from oft_policy_node.model.openvla_weights import SKIPPED, shard_files
from oft_policy_node.model.tokenizer import HfTokenizer

PART_FILE = re.compile(r'^(?P<part>[a-z_]+)--(?P<step>\d+|latest)_checkpoint\.pt$')
PARTS = ('vision_backbone', 'proprio_projector', 'action_head')
NORMALIZATIONS = ('bounds', 'bounds_q99')  # prismatic/vla/constants.py NormalizationType
# ALOHA's constants (prismatic/vla/constants.py ALOHA_CONSTANTS): no weight's shape holds the
# chunk length, so it is the robot's, checked by nothing but this constant.
ALOHA_CHUNK = 25


@dataclass(frozen=True)
class OftRun:
    """One saved step of an authors' run folder."""

    directory: Path
    step: str
    parts: dict[str, Path]  # 'action_head', 'proprio_projector', 'vision_backbone' (FiLM)
    merged: bool  # the folder holds the LoRA-merged model shards
    adapter_config: dict | None  # lora_adapter/adapter_config.json, None when gone

    @property
    def use_film(self) -> bool:
        return 'vision_backbone' in self.parts


def is_oft_run(directory: str | Path) -> bool:
    """A folder written by the authors' save_training_checkpoint (an action head file)."""
    directory = Path(directory)
    return directory.is_dir() and any(
        (m := PART_FILE.match(p.name)) and m['part'] == 'action_head' for p in directory.iterdir()
    )


def find_run(directory: str | Path, step: str | int | None = None) -> OftRun:
    """The files of one step; CheckpointError saying what is missing or ambiguous."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f'{directory}: not a directory')
    steps: dict[str, dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        if m := PART_FILE.match(path.name):
            steps.setdefault(m['step'], {})[m['part']] = path
    if not steps:
        raise CheckpointError(
            f'{directory}: no <part>--<step>_checkpoint.pt files; an openvla-oft run folder '
            'holds action_head--<step>_checkpoint.pt and the others finetune.py saves'
        )
    if step is None:
        if len(steps) > 1:
            raise CheckpointError(f'{directory}: holds steps {sorted(steps)}; choose one (--step)')
        step = next(iter(steps))
    step = str(step)
    if step not in steps:
        raise CheckpointError(f'{directory}: no step {step}; it holds {sorted(steps)}')
    parts = steps[step]
    if 'noisy_action_projector' in parts:
        raise CheckpointError(
            f'{directory}: a diffusion run (noisy_action_projector--{step}_checkpoint.pt); this '
            'stack runs the L1 regression head (finetune.py --use_l1_regression True)'
        )
    for part, why in (
        ('action_head', 'the L1 regression head (--use_l1_regression True)'),
        ('proprio_projector', 'proprio input (--use_proprio True), which this stack always feeds'),
    ):
        if part not in parts:
            raise CheckpointError(f'{directory}: no {part}--{step}_checkpoint.pt: needs {why}')
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise CheckpointError(f'{directory}: unknown checkpoint parts {unknown} at step {step}')
    merged = any(directory.glob('model*.safetensors'))
    return OftRun(directory, step, parts, merged, _read_adapter_config(directory))


def _read_adapter_config(directory: Path) -> dict | None:
    """lora_adapter/adapter_config.json, read once per run; None when the folder is gone."""
    path = directory / 'lora_adapter' / 'adapter_config.json'
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    if config.get('use_dora') or config.get('rank_pattern') or config.get('alpha_pattern'):
        raise CheckpointError(f'{path}: DoRA and per-module ranks are not supported')
    return config


def lora_scaling(run: OftRun, rank: int) -> float:
    """alpha / r from lora_adapter/adapter_config.json (peft's LoraLayer.update_layer), or the
    authors' alpha = min(r, 16) (finetune.py line 849) when the adapter folder is gone."""
    config = run.adapter_config
    if config is None:
        return min(rank, 16) / rank
    r, alpha = int(config['r']), float(config['lora_alpha'])
    if r != rank:
        raise CheckpointError(
            f'{run.directory}/lora_adapter/adapter_config.json: r={r}, but the LoRA tensors '
            f'have rank {rank}'
        )
    return alpha / math.sqrt(r) if config.get('use_rslora') else alpha / r


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for a broken file
        raise CheckpointError(f'{path}: unreadable checkpoint file: {exc}') from exc


def _vision_tensors(run: OftRun) -> Iterator[tuple[str, torch.Tensor, str]]:
    path = run.parts['vision_backbone']
    return vision_tensors(_torch_load(path), str(path), functools.partial(lora_scaling, run))


def _component(part: str, run: OftRun) -> Iterator[tuple[str, torch.Tensor, str]]:
    path = run.parts[part]
    return component_tensors(part, _torch_load(path), str(path))


def _adapter(run: OftRun) -> dict[str, dict[str, torch.Tensor]]:
    """lora_adapter/adapter_model.safetensors -> {module path (base names): {'A', 'B'}}."""
    path = run.directory / 'lora_adapter' / 'adapter_model.safetensors'
    if not path.is_file():
        raise CheckpointError(
            f'{path}: missing; a run folder without merged model shards needs its LoRA adapter'
        )
    out: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework='pt') as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            entry = adapter_entry(key, str(path))
            if entry is not None:
                out.setdefault(entry[0], {})[entry[1]] = f.get_tensor(key)
    return out


def _language_tensors(run: OftRun, base: Path | None) -> Iterator[tuple[str, torch.Tensor, str]]:
    """Projector and Llama (and, without FiLM, the ViTs) from the merged shards, or from the
    base shards with the adapter merged in."""
    if run.merged:
        shards, adapter = shard_files(run.directory), {}
    else:
        _openvla_json(run, base)  # the error that says to pass --base
        shards, adapter = shard_files(base), _adapter(run)
    used = set()
    for shard in shards:
        with safe_open(str(shard), framework='pt') as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if run.use_film and key.startswith('vision_backbone.'):
                    continue  # the vision backbone file is the truth (module docstring)
                tensor = f.get_tensor(key)
                module = key.removesuffix('.weight')
                if module in adapter:
                    ab = adapter[module]
                    tensor = merge_lora(
                        tensor, ab['A'], ab['B'], lora_scaling(run, ab['A'].shape[0])
                    )
                    used.add(module)
                yield from base_layout(key, tensor, str(shard))
    skipped_vision = {m for m in adapter if m.startswith('vision_backbone.') and run.use_film}
    unused = sorted(set(adapter) - used - skipped_vision)
    unused = [m for m in unused if not SKIPPED.match(m)]
    if unused:
        raise CheckpointError(
            f'{run.directory / "lora_adapter"}: LoRA layers {unused[:5]} match no base tensor '
            f'in {base} (is it the base this run was fine-tuned from?)'
        )


def run_tensors(run: OftRun, base: Path | None = None) -> Iterator[tuple[str, torch.Tensor, str]]:
    """Every tensor of the run as (our key, tensor, source file), LoRA merged (module doc)."""
    if run.use_film:
        yield from _vision_tensors(run)
    yield from _language_tensors(run, base)
    yield from _component('proprio_projector', run)
    yield from _component('action_head', run)


# Heads of the ViTs OpenVLA names by timm id (timm 0.9.10 vision_transformer.py model
# definitions): the one size no weight's shape holds.
TIMM_HEADS = {'vit_large_patch14_reg4_dinov2.lvd142m': 16, 'vit_so400m_patch14_siglip_224': 16}


def _openvla_json(run: OftRun, base: Path | None) -> tuple[dict, Path]:
    """OpenVLA's config.json: the merged model's, else the base's."""
    directory = run.directory if run.merged else base
    if directory is None:
        raise CheckpointError(
            f'{run.directory}: no merged model shards (trained with '
            '--merge_lora_during_training False); pass the base checkpoint it was fine-tuned '
            'from (openvla/openvla-7b) as --base'
        )
    path = Path(directory) / 'config.json'
    try:
        data = json.loads(path.read_text())
        data['text_config'], data['timm_model_ids'], data['image_sizes']  # noqa: B018
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f'{path}: not an OpenVLA config.json: {exc}') from exc
    return data, path


def _vision_shapes(run: OftRun, base: Path | None) -> dict[str, tuple[int, ...]]:
    """Shapes of the ViT tensors under the base names, from the file that is their truth."""
    if run.use_film:
        keys = _torch_load(run.parts['vision_backbone']).items()
        pairs = ((k, tuple(v.shape)) for k, v in keys)
    else:
        pairs = []
        for shard in shard_files(run.directory if run.merged else Path(base)):
            with safe_open(str(shard), framework='pt') as f:
                pairs += [(k, tuple(f.get_slice(k).get_shape())) for k in f.keys()]  # noqa: SIM118
    return vision_shapes(pairs)


def vision_shapes(pairs: Iterable[tuple[str, tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    """(name, shape) of a vision file or shards -> shapes of the ViT tensors under the base
    names (FiLM nesting and peft's base_layer removed), what `vit_config` reads."""
    return {
        canonical_vision_key(k).replace('.base_layer.', '.'): shape
        for k, shape in pairs
        if k.startswith('vision_backbone.')
    }


def vit_config(shapes: dict[str, tuple[int, ...]], name: str, timm_id: str) -> VitConfig:
    """One ViT's sizes from its tensors' shapes (`name`: featurizer or fused_featurizer)."""
    if timm_id not in TIMM_HEADS:
        raise CheckpointError(f'vision backbone {timm_id!r} is none of {sorted(TIMM_HEADS)}')
    prefix = f'vision_backbone.{name}.'
    depth = len({k.split('.')[3] for k in shapes if k.startswith(prefix + 'blocks.')})
    fc1 = shapes[prefix + 'blocks.0.mlp.fc1.weight']
    registers = shapes.get(prefix + 'reg_token', (1, 0, 0))[1]
    return VitConfig(fc1[1], depth, TIMM_HEADS[timm_id], fc1[0], num_registers=registers)


def llm_config(text_config: dict) -> LlmConfig:
    """The Llama's sizes from config.json's text_config. OpenVLA's exporter (vla-scripts/extern/
    convert_openvla_weights_to_hf.py lines 152-176) builds it from LlamaConfig's defaults and
    writes only what differs (vocab_size 32064): RMSNorm eps 1e-6, not Llama-2's 1e-5."""
    from transformers import LlamaConfig

    text = LlamaConfig(**{k: v for k, v in text_config.items() if k != 'model_type'})
    if text.num_key_value_heads != text.num_attention_heads:
        raise CheckpointError(f'text_config: grouped-query attention is not supported: {text}')
    return LlmConfig(
        hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers,
        num_heads=text.num_attention_heads,
        intermediate_size=text.intermediate_size,
        vocab_size=text.vocab_size,
        max_position_embeddings=text.max_position_embeddings,
        rms_norm_eps=text.rms_norm_eps,
    )


def head_sizes(head: dict, proprio: dict, run: OftRun) -> tuple[int, int, int]:
    """Action dim, proprio dim and residual blocks of the L1 head; 14-D ALOHA or an error."""
    fc2 = head.get('module.model.fc2.weight', head.get('model.fc2.weight'))
    fc1 = proprio.get('module.fc1.weight', proprio.get('fc1.weight'))
    if fc2 is None or fc1 is None:
        raise CheckpointError(f'{run.directory}: action head or proprio projector lacks fc layers')
    blocks = {m[1] for k in head if (m := re.search(r'mlp_resnet_blocks\.(\d+)\.', k))}
    action_dim, proprio_dim = int(fc2.shape[0]), int(fc1.shape[1])
    for what, found, part in (
        ('action head predicts', action_dim, 'action_head'),
        ('proprio projector takes', proprio_dim, 'proprio_projector'),
    ):
        if found != robot.ACTION_DIM:
            raise CheckpointError(
                f'{run.parts[part]}: the {what} {found}-D vectors; this stack drives a '
                f'bimanual ALOHA, {robot.ACTION_DIM}-D (per arm 6 joints and the gripper): was '
                'the run trained with ALOHA constants (prismatic/vla/constants.py)?'
            )
    return action_dim, proprio_dim, len(blocks)


def run_config(
    run: OftRun, base: Path | None = None, *, chunk_size: int, center_crop: bool
) -> OftConfig:
    """The model of the run (`model_config`), with where it came from in `extra`."""
    openvla, _ = _openvla_json(run, base)
    head_dims = head_sizes(
        _torch_load(run.parts['action_head']), _torch_load(run.parts['proprio_projector']), run
    )
    config = model_config(
        openvla,
        _vision_shapes(run, base),
        *head_dims,
        use_film=run.use_film,
        chunk_size=chunk_size,
        center_crop=center_crop,
    )
    return config.replace(extra={'imported_from': str(run.directory.resolve()), 'step': run.step})


def model_config(
    openvla: dict,
    vision_shapes: dict[str, tuple[int, ...]],
    action_dim: int,
    proprio_dim: int,
    head_blocks: int,
    *,
    use_film: bool,
    chunk_size: int,
    center_crop: bool,
) -> OftConfig:
    """Sizes from OpenVLA's config.json and the ViT tensors' shapes; the authors' sequence
    layout and image pipeline; FiLM as trained; every LoRA merged (no LoRA modules)."""
    ids = openvla['timm_model_ids']
    if len(ids) != 2 or len(set(openvla['image_sizes'])) != 1:
        raise CheckpointError(f'config.json: expected the fused DINOv2 + SigLIP backbone: {ids}')
    return OftConfig(
        name='openvla-oft',
        dino=vit_config(vision_shapes, 'featurizer', ids[0]),
        siglip=vit_config(vision_shapes, 'fused_featurizer', ids[1]),
        llm=llm_config(openvla['text_config']),
        image_size=openvla['image_sizes'][0],
        patch_size=vision_shapes['vision_backbone.featurizer.patch_embed.proj.weight'][-1],
        camera_names=robot.CAMERAS,  # the authors' order: full_image, left, right wrist
        chunk_size=chunk_size,
        action_dim=action_dim,
        proprio_dim=proprio_dim,
        action_head_blocks=head_blocks,
        use_film=use_film,
        action_slots='zeros',
        crop_scale=0.9 if center_crop else 1.0,
        sequence_layout='openvla_oft',
        image_pipeline='openvla_oft',
        tokenizer='pretrained',
        lora_rank=0,
    )


def run_stats(run: OftRun, unnorm_key: str | None, normalization: str) -> tuple[NormStats, str]:
    """NormStats of dataset_statistics.json[unnorm_key] (BOUNDS: min/max, BOUNDS_Q99: q01/q99,
    and the masks), and the key used."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f'normalization={normalization!r}; expected one of {NORMALIZATIONS}')
    path = run.directory / 'dataset_statistics.json'
    if not path.is_file():
        raise CheckpointError(f'{path}: missing (finetune.py saves it with every checkpoint)')
    data = json.loads(path.read_text())
    if unnorm_key is None:
        if len(data) != 1:
            raise CheckpointError(f'{path}: holds datasets {sorted(data)}; choose --unnorm-key')
        unnorm_key = next(iter(data))
    if unnorm_key not in data:
        raise CheckpointError(f'{path}: no dataset {unnorm_key!r}; it holds {sorted(data)}')
    low, high = ('min', 'max') if normalization == 'bounds' else ('q01', 'q99')
    values = {}
    for kind in ('action', 'proprio'):
        entry = data[unnorm_key].get(kind)
        if entry is None or low not in entry or high not in entry:
            raise CheckpointError(f'{path}: {unnorm_key}.{kind} lacks {low}/{high}')
        dims = len(entry[low])
        if dims != robot.ACTION_DIM:
            raise CheckpointError(
                f'{path}: {unnorm_key}.{kind} has {dims} dimensions; this stack drives a '
                f'bimanual ALOHA ({robot.ACTION_DIM}-D)'
            )
        mask = entry.get('mask')
        values[kind] = (
            np.asarray(entry[low], np.float32),
            np.asarray(entry[high], np.float32),
            None if mask is None else np.asarray(mask, dtype=bool),
        )
    (a_lo, a_hi, a_mask), (p_lo, p_hi, p_mask) = values['action'], values['proprio']
    return NormStats(a_lo, a_hi, p_lo, p_hi, action_mask=a_mask, proprio_mask=p_mask), unnorm_key


@dataclass(frozen=True)
class RunOptions:
    """What a run folder alone does not say. step / unnorm_key: which saved step and dataset
    statistics (None: the only one); base: the base checkpoint of a run saved without merged
    shards; normalization: the run's 'bounds' (ALOHA's) or 'bounds_q99'; center_crop: the
    authors' deployment of a run trained with random crops (--image_aug True); chunk_size: the
    run's NUM_ACTIONS_CHUNK."""

    step: str | int | None = None
    unnorm_key: str | None = None
    base: Path | None = None
    normalization: str = 'bounds'
    center_crop: bool = True
    chunk_size: int = ALOHA_CHUNK


def prepare_run(
    directory: str | Path, options: RunOptions
) -> tuple[OftRun, OftConfig, NormStats, HfTokenizer]:
    """The run's files, the config of its model (provenance in `extra`), its statistics and its
    tokenizer."""
    run = find_run(directory, options.step)
    config = run_config(
        run, options.base, chunk_size=options.chunk_size, center_crop=options.center_crop
    )
    stats, key = run_stats(run, options.unnorm_key, options.normalization)
    extra = {**config.extra, 'unnorm_key': key, 'normalization': options.normalization}
    return run, config.replace(extra=extra), stats, HfTokenizer(run.directory)


def expected_tensors(config: OftConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a network of `config` holds (built on the meta device)."""
    from oft_policy_node.model.network import OftNetwork

    with torch.device('meta'):
        network = OftNetwork(config, init_base=False)
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


def collect_run(
    run: OftRun, config: OftConfig, base: Path | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor the network of `config` needs, from the run, checked: a tensor the network
    lacks, of the wrong shape, given twice or missing fails naming it and its file."""
    expected = expected_tensors(config)
    seen: set[str] = set()
    for key, tensor, source in run_tensors(run, base):
        if key not in expected:
            raise CheckpointError(f'{source}: tensor maps to {key!r}, which the model lacks')
        if tuple(tensor.shape) != expected[key]:
            raise CheckpointError(
                f'{source}: {key} has shape {tuple(tensor.shape)}, the model '
                f'{expected[key]} (a preset of other sizes? --preset)'
            )
        if key in seen:
            raise CheckpointError(f'{source}: {key} given twice')
        seen.add(key)
        yield key, tensor
    for key in NOT_IN_RUN:  # never used at inference (DINOv2's masked-image token)
        if key in expected and key not in seen:
            seen.add(key)
            yield key, torch.zeros(expected[key])
    missing = sorted(set(expected) - seen)
    if missing:
        raise CheckpointError(
            f'{run.directory}: step {run.step} lacks {len(missing)} tensors, e.g. {missing[:5]}'
        )
