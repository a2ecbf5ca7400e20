"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for GPUs that cannot hold a whole bf16 copy of
the model each: weights, gradients and AdamW states sharded over the processes.

Groups follow what runs one after the other: each Llama decoder layer, and in each ViT block
its attention and its MLP (this stack runs the ViT blocks through `dino_block`/`siglip_block`,
which call those submodules' forward, not the block's; FSDP2 gathers a group in the forward
of the module it was applied to). The root group, the module the training step calls, holds
the rest: embeddings, norms, FiLM maps, projectors and the action head.

Saving gathers what a checkpoint holds, tensor by tensor (a collective: every rank calls it),
onto the main rank's host; AdamW's states are written sharded, one file per rank, with
torch.distributed.checkpoint, which also loads them back onto the same or another world size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from oft_policy_node.model.policy import OftPolicy

OPTIMIZER_DIR = 'optimizer'  # in a checkpoint folder: the sharded AdamW states


def shard_groups(policy: OftPolicy) -> Iterator[nn.Module]:
    """The modules that become FSDP groups, in the order they run."""
    vision = policy.network.vision
    for layer in vision.dino.encoder.layer:
        yield from (layer.attention, layer.mlp)
    for layer in vision.siglip.encoder.layers:
        yield from (layer.self_attn, layer.mlp)
    yield from policy.network.llm.model.layers


def shard(root: nn.Module, policy: OftPolicy) -> None:
    """fully_shard every group, then the root (`policy` or a module wrapping it)."""
    for group in shard_groups(policy):
        fully_shard(group)
    fully_shard(root)


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient reduction on accumulation micro-batches but the last: DDP's no_sync,
    FSDP2's set_requires_gradient_sync."""
    if sync:
        return contextlib.nullcontext()
    if isinstance(model, FSDPModule):
        return _fsdp_no_sync(model)
    return model.no_sync()


@contextlib.contextmanager
def _fsdp_no_sync(model: FSDPModule) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def gathered_state(
    policy: OftPolicy, wanted: Callable[[str, torch.Tensor], bool], main: bool
) -> dict[str, torch.Tensor]:
    """The network's tensors for which `wanted(name, tensor)`, whole, on the host of the main
    rank (an empty dict elsewhere). Every rank must call it, in the same order."""
    out = {}
    for name, tensor in policy.network.state_dict().items():
        if not wanted(name, tensor):
            continue
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()
        if main:
            out[name] = tensor.detach().cpu()
    return out


def save_optimizer(module: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """AdamW's states, one shard file per rank (a collective)."""
    dcp.save({'optimizer': get_optimizer_state_dict(module, optimizer)}, checkpoint_id=folder)


def load_optimizer(module: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """The states `save_optimizer` wrote, onto this world's shards. Partial: weights that never
    had a gradient (LoRA of the last ViT block, whose output is never read) have no state."""
    state = {'optimizer': get_optimizer_state_dict(module, optimizer)}
    dcp.load(state, checkpoint_id=folder, planner=DefaultLoadPlanner(allow_partial_load=True))
    set_optimizer_state_dict(module, optimizer, state['optimizer'])
