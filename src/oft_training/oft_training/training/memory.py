"""What one training process holds: expected from its parameters at start, measured at its peak
after the first step (so a run that will not fit says so in its first minute, per rank).

Expected = weights (frozen and trainable, each in its own dtype) + one gradient per trainable
weight + AdamW's two states per trainable weight (torch keeps them in the weight's dtype).
Activations come on top and scale with the batch; docs/model.md has the table. Under FSDP each
rank counts its own shards.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.tensor import DTensor

GB = 1e9


def size(n: int) -> str:
    """Bytes in GB, or MB below one GB (a tiny model's figures are not all 0.00)."""
    return f'{n / GB:.2f} GB' if n >= GB else f'{n / 1e6:.1f} MB'


@dataclass(frozen=True)
class Expected:
    device: torch.device
    frozen: int  # bytes
    trainable: int
    gradients: int
    adam: int

    @property
    def total(self) -> int:
        return self.frozen + self.trainable + self.gradients + self.adam

    def describe(self) -> str:
        where = 'host memory' if self.device.type == 'cpu' else str(self.device)
        return (
            f'expects {size(self.total)} of {where} before activations: weights '
            f'{size(self.frozen)} frozen + {size(self.trainable)} trainable, gradients '
            f'{size(self.gradients)}, AdamW states {size(self.adam)}'
        )


def expected(module: nn.Module, device: torch.device) -> Expected:
    frozen = trainable = 0
    for param in module.parameters():
        local = param.to_local() if isinstance(param, DTensor) else param  # FSDP: this shard
        nbytes = local.numel() * local.element_size()
        if param.requires_grad:
            trainable += nbytes
        else:
            frozen += nbytes
    return Expected(device, frozen, trainable, trainable, 2 * trainable)


def host_peak_bytes() -> int:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measured_peak(device: torch.device) -> str:
    text = f'peak after the first step: host {size(host_peak_bytes())}'
    if device.type == 'cuda':
        text += f', {device} {size(torch.cuda.max_memory_allocated(device))} allocated'
    return text
