"""torchrun integration: one process per device, NCCL on GPUs, gloo on CPUs.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; a plain `python -m oft_training.train` is a world
of one and needs no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from oft_policy_node.model.devices import check_cuda, resolve_device


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def mean(self, value: float) -> float:
        """Average of a Python number over all processes."""
        return self.sum(value) / self.size

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on any (a collective: call it on all ranks)."""
        return self.sum(float(flag)) > 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == 'nccl' else torch.device('cpu')


def init_world(device: str = 'auto') -> World:
    """Join the torchrun process group if there is one; pick this process's device."""
    size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    chosen = resolve_device(device)  # DeviceError: one line saying what this host has
    if chosen.type == 'cuda':
        chosen = torch.device('cuda', local_rank)  # torchrun: one GPU per local rank
        check_cuda(f'{device} (local rank {local_rank})', local_rank)
        torch.cuda.set_device(chosen)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend='nccl' if chosen.type == 'cuda' else 'gloo')
    return World(rank, size, chosen)


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
