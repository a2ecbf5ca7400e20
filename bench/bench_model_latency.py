"""Per-chunk latency (p50/p95) of the OFT+ policy on the CPU, 3 cameras: `tiny` and `small` in
float32 on one thread, and `small` in float32 and bfloat16 on every core side by side, with
each stage's share of the time.

Each call is the whole `predict_action_chunk`: 3 x 480x640 uint8 images and a 14-D proprio in,
(25, 14) actions out (pre-processing, FiLM vision, Llama, action head, un-normalisation), with
the instruction's conditioning cached as in deployment. Stages are timed by forward hooks on
the network's modules: `vision` (both FiLM-ed ViTs), `llm` (the Llama pass), `head` (the action
head); `other` is the rest (image resizing and normalisation, the projectors, un-normalising).
`bfloat16` runs the float32 weights under CPU autocast to bfloat16 (matmuls and convolutions
in bf16: AVX-512 BF16 / AMX where the CPU has them; `cpu_bf16` lists the flags /proc/cpuinfo
shows); `bf16_speedup` is the float32 p50 over the bfloat16 p50.
"""

from __future__ import annotations

import operator
import os
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from oft_policy_node.model import OftPolicy
from oft_policy_node.model.testing import DEFAULT_INSTRUCTIONS, random_observation, random_policy
from oft_training.training.precision import cpu_bf16_flags

ONE_THREAD_RUNS = {'tiny': 30, 'small': 15}
DTYPE_RUNS = 15
WARMUP = 3
STAGES = {'vision': 'vision', 'llm': 'llm.model', 'head': 'action_head'}  # network modules


def time_calls(fn: Callable[[], object], n: int, label: str) -> list[float]:
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


class StageTimer:
    """Wall time spent inside each stage module, summed over the calls while attached."""

    def __init__(self, policy: OftPolicy) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._hooks = []
        for stage, attribute in STAGES.items():
            module = operator.attrgetter(attribute)(policy.network)
            started: list[float] = []
            self._hooks += [
                module.register_forward_pre_hook(
                    lambda *_, s=started: s.append(time.perf_counter())
                ),
                module.register_forward_hook(lambda *_, s=started, name=stage: self._add(name, s)),
            ]

    def _add(self, stage: str, started: list[float]) -> None:
        self.seconds[stage] += time.perf_counter() - started.pop()

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


def measure(policy: OftPolicy, n: int, label: str, bf16: bool = False) -> dict:
    images, proprio = random_observation(policy.config)

    def call() -> None:
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            policy.predict_action_chunk(images, proprio, DEFAULT_INSTRUCTIONS[0])

    result = summary(time_calls(call, n, label), policy.config.chunk_size)
    timer = StageTimer(policy)
    total = sum(time_calls(call, n, f'{label} stages'))
    timer.close()
    shares = {stage: timer.seconds[stage] / total for stage in STAGES}
    shares['other'] = 1.0 - sum(shares.values())
    result['stage_share'] = {k: round(v, 3) for k, v in shares.items()}
    return result


def run() -> dict:
    threads = torch.get_num_threads()
    results: dict = {'device': 'cpu', 'load_average': os.getloadavg()[0]}
    torch.set_num_threads(1)
    results['one_thread'] = {
        preset: measure(random_policy(preset), n, preset) for preset, n in ONE_THREAD_RUNS.items()
    }
    torch.set_num_threads(threads)
    small = random_policy('small')
    results['small_all_cores'] = {'torch_threads': threads, 'cpu_bf16': cpu_bf16_flags()}
    results['small_all_cores']['float32'] = measure(small, DTYPE_RUNS, 'small float32')
    results['small_all_cores']['bfloat16'] = measure(small, DTYPE_RUNS, 'small bf16', bf16=True)
    fp32, bf16 = (results['small_all_cores'][d]['p50_ms'] for d in ('float32', 'bfloat16'))
    results['small_all_cores']['bf16_speedup'] = round(fp32 / bf16, 2)
    return results
