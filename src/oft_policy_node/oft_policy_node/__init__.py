"""OpenVLA-OFT+ model runtime, policy_node and chunk_executor."""

import logging

# torchao (for quantized inference, model/quantization.py) is imported by peft and transformers
# whenever they are. On a CPU-only torch it warns about each CUDA kernel library it cannot load,
# and torch about the enums it registers: noise for every tool here, not problems.
for _name in ('torchao', 'torch.utils._pytree'):
    logging.getLogger(_name).setLevel(logging.ERROR)
