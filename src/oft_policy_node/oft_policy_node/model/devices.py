"""Torch devices as users name them (policy_node device:=, train --device), checked before any
model is built: a device that is not there is one clear line saying what this host has, not an
assertion from deep inside the first CUDA call."""

from __future__ import annotations

import os

import torch

SUPPORTED = ('cpu', 'cuda')


class DeviceError(ValueError):
    """A device that this host or this torch build cannot give."""


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' -> torch.device, or DeviceError saying why not."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(
            f'device {name!r} is not a torch device ({", ".join(SUPPORTED)}, cuda:N)'
        ) from exc
    if device.type not in SUPPORTED:
        raise DeviceError(
            f'device {name!r}: only {", ".join(SUPPORTED)} (and cuda:N) are supported'
        )
    if device.type == 'cuda':
        check_cuda(name, device.index or 0)
    return device


def check_cuda(name: str, index: int) -> None:
    """DeviceError unless CUDA GPU `index` is usable by this process."""
    if not torch.backends.cuda.is_built():
        raise DeviceError(
            f'device {name!r}: this torch ({torch.__version__}) was built without CUDA; install '
            'a CUDA build of torch on this host or use cpu'
        )
    count = torch.cuda.device_count()
    if count == 0:
        visible = os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')
        raise DeviceError(
            f'device {name!r}: no CUDA GPU is visible to this process (CUDA_VISIBLE_DEVICES='
            f'{visible}); check nvidia-smi or use cpu'
        )
    if index >= count:
        gpus = 'cuda:0' if count == 1 else f'cuda:0 .. cuda:{count - 1}'
        raise DeviceError(f'device {name!r}: this host has {count} CUDA GPU(s): {gpus}')
