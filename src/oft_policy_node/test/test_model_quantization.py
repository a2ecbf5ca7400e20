"""Weight-only quantization of the Llama for inference (model/quantization.py, torchao): int8
stores the decoder's linear weights in a quarter of the bytes and the chunk stays close; int4
off CUDA and unknown modes are refused saying why."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oft_policy_node import robot
from oft_policy_node.model import NormStats, OftPolicy, get_preset
from oft_policy_node.model.quantization import parameter_bytes
from oft_policy_node.model.testing import one_torch_thread, random_observation


@pytest.fixture
def policy() -> OftPolicy:
    with one_torch_thread(), torch.random.fork_rng():
        torch.manual_seed(0)
        policy = OftPolicy(
            get_preset('small'),
            stats=NormStats.from_limits(*robot.action_limits()),
            instructions=['go'],
        )
        yield policy.eval()


def test_int8_quarters_the_llama_linear_weights_and_keeps_the_chunk_close(policy):
    observation = random_observation(policy.config, seed=0)
    with one_torch_thread():
        before_chunk = policy.predict_action_chunk(*observation, 'go')
        linears = [m for m in policy.network.llm.model.modules() if isinstance(m, torch.nn.Linear)]
        before = sum(parameter_bytes(m) for m in linears)
        assert policy.quantize('int8') == len(linears) == 7 * policy.config.llm.num_layers
        after = sum(parameter_bytes(m) for m in linears)
        chunk = policy.predict_action_chunk(*observation, 'go')
    assert type(linears[0].weight).__name__ == 'Int8Tensor'
    # int8 weights plus a float32 scale per output channel, against float32 weights.
    assert 0.24 < after / before < 0.27
    # The action head, vision and FiLM are untouched.
    assert policy.network.action_head.fc1.weight.dtype == torch.float32
    assert np.isfinite(chunk).all() and chunk.shape == (25, 14)
    span = robot.action_limits()[1] - robot.action_limits()[0]
    # A random model's chunk moves by a few percent of each joint's range at most.
    assert (np.abs(chunk - before_chunk) / span).max() < 0.05


def test_int4_needs_cuda_and_unknown_modes_are_refused(policy):
    with pytest.raises(ValueError, match='int4 needs the policy on a CUDA GPU'):
        policy.quantize('int4')
    with pytest.raises(ValueError, match="quantization='fp8'"):
        policy.quantize('fp8')
    assert policy.quantize('none') == 0
