"""The 7B model on a GPU: chunk latency in bf16, with torch.compile and with int8 weights, and LoRA
+ FiLM training steps at batch 4 and 8 per GPU with their peak GPU memory; bench/gpu_check.sh.

Random weights in openvla-7b's exported layout (`model.random_base`, as openvla7b_real_size),
so the figures are about time and memory, not actions. The chunk is one observation of three
480x640 cameras and a 14-D proprio (median of 5 after 2 warm-up calls); the paper reports
0.321 s per chunk for OFT+ on an A100. Training steps run the whole model (32 Llama layers) as
`train` builds it (the base in bf16, what trains in float32, bf16 autocast, AdamW), at batch 4
and 8 without and with gradient checkpointing, 3 steps each, the last 2 timed; a batch that
does not fit says OOM. OFT_GPU_CHECK_PRESET=tiny runs the same code paths on any device
in seconds (a dry run); OFT_GPU_CHECK_COMPILE=0 skips torch.compile.
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_openvla7b_real_size import INSTRUCTION, _write_base
from oft_policy_node import robot
from oft_policy_node.model import NormStats, OftPolicy, get_preset
from oft_policy_node.model.config import OftConfig
from oft_policy_node.model.quantization import parameter_bytes
from oft_policy_node.model.testing import DEFAULT_INSTRUCTIONS, random_observation
from oft_training.training.policy_setup import build_policy

ONLY_WHEN_NAMED = True  # a GPU and 17 GB of disk: bench/gpu_check.sh names it
PAPER_A100_CHUNK_S = 0.321  # OpenVLA-OFT+ (Kim, Finn, Liang 2025), ALOHA, one A100
STEPS_PER_BATCH = 3


def _device() -> torch.device:
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _load(base: Path | None, preset: str) -> OftPolicy:
    stats = NormStats.from_limits(*robot.action_limits())
    if base is None:  # the dry run: a random small model, no base checkpoint
        policy = OftPolicy._build(get_preset(preset), None, stats, _device(), torch.bfloat16)
        policy.instructions = DEFAULT_INSTRUCTIONS
        return policy.eval()
    return OftPolicy.from_openvla(base, stats=stats, device=_device(), dtype=torch.bfloat16)


def _latency(policy: OftPolicy, observation: tuple, warmup: int = 2, runs: int = 5) -> dict:
    start = time.perf_counter()
    for _ in range(warmup):
        policy.predict_action_chunk(*observation, INSTRUCTION)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(runs):
        _sync()
        start = time.perf_counter()
        policy.predict_action_chunk(*observation, INSTRUCTION)  # returns numpy: synchronised
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        'median_s': round(median, 4),
        'min_s': round(min(times), 4),
        'warmup_s': round(warmup_s, 2),
        'vs_paper_a100': round(median / PAPER_A100_CHUNK_S, 2),
    }


def _peak_gib() -> float | None:
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 1024**3, 2)


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _free() -> None:
    """Return what the deleted model held (call after `del`)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _inference(base: Path | None, preset: str) -> dict:
    results = {}
    policy = _load(base, preset)
    observation = random_observation(policy.config, seed=0)
    _reset_peak()
    results['bf16'] = {**_latency(policy, observation), 'peak_gpu_gib': _peak_gib()}
    if os.environ.get('OFT_GPU_CHECK_COMPILE', '1') != '0':
        try:
            policy.network.compile()
            results['bf16_compiled'] = _latency(policy, observation)
        except Exception as exc:  # noqa: BLE001 (report any compile failure, go on)
            results['bf16_compiled'] = {'error': f'{type(exc).__name__}: {exc}'[:300]}
    del policy
    _free()
    policy = _load(base, preset)
    _reset_peak()
    before = parameter_bytes(policy.network.llm.model)
    policy.quantize('int8')
    results['int8'] = {
        **_latency(policy, observation),
        'peak_gpu_gib': _peak_gib(),
        'llm_decoder_bytes': {'bf16': before, 'int8': parameter_bytes(policy.network.llm.model)},
    }
    del policy
    _free()
    return results


def _training(base: Path | None, preset: str) -> dict:
    """`train`'s own build (the base in bf16 on the GPU, what trains in float32) under bf16
    autocast, batch 4 and 8, without and then with gradient checkpointing."""
    results = {}
    device = _device()
    stats = NormStats.from_limits(*robot.action_limits())
    base_dir = str(base) if base is not None else None
    policy = build_policy(
        preset, base_dir, stats, DEFAULT_INSTRUCTIONS, device=device, base_dtype=torch.bfloat16
    )
    policy.train()
    config = policy.config
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-4, weight_decay=0.01)
    for checkpointing in (False, True):  # checkpointing cannot be switched off again
        if checkpointing:
            policy.network.enable_gradient_checkpointing()
        for batch_size in (4, 8):
            key = f'batch_{batch_size}' + ('_checkpointing' if checkpointing else '')
            results[key] = _steps(policy, optimizer, config, batch_size, device)
    results['trainable_parameters'] = sum(p.numel() for p in trainable)
    del policy, optimizer, trainable
    _free()
    return results


def _steps(
    policy: OftPolicy,
    optimizer: torch.optim.Optimizer,
    config: OftConfig,
    batch_size: int,
    device: torch.device,
) -> dict:
    g = torch.Generator().manual_seed(batch_size)
    shape = (batch_size, len(config.camera_names), 3, config.image_size, config.image_size)
    batch = {
        'images': torch.rand(shape, generator=g).to(device),
        'proprio': (torch.rand(batch_size, config.proprio_dim, generator=g) * 2 - 1).to(device),
        'actions': (
            torch.rand(batch_size, config.chunk_size, config.action_dim, generator=g) * 2 - 1
        ).to(device),
        'instructions': [DEFAULT_INSTRUCTIONS[i % 2] for i in range(batch_size)],
    }
    _reset_peak()
    try:
        times = []
        for _ in range(STEPS_PER_BATCH):
            _sync()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss, _ = policy(batch)
            loss.backward()
            optimizer.step()
            _sync()
            times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError as exc:
        optimizer.zero_grad(set_to_none=True)
        _free()
        return {'error': f'OOM: {str(exc)[:200]}'}
    step_s = statistics.mean(times[1:])
    return {
        'steps_per_s': round(1.0 / step_s, 3),
        'step_s': round(step_s, 3),
        'first_step_s': round(times[0], 3),
        'peak_gpu_gib': _peak_gib(),
        'loss': round(loss.item(), 4),
    }


def run() -> dict:
    preset = os.environ.get('OFT_GPU_CHECK_PRESET', 'openvla-7b')
    results: dict = {'preset': preset, 'device': str(_device())}
    if torch.cuda.is_available():
        results['gpu'] = torch.cuda.get_device_name(0)
        results['gpu_memory_gib'] = round(
            torch.cuda.get_device_properties(0).total_memory / 1024**3, 1
        )
    scratch = Path(os.environ.get('OFT_BENCH_SCRATCH', tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix='gpu_7b_', dir=scratch) as tmp:
        base = None
        if preset == 'openvla-7b':
            base = Path(tmp) / 'openvla-7b'
            start = time.perf_counter()
            results['base_checkpoint'] = _write_base(base)
            results['base_checkpoint']['write_s'] = round(time.perf_counter() - start, 1)
        print('chunk latency: bf16, compiled, int8', flush=True)
        results['chunk'] = _inference(base, preset)
        print('training steps at batch 4 and 8 per GPU', flush=True)
        results['training'] = _training(base, preset)
    return results
