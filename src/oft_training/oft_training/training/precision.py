"""Training precision: float32, or bf16 autocast (float32 weights and optimizer, matmuls and
convolutions in bfloat16), on CUDA and on CPUs with bf16 arithmetic.

`auto` is bf16 on CUDA (as the authors train) and float32 on the CPU: on this project's
2-core CPU with AVX-512 BF16 and AMX, bf16 autocast trained `small` no faster (bench
training_samples, docs/training.md), so it would only add rounding.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

PRECISIONS = ('auto', 'float32', 'bfloat16')
DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16}  # resolved precision -> dtype
BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')  # without them CPU bf16 is emulated, and slow


def cpu_bf16_flags() -> list[str]:
    """The bf16 flags /proc/cpuinfo lists for this CPU (none where there is no such file)."""
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith('flags'):
            return sorted(set(line.split(':', 1)[1].split()) & set(BF16_CPU_FLAGS))
    return []


def resolve(precision: str, device: torch.device) -> str:
    """'float32' or 'bfloat16' for `device`; ValueError for bf16 on a CPU that cannot."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision={precision!r}; expected one of {PRECISIONS}')
    if precision == 'auto':
        return 'bfloat16' if device.type == 'cuda' else 'float32'
    if precision == 'bfloat16' and device.type == 'cpu' and not cpu_bf16_flags():
        raise ValueError(
            'precision=bfloat16 on a CPU without AVX-512 BF16 or AMX (no avx512_bf16 or '
            'amx_bf16 in /proc/cpuinfo): it would be emulated, several times slower; use float32'
        )
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the forward passes run in for a resolved precision."""
    if precision == 'bfloat16':
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
