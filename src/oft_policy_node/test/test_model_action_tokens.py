"""The autoregressive baseline's discrete actions against OpenVLA's ActionTokenizer
(moojink/openvla-oft prismatic/vla/action_tokenizer.py), recomputed here with numpy exactly as
it is written there: `vocab_size - np.digitize(clip(a, -1, 1), linspace(-1, 1, 256))` to encode,
`bin_centers[clip(vocab_size - id - 1, 0, 254)]` to decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oft_policy_node.model.action_tokens import ActionTokens

VOCAB = 32000  # Llama-2's text vocabulary


def openvla_encode(actions: np.ndarray) -> np.ndarray:
    bins = np.linspace(-1, 1, 256)
    return VOCAB - np.digitize(np.clip(actions, a_min=-1.0, a_max=1.0), bins)


def openvla_decode(ids: np.ndarray) -> np.ndarray:
    bins = np.linspace(-1, 1, 256)
    centers = (bins[:-1] + bins[1:]) / 2.0
    return centers[np.clip(VOCAB - ids - 1, a_min=0, a_max=centers.shape[0] - 1)]


def test_encode_and_decode_as_openvla():
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.uniform(-1.2, 1.2, 5000), [-1.0, 0.0, 1.0, -2.0, 2.0]])
    tokens = ActionTokens(VOCAB)
    ids = tokens.encode(torch.from_numpy(actions)).numpy()
    np.testing.assert_array_equal(ids, openvla_encode(actions))
    np.testing.assert_allclose(
        tokens.decode(torch.from_numpy(ids)).numpy(), openvla_decode(ids), atol=1e-7
    )


def test_the_highest_id_is_the_lowest_value():
    tokens = ActionTokens(VOCAB)
    ids = tokens.encode(torch.tensor([-1.0, 0.0, 1.0])).tolist()
    assert ids == [31999, 31872, 31744]  # digitize: 1, 128, 256
    assert tokens.first_id == 31744
    values = tokens.decode(torch.tensor(ids)).tolist()
    assert values == pytest.approx([-1 + 1 / 255, 0.0, 1 - 1 / 255], abs=1e-6)
