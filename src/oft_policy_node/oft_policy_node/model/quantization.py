"""Weight-only quantization of a loaded policy for inference (torchao), so the 7B model fits GPUs
that cannot hold it in bf16 with room to spare (16 and 24 GB cards; moojink/openvla-oft#35, #50).

What is quantized: the Llama decoder's linear layers, 6.5 B of openvla-7b's 8.4 B parameters and
nearly all of a chunk's compute (the ~1150-token pass). The vision encoders, FiLM, projectors
and the action head stay in the policy's dtype: small, and the head writes the actions directly.
The LM head is unused by parallel decoding and stays as it is.

* `int8`: torchao's Int8WeightOnlyConfig, per-channel int8 weights, dequantised on the fly;
  runs on the CPU and on CUDA.
* `int4`: torchao's Int4WeightOnlyConfig (group size 128), whose kernels run on CUDA only.
"""

from __future__ import annotations

import logging

from torch import nn

QUANTIZATIONS = ('none', 'int8', 'int4')


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored (quantized tensors included)."""
    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        inner = getattr(tensor, '__tensor_flatten__', None)
        if inner is not None:  # a torchao tensor subclass: count its stored components
            names, _ = inner()
            total += sum(
                getattr(tensor, n).numel() * getattr(tensor, n).element_size() for n in names
            )
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def quantize_llm(network: nn.Module, mode: str) -> int:
    """Quantize the Llama decoder's linear layers in place; returns how many were quantized.
    Raises ValueError for an unknown mode or int4 off CUDA."""
    if mode not in QUANTIZATIONS:
        raise ValueError(f'quantization={mode!r}; expected one of {QUANTIZATIONS}')
    if mode == 'none':
        return 0
    decoder = network.llm.model
    device = next(decoder.parameters()).device
    if mode == 'int4' and device.type != 'cuda':
        raise ValueError(
            "quantization int4 needs the policy on a CUDA GPU (torchao's int4 weight-only "
            'kernels run there only); use int8 on the CPU'
        )
    # torchao warns for each of its CUDA kernel libraries a CPU-only torch cannot load; the
    # weight-only configs used here do not need them.
    logging.getLogger('torchao').setLevel(logging.ERROR)
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    config = Int8WeightOnlyConfig() if mode == 'int8' else Int4WeightOnlyConfig(group_size=128)
    linears = [m for m in decoder.modules() if isinstance(m, nn.Linear)]
    quantize_(decoder, config, filter_fn=lambda module, _name: isinstance(module, nn.Linear))
    return len(linears)
