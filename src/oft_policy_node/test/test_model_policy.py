"""OftPolicy on the `tiny` preset: inference API, FiLM, bidirectional attention, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oft_policy_node import robot
from oft_policy_node.model import NormStats, OftPolicy, get_preset
from oft_policy_node.model.processing import (
    DINO_MEAN,
    DINO_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    normalize_pixels,
)
from oft_policy_node.model.testing import (
    DEFAULT_INSTRUCTIONS,
    make_tiny_checkpoint,
    one_torch_thread,
    random_observation,
)

GREEN, RED = DEFAULT_INSTRUCTIONS[:2]


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope='module')
def checkpoint_dir(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp('tiny'))


@pytest.fixture
def policy(checkpoint_dir):
    return OftPolicy.from_pretrained(checkpoint_dir)


@pytest.fixture
def observation(policy):
    return random_observation(policy.config, seed=1)


def make_batch(policy: OftPolicy, n: int, seed: int) -> dict:
    cfg = policy.config
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    return {
        'images': torch.rand(n, len(cfg.camera_names), 3, s, s, generator=g),
        'proprio': torch.rand(n, cfg.proprio_dim, generator=g) * 2 - 1,
        'actions': torch.rand(n, cfg.chunk_size, cfg.action_dim, generator=g) * 2 - 1,
        'instructions': [DEFAULT_INSTRUCTIONS[i % 3] for i in range(n)],
    }


def test_chunk_shape_units_and_metadata(policy, observation):
    chunk = policy.predict_action_chunk(*observation, GREEN)
    cfg = policy.config
    assert chunk.shape == (cfg.chunk_size, cfg.action_dim) == (25, 14)
    assert chunk.dtype == np.float32
    lower, upper = robot.action_limits()
    assert np.all(chunk >= lower - 1e-5) and np.all(chunk <= upper + 1e-5)
    assert cfg.camera_names == ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
    assert policy.instructions == DEFAULT_INSTRUCTIONS


def test_instructions_change_the_chunk_and_are_cached(policy, observation):
    green = policy.predict_action_chunk(*observation, GREEN)
    red = policy.predict_action_chunk(*observation, RED)
    assert np.abs(green - red).max() > 1e-3
    cached = policy.conditioning(GREEN)
    assert policy.conditioning(GREEN) is cached
    np.testing.assert_array_equal(policy.predict_action_chunk(*observation, GREEN), green)
    policy.reset()
    assert policy.conditioning(GREEN) is not cached


@pytest.mark.parametrize(
    'change, message',
    [
        (
            lambda im, q: ({k: v for k, v in im.items() if k != 'cam_left_wrist'}, q),
            'cam_left_wrist',
        ),
        (lambda im, q: ({**im, 'cam_high': im['cam_high'].astype(np.float32)}, q), 'cam_high'),
        (lambda im, q: ({**im, 'cam_high': im['cam_high'][..., 0]}, q), 'cam_high'),
        (lambda im, q: (im, np.where(np.arange(14) == 3, np.nan, q)), 'non-finite'),
        (lambda im, q: (im, q[:7]), 'proprio'),
    ],
)
def test_bad_inputs_raise_naming_the_problem(policy, observation, change, message):
    images, proprio = change(*observation)
    with pytest.raises(ValueError, match=message):
        policy.predict_action_chunk(images, proprio, GREEN)


@pytest.mark.parametrize('instruction', ['', '   ', None])
def test_empty_instruction_is_rejected(policy, observation, instruction):
    with pytest.raises(ValueError, match='instruction'):
        policy.predict_action_chunk(*observation, instruction)


def test_zeroed_film_gives_the_plain_encoders(policy):
    vision = policy.network.vision
    x = torch.rand(2, 3, policy.config.image_size, policy.config.image_size)
    film_parameters = (*vision.dino_film.parameters(), *vision.siglip_film.parameters())
    with torch.no_grad():
        plain = vision.dino(normalize_pixels(x, DINO_MEAN, DINO_STD), output_hidden_states=True)
        plain = plain.hidden_states[-2][:, vision.num_prefix_tokens :]  # second-to-last block
        lang = torch.randn(2, policy.config.llm.hidden_size)
        saved = [p.clone() for p in film_parameters]
        for p in film_parameters:  # as after training: the maps modulate
            p.normal_(0.0, 0.1)
        assert not torch.allclose(vision.encode_dino(x, vision.film_params(lang)), plain)
        for p in film_parameters:  # as initialised: FiLM is the identity
            p.zero_()
        film = vision.film_params(lang)
        torch.testing.assert_close(vision.encode_dino(x, film), plain, rtol=0, atol=0)
        plain_sig = vision.siglip(
            normalize_pixels(x, SIGLIP_MEAN, SIGLIP_STD), output_hidden_states=True
        ).hidden_states[-2]
        torch.testing.assert_close(vision.encode_siglip(x, film), plain_sig, rtol=0, atol=0)
        for p, value in zip(film_parameters, saved, strict=True):
            p.copy_(value)


def test_attention_is_bidirectional(policy):
    """Perturbing the LAST action slot changes the FIRST timestep's action: not causal."""
    batch = make_batch(policy, 1, seed=3)
    net = policy.network
    with torch.no_grad():
        cond = net.condition(*policy.tokenize(batch['instructions']), 1)
        before = net(batch['images'], batch['proprio'], cond)
        net.action_slots[-1] += 1.0
        after = net(batch['images'], batch['proprio'], cond)
    assert (before[0, 0] - after[0, 0]).abs().max() > 1e-4  # first step moved
    assert not torch.equal(before[0, -1], after[0, -1])


def test_zero_action_slots_differ_only_from_the_second_layer_on():
    """The authors' zero slot inputs (action_slots='zeros'): after the first layer every slot
    has the same state (a zero query attends uniformly, RoPE cannot rotate it), after the
    second they differ (RoPE tells them apart once the states are not zero)."""
    torch.manual_seed(0)
    policy = OftPolicy(get_preset('tiny').replace(action_slots='zeros')).eval()
    batch = make_batch(policy, 1, seed=5)
    net = policy.network
    assert len(net.llm.model.layers) >= 2
    outputs = []
    hooks = [
        layer.register_forward_hook(
            lambda module, args, out: outputs.append(out[0] if isinstance(out, tuple) else out)
        )
        for layer in net.llm.model.layers[:2]
    ]
    try:
        with torch.no_grad():
            cond = net.condition(*policy.tokenize(batch['instructions']), 1)
            net.slot_states(batch['images'], batch['proprio'], cond)
    finally:
        for hook in hooks:
            hook.remove()
    k = net.cfg.num_action_slots
    first, second = (out[0, -k:] for out in outputs)  # (K*D, H) each

    def spread(states: torch.Tensor) -> float:
        return float((states - states[:1]).abs().max() / states.abs().max())

    assert spread(first) < 1e-5
    assert spread(second) > 1e-2


def test_zero_action_slots_are_neither_trained_nor_saved(tmp_path):
    assert get_preset('openvla-7b').action_slots == get_preset('small').action_slots == 'zeros'
    torch.manual_seed(0)
    config = get_preset('tiny').replace(action_slots='zeros')
    policy = OftPolicy(config, stats=NormStats.from_limits(*robot.action_limits())).eval()
    assert 'action_slots' not in dict(policy.network.named_parameters())
    assert 'action_slots' not in policy.network.state_dict()
    assert not policy.network.action_slots.any()
    observation = random_observation(config)
    chunk = policy.predict_action_chunk(*observation, 'put green pepper into pot')
    loaded = OftPolicy.from_pretrained(policy.save_pretrained(tmp_path / 'ckpt'))
    assert loaded.config.action_slots == 'zeros'
    np.testing.assert_array_equal(
        loaded.predict_action_chunk(*observation, 'put green pepper into pot'), chunk
    )
    with pytest.raises(ValueError, match=r"action_slots='random'; expected one of"):
        config.replace(action_slots='random')


def test_learned_action_slots_are_trained_saved_and_assumed_by_configs_without_the_field(tmp_path):
    """Checkpoints saved before `action_slots` existed (the committed policies among them) carry
    learned slot weights and no field: they must load as 'learned', not as the new default."""
    torch.manual_seed(0)
    config = get_preset('tiny')  # learned: its Llama has 2 layers (config.py)
    assert config.action_slots == 'learned'
    policy = OftPolicy(config, stats=NormStats.from_limits(*robot.action_limits())).eval()
    assert dict(policy.network.named_parameters())['action_slots'].requires_grad
    with torch.no_grad():
        policy.network.action_slots.normal_()  # far from zero, so zeros would change the chunk
    observation = random_observation(config)
    chunk = policy.predict_action_chunk(*observation, 'put green pepper into pot')
    saved = policy.save_pretrained(tmp_path / 'ckpt')
    config_file = saved / 'config.json'
    data = json.loads(config_file.read_text())
    assert data.pop('action_slots') == 'learned'
    config_file.write_text(json.dumps(data))
    loaded = OftPolicy.from_pretrained(saved)
    assert loaded.config.action_slots == 'learned'
    np.testing.assert_array_equal(
        loaded.predict_action_chunk(*observation, 'put green pepper into pot'), chunk
    )


def test_padding_does_not_change_a_sample(policy):
    """A short prompt padded next to a long one gives the same actions as alone."""
    batch = make_batch(policy, 2, seed=4)
    batch['instructions'] = ['go', 'put the yellow corn into the big pot please']
    net = policy.network
    with torch.no_grad():
        both = net(
            batch['images'],
            batch['proprio'],
            net.condition(*policy.tokenize(batch['instructions']), 1),
        )
        alone = net(
            batch['images'][:1], batch['proprio'][:1], net.condition(*policy.tokenize(['go']), 1)
        )
    torch.testing.assert_close(both[:1], alone, rtol=1e-4, atol=1e-5)


def test_train_step_changes_only_trainable_parameters():
    torch.manual_seed(0)
    policy = OftPolicy(get_preset('tiny'))
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    frozen = set(before) - trainable
    assert any('lora_A' in n for n in trainable) and any('base_layer' in n for n in frozen)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    loss, metrics = policy(make_batch(policy, 2, seed=5))
    loss.backward()
    optimizer.step()
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable
    assert not changed & frozen
    for part in (
        'action_head.fc1',
        'projector.fc1',
        'proprio_projector.fc1',
        'dino_film.scale.0',
        'lora_B',
        'action_slots',
    ):
        assert any(part in n for n in changed), part
    assert set(metrics) == {'l1', 'l1_first_action'} and metrics['l1'] == pytest.approx(
        loss.item()
    )


def test_tiny_overfits_two_samples():
    torch.manual_seed(0)
    policy = OftPolicy(get_preset('tiny'))
    batch = make_batch(policy, 2, seed=6)
    optimizer = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0
    )
    l1 = float('inf')
    for _ in range(300):
        loss, metrics = policy(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        l1 = metrics['l1']
        if l1 < 0.02:
            break
    assert l1 < 0.02


def test_save_load_reproduces_outputs_exactly(policy, observation, tmp_path):
    with torch.no_grad():
        policy.network.action_head.fc2.bias += 0.1  # not the saved random init any more
    expected = policy.predict_action_chunk(*observation, RED)
    policy.save_pretrained(tmp_path / 'ckpt')
    loaded = OftPolicy.from_pretrained(tmp_path / 'ckpt')
    np.testing.assert_array_equal(loaded.predict_action_chunk(*observation, RED), expected)
    assert loaded.instructions == policy.instructions


def test_autoregressive_baseline_decodes_bin_centres(policy, observation):
    chunk = policy.predict_action_chunk(*observation, GREEN, decoding='autoregressive')
    assert chunk.shape == (25, 14)
    normalized = policy.stats.normalize_actions(chunk)
    # OpenVLA's 255 bin centres between 256 uniform edges over [-1, 1] (ActionTokenizer).
    edges = np.linspace(-1.0, 1.0, 256)
    centres = (edges[:-1] + edges[1:]) / 2.0
    nearest = np.abs(normalized[..., None] - centres).min(axis=-1)
    assert nearest.max() < 1e-4
    with pytest.raises(ValueError, match='decoding'):
        policy.predict_action_chunk(*observation, GREEN, decoding='beam')


def test_training_batch_is_validated(policy):
    batch = make_batch(policy, 2, seed=7)
    with pytest.raises(ValueError, match="'actions'"):
        policy({**batch, 'actions': batch['actions'][:, :3]})
    with pytest.raises(ValueError, match='instructions'):
        policy({k: v for k, v in batch.items() if k != 'instructions'})


def test_policy_without_stats_refuses_to_predict(observation):
    policy = OftPolicy(get_preset('tiny'))
    with pytest.raises(RuntimeError, match='statistics'):
        policy.predict_action_chunk(*observation, GREEN)
    with pytest.raises(ValueError, match='stats'):
        policy.save_pretrained('/nonexistent')
    policy.stats = NormStats.from_limits(*robot.action_limits())
    assert policy.predict_action_chunk(*observation, GREEN).shape == (25, 14)
