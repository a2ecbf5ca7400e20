"""Actions/s of OFT parallel decoding vs the original OpenVLA autoregressive decoding (same model).

Both modes run on the same random-weight `tiny` and `small` policies on the CPU: parallel
decoding fills all K*D = 350 action slots in one bidirectional forward pass; the baseline
generates the 350 discrete action tokens one per forward with a KV cache. Actions/s counts
K = 25 robot actions per chunk (the paper: 77.9 Hz vs 1.8 Hz on ALOHA with the 7B model).
One torch thread, as bench_model_latency.
"""

from __future__ import annotations

import torch

from bench.bench_model_latency import summary, time_calls
from oft_policy_node.model.testing import DEFAULT_INSTRUCTIONS, random_observation, random_policy

RUNS = {
    'tiny': {'parallel': 20, 'autoregressive': 3},
    'small': {'parallel': 10, 'autoregressive': 2},
}


def run() -> dict:
    torch.set_num_threads(1)
    results = {'device': 'cpu', 'torch_threads': 1}
    for preset, runs in RUNS.items():
        policy = random_policy(preset)
        images, proprio = random_observation(policy.config)
        row = {}
        for mode, n in runs.items():
            row[mode] = summary(
                time_calls(
                    lambda p=policy, m=mode, i=images, q=proprio: p.predict_action_chunk(
                        i, q, DEFAULT_INSTRUCTIONS[0], decoding=m
                    ),
                    n,
                    f'{preset} {mode}',
                ),
                policy.config.chunk_size,
            )
        row['speedup'] = round(
            row['parallel']['actions_per_s'] / row['autoregressive']['actions_per_s'], 1
        )
        results[preset] = row
    return results
