"""Memory per training process for openvla-7b: measured peak host memory of each of two gloo
ranks training from a base checkpoint on this CPU (real widths, ViTs cut to 2 blocks and the
Llama to 1 layer so two float32 ranks fit 24 GB), with the frozen base in float32 (the build before
weights went straight to bf16; still what --precision float32 does) against bf16; and the
weights, gradients and AdamW states each rank holds at the full 7B size, computed on the meta
device for both builds, plus the host memory a rank needed to build it.

Runs `train` under torchrun exactly as a user would (bench.train_cut_preset registers the cut
preset), on random weights written in the exported layout, 2 steps of batch 2.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.train_cut_preset import cut_preset
from oft_policy_node.model.config import get_preset
from oft_policy_node.model.lora import apply_lora, set_trainable
from oft_policy_node.model.network import OftNetwork
from oft_policy_node.model.openvla_weights import base_keys
from oft_policy_node.model.random_base import openvla_layout, write_random_openvla_base
from oft_training.testing import BagSpec, write_bag

ONLY_WHEN_NAMED = True  # several minutes and about 18 GB of memory
VIT_LAYERS, LLM_LAYERS = 2, 1
GB = 1e9
_PEAK = re.compile(r'rank (\d+): peak after the first step: host ([\d.]+) (GB|MB)')


def _training_set(root: Path) -> Path:
    bags = []
    for i, text in enumerate(('put green pepper into pot', 'put red pepper into pot')):
        bags.append(root / f'episode_{i}')
        write_bag(bags[-1], BagSpec(instruction=text, start_ns=(1000 + 10 * i) * 10**9))
    out = root / 'set'
    cmd = [sys.executable, '-m', 'oft_training.convert', *map(str, bags), '--out', str(out)]
    subprocess.run([*cmd, '--preset', 'openvla-7b'], check=True, capture_output=True)
    return out


def _two_ranks(data: Path, base: Path, out: Path, precision: str) -> dict:
    args = ['--data', str(data), '--out', str(out), '--base', str(base), '--device', 'cpu']
    args += ['--steps', '2', '--batch-size', '2', '--val-samples', '2', '--precision', precision]
    run = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2']
        + ['-m', 'bench.train_cut_preset', str(VIT_LAYERS), str(LLM_LAYERS), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(run.stdout[-3000:] + run.stderr[-3000:])
    peaks = {
        int(m[1]): float(m[2]) * (1 if m[3] == 'GB' else 1e-3) for m in _PEAK.finditer(run.stdout)
    }
    expects = re.findall(r'rank \d+: expects .*', run.stdout)
    return {'peak_host_gb_per_rank': [peaks[r] for r in sorted(peaks)], 'expected': expects}


def full_size_per_rank() -> dict:
    """GB each rank holds at the real size before activations (weights + gradients + AdamW's
    two states), for the float32 build and the meta-device bf16 build; what trains in float32
    (the default) or bf16 (--trainable-dtype bfloat16, as the authors' peft LoRA is)."""
    config = get_preset('openvla-7b')
    with torch.device('meta'):
        network = OftNetwork(config, init_base=False)
        apply_lora(network, config)
    set_trainable(network, config)
    params = list(network.named_parameters())
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    base = set(base_keys(name for name, _ in params))
    frozen_base = sum(p.numel() for n, p in params if n in base and not p.requires_grad)
    frozen_other = sum(p.numel() for n, p in params if n not in base and not p.requires_grad)

    def held(base_bytes: int, trainable_bytes: int) -> float:
        weights = base_bytes * frozen_base + 4 * frozen_other + trainable_bytes * trainable
        return round((weights + 3 * trainable_bytes * trainable) / GB, 2)  # + grads + 2 states

    return {
        'parameters_frozen_base': frozen_base,
        'parameters_frozen_other': frozen_other,  # the never-run last blocks' FiLM maps
        'parameters_trainable': trainable,
        'float32_build_gb': held(4, 4),
        'float32_build_host_gb_per_rank': round(4 * sum(p.numel() for _, p in params) / GB, 2),
        'bf16_meta_build_gb': held(2, 4),
        'bf16_meta_build_trainable_bf16_gb': held(2, 2),
        'bf16_meta_build_host': 'one tensor at a time, streamed onto the device',
    }


def activations_gb_per_sample(checkpointing: bool) -> float:
    """Activation memory of one openvla-7b sample in bf16 (estimate). Korthikanti et al. 2022
    ("Reducing Activation Recomputation in Large Transformer Models", eq. 1): a transformer
    layer keeps about 34 s h bytes per sample in 16-bit when attention runs fused (SDPA keeps
    no s x s scores). Sequences: the Llama's BOS + 3 x 256 patches + proprio + ~20 prompt tokens
    + 350 action slots; each camera's DINOv2 tokens (1 + 4 + 256) and SigLIP's (256). With
    checkpointing a layer keeps its input (2 s h bytes) and one layer at a time the rest."""
    config = get_preset('openvla-7b')
    images = len(config.camera_names)
    towers = [
        (1 + images * config.patches_per_image + 1 + 20 + config.num_action_slots, config.llm),
        (images * (1 + config.dino.num_registers + config.patches_per_image), config.dino),
        (images * config.patches_per_image, config.siglip),
    ]
    total = 0.0
    for tokens, tower in towers:
        per_layer = tokens * tower.hidden_size
        if checkpointing:
            total += 2 * per_layer * tower.num_layers + 34 * per_layer
        else:
            total += 34 * per_layer * tower.num_layers
    return total / GB


def memory_table(gpus: int = 8) -> list[dict]:
    """GB per GPU at batch 1, 4 and 8 per GPU: DDP or FSDP over `gpus`, with and without
    checkpointing, trainable weights in float32 or bf16; held = weights + gradients + AdamW
    states (full_size_per_rank), divided over the GPUs under FSDP plus one gathered Llama layer."""
    held = full_size_per_rank()
    llm = get_preset('openvla-7b').llm
    h, m = llm.hidden_size, llm.intermediate_size
    layer_gb = 2 * (4 * h * h + 3 * h * m + 2 * h) / GB  # one decoder layer gathered, bf16
    rows = []
    for trainable, key in (
        ('float32', 'bf16_meta_build_gb'),
        ('bf16', 'bf16_meta_build_trainable_bf16_gb'),
    ):
        for sharding in ('DDP', f'FSDP x{gpus}'):
            weights = held[key] if sharding == 'DDP' else held[key] / gpus + layer_gb
            for checkpointing in (False, True):
                per_sample = activations_gb_per_sample(checkpointing)
                row = {
                    'trainable': trainable,
                    'sharding': sharding,
                    'checkpointing': checkpointing,
                    'held_gb': round(weights, 1),
                    'activations_gb_per_sample': round(per_sample, 2),
                }
                for batch in (1, 4, 8):
                    row[f'batch_{batch}_gb'] = round(weights + batch * per_sample, 1)
                rows.append(row)
    return rows


def run() -> dict:
    config = cut_preset(VIT_LAYERS, LLM_LAYERS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _training_set(root)
        base = write_random_openvla_base(root / 'base', openvla_layout(config))
        measured = {
            precision: _two_ranks(data, base, root / precision, precision)
            for precision in ('float32', 'bfloat16')
        }
    return {
        'cut': {'vit_layers': VIT_LAYERS, 'llm_layers': LLM_LAYERS, 'ranks': 2, 'batch': 2},
        'base_float32': measured['float32'],
        'base_bf16': measured['bfloat16'],
        'full_size_per_rank': full_size_per_rank(),
        'per_gpu_table': memory_table(),
    }
