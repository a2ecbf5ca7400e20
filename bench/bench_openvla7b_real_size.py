"""OpenVLA-7B at its real size on this CPU: base checkpoint write and load, one chunk, reload.

What a user's first steps with `openvla/openvla-7b` do, on random weights in the exported
layout (every tensor of src/oft_policy_node/test/data/openvla_7b_tensors.txt, bf16 shards split
as the exporter's, their index and a Llama-format tokenizer; `model.random_base`):

1. write the 15 GB base checkpoint, streamed tensor by tensor;
2. `OftPolicy.from_openvla(..., dtype=bfloat16)`: load time and peak memory;
3. `predict_action_chunk` from three 480x640 images and a 14-D proprio: the first call
   (tokenises the instruction and computes its FiLM conditioning) and a second (cached);
4. `save_pretrained(base_weights='reference')` with FiLM and LoRA made non-zero (so the
   fine-tuned tensors matter), then `from_pretrained` in a fresh model: the chunk again, which
   must be bit-identical; then that model's Llama quantized to int8 (`quantize('int8')`,
   torchao weight-only): its bytes, the chunk's latency, and the largest and mean difference
   from the bf16 chunk on the same inputs (random weights: a measure of the rounding, not of
   task success);
5. one LoRA + FiLM training step at the real widths with the Llama cut to 2 of its 32 layers
   (AdamW, bf16; batch 2), with the trainable-parameter table;
6. the memory each training rank holds at the full size before activations (weights,
   gradients, AdamW states), for the float32 build and the meta-device bf16 build `train`
   makes now, and the host memory a rank needs to build it (bench_training_memory measures
   two ranks at a cut size).

The base is written under $OFT_BENCH_SCRATCH (default: the system temp folder) and removed
afterwards; it needs about 17 GB of free disk. Peak memory per phase: `bench.memory`.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.bench_training_memory import full_size_per_rank
from bench.memory import GIB, PeakMemory
from oft_policy_node import robot
from oft_policy_node.model import NormStats, OftPolicy, get_preset
from oft_policy_node.model.quantization import parameter_bytes
from oft_policy_node.model.random_base import read_tensor_layout, write_random_openvla_base
from oft_policy_node.model.testing import DEFAULT_INSTRUCTIONS, random_observation, randomize_film
from oft_policy_node.model.tokenizer import HfTokenizer

# 11 min, 17 GB of disk, 16 GB of memory: only `python -m bench openvla7b_real_size` runs it.
ONLY_WHEN_NAMED = True
LAYOUT = (
    Path(__file__).resolve().parents[1] / 'src/oft_policy_node/test/data/openvla_7b_tensors.txt'
)
NEEDED_DISK_BYTES = 17 * 10**9
INSTRUCTION = DEFAULT_INSTRUCTIONS[0]
TRAIN_BATCH = 2
TRAIN_LLM_LAYERS = 2
# bf16 weights, gradients and AdamW states: in float32 the 2.2 B parameters, the 0.83 B
# trainable ones' gradients and AdamW's two moments alone take 18.8 GB, before activations.
TRAIN_DTYPE = torch.bfloat16


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 2)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob('*') if p.is_file())


def _write_base(base: Path) -> dict:
    layout = read_tensor_layout(LAYOUT)
    with PeakMemory() as peak:
        _, seconds = _timed(
            lambda: write_random_openvla_base(
                base,
                layout,
                on_shard=lambda name, n: print(f'  wrote {name}: {n / 1e9:.2f} GB', flush=True),
            )
        )
    size = _folder_bytes(base)
    return {
        'tensors': len(layout),
        'parameters': sum(torch.Size(shape).numel() for _, shape in layout),
        'bytes': size,
        'write_s': seconds,
        'write_gb_per_s': round(size / 1e9 / seconds, 3),
        **peak.report(),
    }


def _make_fine_tuned(policy: OftPolicy, seed: int = 0) -> None:
    """FiLM and LoRA B start at zero (identity); random values make them change the chunk."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        randomize_film(policy, std=0.002)
        with torch.no_grad():
            for name, param in policy.network.named_parameters():
                if 'lora_B' in name:
                    param.normal_(0.0, 0.002)
    policy.reset()


def _chunk_calls(policy: OftPolicy, observation: tuple) -> tuple[np.ndarray, dict]:
    chunk, first = _timed(lambda: policy.predict_action_chunk(*observation, INSTRUCTION))
    again, cached = _timed(lambda: policy.predict_action_chunk(*observation, INSTRUCTION))
    if not np.array_equal(chunk, again):
        raise AssertionError('two calls on the same observation gave different chunks')
    return chunk, {'first_call_s': first, 'cached_instruction_s': cached}


def _inference(base: Path, scratch: Path) -> dict:
    stats = NormStats.from_limits(*robot.action_limits())
    with PeakMemory() as load_peak:
        policy, load_s = _timed(
            lambda: OftPolicy.from_openvla(base, stats=stats, dtype=torch.bfloat16).eval()
        )
    config = policy.config
    observation = random_observation(config, seed=0)  # 3 x 480x640 uint8, 14-D proprio
    _make_fine_tuned(policy)
    with PeakMemory() as chunk_peak:
        chunk, latency = _chunk_calls(policy, observation)
    if not np.isfinite(chunk).all() or chunk.shape != (config.chunk_size, config.action_dim):
        raise AssertionError(f'chunk {chunk.shape} is not a finite (25, 14) array')
    checkpoint = scratch / 'fine_tuned'
    _, save_s = _timed(partial(policy.save_pretrained, checkpoint, base_weights='reference'))
    parameters = sum(p.numel() for p in policy.parameters())
    del policy
    gc.collect()
    with PeakMemory() as reload_peak:
        reloaded, reload_s = _timed(
            lambda: OftPolicy.from_pretrained(checkpoint, dtype=torch.bfloat16)
        )
    again = reloaded.predict_action_chunk(*observation, INSTRUCTION)
    int8 = _int8(reloaded, observation, again)
    del reloaded
    gc.collect()
    return {
        'parameters': parameters,
        'load': {'from_openvla_s': load_s, **load_peak.report()},
        'chunk': {
            **latency,
            'images': {cam: list(img.shape) for cam, img in observation[0].items()},
            'proprio_dim': int(observation[1].shape[0]),
            **chunk_peak.report(),
        },
        'reference_checkpoint': {
            'save_s': save_s,
            'bytes': _folder_bytes(checkpoint),
            'from_pretrained_s': reload_s,
            **reload_peak.report(),
            'chunk_bit_identical': bool(np.array_equal(chunk, again)),
            'max_abs_difference': float(np.abs(chunk - again).max()),
        },
        'int8': int8,
    }


def _int8(policy: OftPolicy, observation: tuple, bf16_chunk: np.ndarray) -> dict:
    """Quantize the Llama to int8 in place and measure it against the bf16 chunk."""
    model_before = parameter_bytes(policy.network)
    llm_before = parameter_bytes(policy.network.llm.model)
    with PeakMemory() as peak:
        layers, quantize_s = _timed(lambda: policy.quantize('int8'))
        chunk, latency = _chunk_calls(policy, observation)
    difference = np.abs(chunk - bf16_chunk)
    span = robot.action_limits()[1] - robot.action_limits()[0]
    return {
        'linear_layers': layers,
        'quantize_s': quantize_s,
        'llm_decoder_bytes': {
            'bf16': llm_before,
            'int8': parameter_bytes(policy.network.llm.model),
        },
        'model_bytes': {'bf16': model_before, 'int8': parameter_bytes(policy.network)},
        'chunk': {**latency, **peak.report()},
        'difference_from_bf16': {
            'max_abs': float(difference.max()),
            'mean_abs': float(difference.mean()),
            'max_share_of_joint_range': float((difference / span).max()),
        },
    }


def _training_step(base: Path) -> dict:
    """Real widths, the Llama cut to TRAIN_LLM_LAYERS: random weights (the 7B base's other
    layers have nowhere to go), so this measures the step, not learning."""
    full = get_preset('openvla-7b')
    config = full.replace(llm=dataclasses.replace(full.llm, num_layers=TRAIN_LLM_LAYERS))
    torch.manual_seed(0)
    with PeakMemory() as peak:
        policy = OftPolicy(
            config,
            tokenizer=HfTokenizer(base),
            stats=NormStats.from_limits(*robot.action_limits()),
        ).to(TRAIN_DTYPE)
        _make_fine_tuned(policy)
        policy.train()
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=5e-4)
        g = torch.Generator().manual_seed(0)
        batch = {
            'images': torch.rand(
                TRAIN_BATCH,
                len(config.camera_names),
                3,
                config.image_size,
                config.image_size,
                generator=g,
            ),
            'proprio': torch.rand(TRAIN_BATCH, config.proprio_dim, generator=g) * 2 - 1,
            'actions': torch.rand(TRAIN_BATCH, config.chunk_size, config.action_dim, generator=g)
            * 2
            - 1,
            'instructions': list(DEFAULT_INSTRUCTIONS[:TRAIN_BATCH]),
        }
        before = {
            n: p.detach().clone()
            for n, p in policy.network.named_parameters()
            if 'lora_A' in n or 'dino_film' in n
        }

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = policy(batch)
            loss.backward()
            optimizer.step()
            return loss.item()

        loss, step_s = _timed(step)
    changed = sum(
        not torch.equal(before[n], p) for n, p in policy.network.named_parameters() if n in before
    )
    return {
        'llm_layers': TRAIN_LLM_LAYERS,
        'batch': TRAIN_BATCH,
        'dtype': str(TRAIN_DTYPE).removeprefix('torch.'),
        'step_s': step_s,
        'loss': round(loss, 4),
        'lora_a_and_dino_film_tensors_changed': f'{changed}/{len(before)}',
        'parameters': sum(p.numel() for p in policy.parameters()),
        'trainable': sum(p.numel() for p in trainable),
        'parameter_table': policy.parameter_table().splitlines(),
        **peak.report(),
    }


def run() -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    scratch_root = Path(os.environ.get('OFT_BENCH_SCRATCH', tempfile.gettempdir()))
    free = shutil.disk_usage(scratch_root).free
    if free < NEEDED_DISK_BYTES:
        raise RuntimeError(
            f'{scratch_root} has {free / 1e9:.1f} GB free; the 7B base needs '
            f'{NEEDED_DISK_BYTES / 1e9:.0f} GB: set OFT_BENCH_SCRATCH to a roomier folder'
        )
    results = {
        'torch_threads': torch.get_num_threads(),
        'machine_memory_gib': round(
            os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB, 1
        ),
    }
    with tempfile.TemporaryDirectory(prefix='openvla7b_', dir=scratch_root) as tmp:
        scratch = Path(tmp)
        base = scratch / 'openvla-7b'
        print('writing the random base checkpoint (15 GB)', flush=True)
        results['base_checkpoint'] = _write_base(base)
        print('loading, predicting, saving by reference, reloading', flush=True)
        results.update(_inference(base, scratch))
        print('one training step, Llama cut to 2 layers', flush=True)
        results['training_step'] = _training_step(base)
    results['training_build_per_rank'] = full_size_per_rank()
    return results
