"""One FiLM-ed ViT of each encoder against an independent computation from its raw weights,
written from the authors' FiLMedVisionTransformerBlock (moojink/openvla-oft
prismatic/models/film_vit_wrapper.py):

    x = x + ls1(attn(norm1(x)));  x = x * (1 + gamma) + beta;  x = x + ls2(mlp(norm2(x)))

with gamma and beta broadcast over every token, one pair per block, for DINOv2 (with layer
scale) and SigLIP (without). Moving FiLM after the MLP or before the attention, applying it to
the attention branch only, or dropping it from one encoder all change these outputs. The
mask and slot tests beside it pin the rest of the parallel-decoding layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from oft_policy_node.model import get_preset
from oft_policy_node.model.network import OftNetwork, bidirectional_mask
from oft_policy_node.model.processing import (
    DINO_MEAN,
    DINO_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    normalize_pixels,
)
from oft_policy_node.model.testing import one_torch_thread
from oft_policy_node.model.vision import FilmParams

CFG = get_preset('tiny')


def attention(x: torch.Tensor, w: dict, prefix: str, heads: int, out: str) -> torch.Tensor:
    """Multi-head self-attention from q/k/v/out projection tensors, no mask."""
    n, length, hidden = x.shape

    def split(name: str) -> torch.Tensor:
        y = F.linear(x, w[f'{prefix}{name}.weight'], w[f'{prefix}{name}.bias'])
        return y.reshape(n, length, heads, hidden // heads).transpose(1, 2)  # (n, h, L, d)

    q, k, v = split('q_proj'), split('k_proj'), split('v_proj')
    scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // heads)
    a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, hidden)
    return F.linear(a, w[f'{prefix}{out}.weight'], w[f'{prefix}{out}.bias'])


def reference_block(
    x: torch.Tensor, w: dict, b: str, names: dict, heads: int, act, gamma, beta, scale: bool
) -> torch.Tensor:
    hidden = x.shape[-1]
    h = F.layer_norm(
        x, (hidden,), w[b + names['norm1'] + '.weight'], w[b + names['norm1'] + '.bias'], 1e-6
    )
    h = attention(h, w, b + names['attn'] + '.', heads, names['out'])
    if scale:
        h = h * w[b + 'layer_scale1.lambda1']
    x = x + h
    x = x * (1 + gamma[:, None, :]) + beta[:, None, :]  # FiLM: after attention, before MLP
    h = F.layer_norm(
        x, (hidden,), w[b + names['norm2'] + '.weight'], w[b + names['norm2'] + '.bias'], 1e-6
    )
    h = F.linear(
        act(F.linear(h, w[b + 'mlp.fc1.weight'], w[b + 'mlp.fc1.bias'])),
        w[b + 'mlp.fc2.weight'],
        w[b + 'mlp.fc2.bias'],
    )
    if scale:
        h = h * w[b + 'layer_scale2.lambda1']
    return x + h


def network_with_random_weights() -> OftNetwork:
    torch.manual_seed(0)
    network = OftNetwork(CFG).eval()
    with torch.no_grad():  # layer scales and norms away from their 1e-5 / identity inits
        for name, p in network.vision.named_parameters():
            if 'lambda1' in name or 'layer_norm' in name or 'norm' in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return network


def random_film(network: OftNetwork, images: int) -> FilmParams:
    g = torch.Generator().manual_seed(1)
    d, s = CFG.dino, CFG.siglip
    return FilmParams(
        *(
            0.5 * torch.randn(images, n, h, generator=g)
            for n, h in ((d.num_layers, d.hidden_size),) * 2 + ((s.num_layers, s.hidden_size),) * 2
        )
    )


ENCODERS = {
    # encoder: (block prefix, names, layer scale, prefix tokens dropped, pixel mean/std)
    'dino': (
        'encoder.layer.',
        {'norm1': 'norm1', 'attn': 'attention', 'out': 'o_proj', 'norm2': 'norm2'},
        True,
        1 + CFG.dino.num_registers,
        (DINO_MEAN, DINO_STD),
    ),
    'siglip': (
        'encoder.layers.',
        {'norm1': 'layer_norm1', 'attn': 'self_attn', 'out': 'out_proj', 'norm2': 'layer_norm2'},
        False,
        0,
        (SIGLIP_MEAN, SIGLIP_STD),
    ),
}


@pytest.mark.parametrize('encoder', ENCODERS)
def test_block_order_with_film_matches_the_reference(encoder):
    prefix, names, scale, dropped, (mean, std) = ENCODERS[encoder]
    with one_torch_thread(), torch.no_grad():
        network = network_with_random_weights()
        vision, film = network.vision, random_film(network, 2)
        model, vit = getattr(vision, encoder), getattr(CFG, encoder)
        gamma, beta = getattr(film, f'{encoder}_gamma'), getattr(film, f'{encoder}_beta')
        x = torch.rand(2, 3, CFG.image_size, CFG.image_size)
        w = dict(model.state_dict())
        h = model.embeddings(normalize_pixels(x, mean, std))
        act = ACT2FN[model.config.hidden_act]
        for i in range(vit.num_layers - 1):  # features of the second-to-last block
            h = reference_block(
                h, w, f'{prefix}{i}.', names, vit.num_heads, act, gamma[:, i], beta[:, i], scale
            )
        expected = h[:, dropped:]
        encode = getattr(vision, f'encode_{encoder}')
        torch.testing.assert_close(encode(x, film), expected, rtol=1e-4, atol=1e-5)
        assert (encode(x, None) - expected).abs().max() > 1e-2  # FiLM does change them


def test_the_mask_is_bidirectional_over_the_whole_sequence():
    """Every real token, prefix and action slots alike, sees every other; padding is seen by
    none."""
    valid = torch.tensor([[False, True, True, True, True]])  # one left-padded prompt token
    allowed = (bidirectional_mask(valid, torch.float32) == 0).expand(1, 1, 5, 5)[0, 0]
    assert torch.equal(allowed[1:], valid.expand(4, 5))  # every real query row, (L, L)


def test_image_patches_see_the_tokens_after_them():
    """The proprio token comes after the patches: a causal prefix (bidirectional among the
    action slots only) would leave the patches' last hidden states unchanged by it."""
    with one_torch_thread(), torch.no_grad():
        network = network_with_random_weights()
        states = []
        hook = network.llm.model.norm.register_forward_hook(
            lambda module, args, out: states.append(args[0])
        )
        ids = torch.tensor([[5, 6, 7]])
        cond = network.condition(ids, torch.ones_like(ids, dtype=torch.bool), 1)
        images = torch.rand(1, len(CFG.camera_names), 3, CFG.image_size, CFG.image_size)
        try:
            for proprio in (torch.zeros(1, CFG.proprio_dim), torch.ones(1, CFG.proprio_dim)):
                network.slot_states(images, proprio, cond)
        finally:
            hook.remove()
        first_patch = 1  # after BOS
        assert (states[0][0, first_patch] - states[1][0, first_patch]).abs().max() > 1e-4


def test_each_action_slot_has_its_own_embedding():
    network = OftNetwork(CFG)
    slots = network.action_slots  # (K*D, H)
    assert slots.shape == (CFG.num_action_slots, CFG.llm.hidden_size)
    assert len(torch.unique(slots.detach(), dim=0)) == len(slots)  # no two rows alike
