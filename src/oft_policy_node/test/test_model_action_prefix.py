"""The optional action prefix (real-time chunking): given rows reach the model, the loss counts
only the rows after them, no prefix is exactly the policy without the option, bad prefixes
are refused, and the option exists at the real OpenVLA-7B size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oft_policy_node.model import OftPolicy, get_preset
from oft_policy_node.model.lora import set_trainable
from oft_policy_node.model.network import ActionPrefix, OftNetwork
from oft_policy_node.model.testing import one_torch_thread, random_observation, random_policy

from .test_model_policy import make_batch

D_MAX = 6


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


def prefix_policy(seed: int = 0) -> OftPolicy:
    """A random tiny policy with the option, its prefix embedding as large as its slots'."""
    plain = random_policy('tiny', seed)
    policy = OftPolicy(
        plain.config.replace(prefix_steps=D_MAX),
        instructions=plain.instructions,
        stats=plain.stats,
    ).eval()
    missing = policy.network.load_state_dict(plain.network.state_dict(), strict=False)
    assert set(missing.missing_keys) == {'action_prefix.given', 'action_prefix.value'}
    with torch.no_grad():  # a trained embedding is no smaller than the 0.02 it starts at
        policy.network.action_prefix.value.normal_(0.0, 1.0)
    return policy


def test_given_rows_reach_every_row_after_them_and_come_back_as_given():
    policy = prefix_policy()
    images, proprio = random_observation(policy.config, seed=3)
    plain = policy.predict_action_chunk(images, proprio, 'put green pepper into pot')
    given = plain[:4] + np.linspace(-0.05, 0.05, 14, dtype=np.float32)
    chunk = policy.predict_action_chunk(images, proprio, 'put green pepper into pot', prefix=given)
    np.testing.assert_array_equal(chunk[:4], given)
    changed = given.copy()
    changed[2, 5] += 0.3  # one value of one given row
    other = policy.predict_action_chunk(
        images, proprio, 'put green pepper into pot', prefix=changed
    )
    np.testing.assert_array_equal(other[:4], changed)
    moved = np.abs(other[4:] - chunk[4:]).max(axis=1)  # (K - 4,)
    assert (moved > 1e-6).all(), moved  # every predicted row reads the given ones


def test_no_prefix_is_exactly_the_policy_without_the_option(tmp_path):
    plain = random_policy('tiny', seed=2)
    policy = prefix_policy(seed=2)
    images, proprio = random_observation(plain.config, seed=4)
    expected = plain.predict_action_chunk(images, proprio, 'put red pepper into pot')
    for prefix in (None, np.zeros((0, 14), np.float32)):
        got = policy.predict_action_chunk(
            images, proprio, 'put red pepper into pot', prefix=prefix
        )
        np.testing.assert_array_equal(got, expected)
    batch = make_batch(plain, 3, seed=7)
    with torch.no_grad():
        loss_plain, _ = plain(batch)
        loss_zero, _ = policy({**batch, 'prefix_steps': torch.zeros(3, dtype=torch.long)})
    assert loss_zero.item() == loss_plain.item()
    # A checkpoint saved without the option loads as before: no prefix, no new weights.
    loaded = OftPolicy.from_pretrained(plain.save_pretrained(tmp_path / 'plain'))
    assert loaded.config.prefix_steps == 0 and not hasattr(loaded.network, 'action_prefix')
    np.testing.assert_array_equal(
        loaded.predict_action_chunk(images, proprio, 'put red pepper into pot'), expected
    )
    saved = policy.save_pretrained(tmp_path / 'prefix')
    assert OftPolicy.from_pretrained(saved).config.prefix_steps == D_MAX


def test_the_loss_counts_only_the_rows_after_the_given_ones():
    policy = prefix_policy(seed=5)
    batch = make_batch(policy, 3, seed=9)
    steps = torch.tensor([0, 2, D_MAX])
    with torch.no_grad():
        loss, metrics = policy({**batch, 'prefix_steps': steps})
        cond = policy.network.condition(
            *policy.tokenize(batch['instructions']), policy.tokenizer.bos_token_id
        )
        pred = policy.network(
            batch['images'], batch['proprio'], cond, ActionPrefix(batch['actions'], steps)
        )
    l1 = (pred - batch['actions']).abs()  # (B, K, D)
    rows = [l1[b, int(d) :] for b, d in enumerate(steps)]
    expected = torch.cat(rows).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    first = torch.stack([l1[b, int(d)] for b, d in enumerate(steps)]).mean()
    assert metrics['l1_first_action'] == pytest.approx(first.item(), rel=1e-6)
    # What the model predicts for a given row never reaches the loss: a different target
    # there (same input) leaves it unchanged.
    off = batch['actions'].clone()
    off[1, :2] += 0.5
    with torch.no_grad():
        cond = policy.network.condition(
            *policy.tokenize(batch['instructions']), policy.tokenizer.bos_token_id
        )
        slots = policy.network.slot_states(
            batch['images'], batch['proprio'], cond, ActionPrefix(batch['actions'], steps)
        )
        same, _ = policy.action_loss(slots, off, steps)
    assert same.item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize(
    'prefix, message',
    [
        (np.zeros((D_MAX + 1, 14)), 'at most prefix_steps=6'),
        (np.zeros((2, 13)), r'must be \(d, 14\)'),
        (np.full((2, 14), np.nan), 'non-finite'),
    ],
)
def test_bad_prefixes_are_refused(prefix, message):
    policy = prefix_policy()
    images, proprio = random_observation(policy.config, seed=1)
    with pytest.raises(ValueError, match=message):
        policy.predict_action_chunk(images, proprio, 'put green pepper into pot', prefix=prefix)


def test_a_policy_without_the_option_refuses_a_prefix():
    policy = random_policy('tiny')
    images, proprio = random_observation(policy.config, seed=1)
    with pytest.raises(ValueError, match=r'prefix_steps=0 \(0: trained without'):
        policy.predict_action_chunk(
            images, proprio, 'put green pepper into pot', prefix=np.zeros((1, 14))
        )


def test_openvla_7b_size_has_the_option_and_trains_it_under_lora():
    config = get_preset('openvla-7b').replace(prefix_steps=12)
    with torch.device('meta'):
        network = OftNetwork(config, init_base=False)
    set_trainable(network, config)
    shapes = {n: tuple(p.shape) for n, p in network.named_parameters() if 'action_prefix' in n}
    assert shapes == {'action_prefix.given': (14, 4096), 'action_prefix.value': (14, 4096)}
    assert all(p.requires_grad for n, p in network.named_parameters() if 'action_prefix' in n)
    with pytest.raises(ValueError, match='prefix_steps=25 must be >= 0 and less than'):
        config.replace(prefix_steps=25)
