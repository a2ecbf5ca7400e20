#!/usr/bin/env bash
# The 7B figures on a GPU machine, in under 8 minutes: chunk latency in bf16, with torch.compile
# and with int8 weights (against the paper's 0.321 s on an A100), and LoRA + FiLM training steps
# per second and peak GPU memory at batch 4 and 8 per GPU, without and with gradient
# checkpointing (bench/bench_gpu_7b.py). Writes
# bench_results/gpu_7b.json and prints it; needs the workspace set up (make build) and about
# 17 GB of free disk for the random base (OFT_BENCH_SCRATCH to put it elsewhere).
#
#   bash bench/gpu_check.sh                        # the real sizes (needs a CUDA GPU)
#   OFT_GPU_CHECK_PRESET=tiny bash bench/gpu_check.sh   # a dry run of the same code paths
set -eo pipefail  # not -u: colcon's setup scripts read unset variables
cd "$(dirname "$0")/.."
source scripts/env.sh
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
timeout "${OFT_GPU_CHECK_TIMEOUT:-470}" python -m bench gpu_7b
