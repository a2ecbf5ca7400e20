"""Whether building the network initialises the base modules' weights, or allocates them at all.

The base modules (both ViTs, the projector, the Llama) are overwritten whole by a base OpenVLA
checkpoint (`openvla_weights.load_openvla_base`) or by a saved policy (`checkpoint.load_state`
refuses a file that lacks any tensor), so loading skips their random initialisation: for
openvla-7b on two CPU cores that initialisation took 141 s of a 147 s `from_openvla`. Buffers
(RoPE frequencies, position ids) are computed in the modules' constructors, not by the init
functions, so they are the same either way (tested).

`'meta'` goes one step further for training at scale: the base parameters are not allocated
at all (meta tensors, shapes only) until `materialize_meta` gives them storage in the dtype and
on the device they will live in. A 7B base is then never held in float32, nor on the host:
each rank allocates its bf16 copy on its own GPU and the shards stream into it. Buffers stay
real, since nothing loads them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Literal

import torch
from torch import nn

BaseInit = bool | Literal['meta']  # True: init; False: allocated, uninitialised; 'meta': neither


def base_init(mode: BaseInit) -> AbstractContextManager[None]:
    """Build inside this: with mode False torch's and transformers' weight init do nothing,
    and the weights hold whatever memory they were given until they are loaded; with 'meta'
    the parameters have no memory either."""
    if mode is True:
        return contextlib.nullcontext()
    from transformers.initialization import no_init_weights

    if mode is False:
        return no_init_weights()
    if mode != 'meta':
        raise ValueError(f"base init mode {mode!r}: expected True, False or 'meta'")
    stack = contextlib.ExitStack()
    stack.enter_context(no_init_weights())
    stack.enter_context(_parameters_on_meta())
    return stack


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside becomes a meta tensor of its shape and dtype (buffers
    are left alone: they are computed, not loaded). What accelerate's
    `init_empty_weights(include_buffers=False)` does, without the dependency."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and param.device.type != 'meta':
            module._parameters[name] = nn.Parameter(
                param.to('meta'), requires_grad=param.requires_grad
            )

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def materialize_meta(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Give every meta parameter of `module` uninitialised storage in `dtype` on `device`, one
    tensor at a time (what a loader then fills)."""
    for owner in module.modules():
        for name, param in list(owner._parameters.items()):
            if param is None or param.device.type != 'meta':
                continue
            owner._parameters[name] = nn.Parameter(
                torch.empty(param.shape, dtype=dtype, device=device),
                requires_grad=param.requires_grad,
            )
