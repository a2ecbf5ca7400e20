"""Checkpoint directory I/O with errors that name the file and the tensor.

Layout (all written by `OftPolicy.save_pretrained`):

    config.json         OftConfig (sizes, LoRA rank, tokenizer kind)
    model.safetensors   the network's state dict (LoRA adapters under their peft names)
    norm_stats.json     NormStats (action/proprio min/max)
    instructions.json   the instructions seen in training, a JSON list of strings
    tokenizer files     only for tokenizer='pretrained' (the Llama tokenizer)
    base_checkpoint.json
                        only when saved with base_weights='reference': model.safetensors then
                        holds the fine-tuned tensors only, and the frozen base weights are read
                        from the OpenVLA directory named here (`openvla_weights`)
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from oft_policy_node.model.config import OftConfig
from oft_policy_node.model.normalization import NormStats

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
INSTRUCTIONS_FILE = 'instructions.json'


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names file and tensor."""


def write_checkpoint(
    directory: str | Path,
    config: OftConfig,
    state_dict: Mapping[str, torch.Tensor],
    stats: NormStats,
    instructions: tuple[str, ...],
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(config.to_json() + '\n')
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in state_dict.items()},
        str(directory / WEIGHTS_FILE),
        metadata={'format': 'pt', 'preset': config.name},
    )
    stats.save(directory)
    (directory / INSTRUCTIONS_FILE).write_text(json.dumps(list(instructions), indent=2) + '\n')
    return directory


def _require(path: Path) -> Path:
    if not path.is_file():
        raise CheckpointError(
            f'{path}: missing; a checkpoint directory holds {CONFIG_FILE}, '
            f'{WEIGHTS_FILE}, norm_stats.json and {INSTRUCTIONS_FILE}'
        )
    return path


def read_config(directory: Path) -> OftConfig:
    path = _require(directory / CONFIG_FILE)
    try:
        return OftConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f'{path}: {exc}') from exc


def read_instructions(directory: Path) -> tuple[str, ...]:
    path = _require(directory / INSTRUCTIONS_FILE)
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f'{path}: not JSON: {exc}') from exc
    if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
        raise CheckpointError(f'{path}: expected a JSON list of strings, got {data!r:.80}')
    return tuple(data)


def read_stats(directory: Path) -> NormStats:
    try:
        return NormStats.load(directory)
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(str(exc)) from exc


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    path = _require(directory / WEIGHTS_FILE)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f'{path}: unreadable safetensors file: {exc}') from exc


def load_state(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    only: Collection[str] | None = None,
) -> None:
    """Copy `state` into `module`, checking names and shapes first so nothing half-loads.

    only: the tensors `state` must hold when it is an overlay on already-loaded base weights
    (default: every tensor of the module).
    """
    expected = module.state_dict()
    required = set(expected) if only is None else set(only)
    unexpected = sorted(set(state) - required)
    missing = sorted(required - set(state))
    wrong = [
        f'{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}'
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f'missing tensors {_few(missing)}')
    if unexpected:
        problems.append(f'unexpected tensors {_few(unexpected)}')
    if wrong:
        problems.append(f'wrong shapes {_few(wrong)}')
    if problems:
        raise CheckpointError(
            f'{source}: '
            + '; '.join(problems)
            + ' (was it saved with a different preset or LoRA rank?)'
        )
    module.load_state_dict(dict(state), strict=only is None)


def _few(items: list[str], n: int = 5) -> str:
    more = f' ... and {len(items) - n} more' if len(items) > n else ''
    return ', '.join(items[:n]) + more
