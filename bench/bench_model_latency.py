"""Per-chunk latency (p50/p95) of the OFT+ policy, `tiny` and `small` presets, 3 cameras, CPU.

Each call is the whole `predict_action_chunk`: 3 x 480x640 uint8 images and a 14-D proprio in,
(25, 14) actions out (pre-processing, FiLM vision, Llama, action head, un-normalisation), with
the instruction's conditioning cached as in deployment.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from tqdm import tqdm

from oft_policy_node.model.testing import DEFAULT_INSTRUCTIONS, random_observation, random_policy

RUNS = {'tiny': 30, 'small': 15}
WARMUP = 3


def time_calls(fn, n: int, label: str) -> list[float]:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in tqdm(range(n), desc=label, leave=False):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float], chunk_size: int) -> dict:
    t = np.asarray(times)
    return {
        'runs': len(t),
        'p50_ms': round(float(np.percentile(t, 50)) * 1e3, 2),
        'p95_ms': round(float(np.percentile(t, 95)) * 1e3, 2),
        'actions_per_s': round(chunk_size / float(np.median(t)), 1),
    }


def run() -> dict:
    torch.set_num_threads(1)
    results = {'device': 'cpu', 'torch_threads': 1, 'load_average': os.getloadavg()[0]}
    for preset, n in RUNS.items():
        policy = random_policy(preset)
        images, proprio = random_observation(policy.config)
        results[preset] = summary(
            time_calls(
                lambda p=policy, im=images, q=proprio: p.predict_action_chunk(
                    im, q, DEFAULT_INSTRUCTIONS[0]
                ),
                n,
                preset,
            ),
            policy.config.chunk_size,
        )
        results[preset]['parameters'] = sum(p.numel() for p in policy.parameters())
    return results
