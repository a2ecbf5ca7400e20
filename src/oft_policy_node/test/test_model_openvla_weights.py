"""The base OpenVLA checkpoint loader, on a tiny checkpoint written here in the layout of the
authors' Hugging Face export (test/data/openvla_7b_tensors.txt, from
vla-scripts/extern/convert_openvla_weights_to_hf.py and the timm modules it saves): timm-named
DINOv2 / SigLIP tensors (fused qkv, patch-only position embeddings, `reg_token`, LayerScale
renamed `scale_factor`, SigLIP's unused attention-pooling head), the fused projector, and the
Hugging Face Llama, in safetensors shards with their index; and fine-tuned checkpoints that hold
the base weights by reference to such a directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from oft_policy_node import robot
from oft_policy_node.model import CheckpointError, NormStats, OftPolicy, get_preset
from oft_policy_node.model.network import build_llm
from oft_policy_node.model.openvla_weights import REFERENCE_FILE, base_keys, load_openvla_base
from oft_policy_node.model.processing import DINO_MEAN, DINO_STD, normalize_pixels
from oft_policy_node.model.random_base import (
    openvla_layout,
    random_tensor_maker,
    read_tensor_layout,
    write_random_openvla_base,
    write_sharded,
)
from oft_policy_node.model.testing import (
    DEFAULT_INSTRUCTIONS,
    one_torch_thread,
    random_observation,
)

CFG = get_preset('tiny')
DINO, SIG = 'vision_backbone.featurizer.', 'vision_backbone.fused_featurizer.'
GREEN = DEFAULT_INSTRUCTIONS[0]


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


def timm_vit(
    prefix: str, hidden: int, layers: int, mlp: int, g: torch.Generator, dino: bool
) -> dict[str, torch.Tensor]:
    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    p = CFG.patch_size
    t = {
        'patch_embed.proj.weight': r(hidden, 3, p, p),
        'patch_embed.proj.bias': r(hidden),
        'pos_embed': r(1, CFG.patches_per_image, hidden),
        'norm.weight': 1 + r(hidden),
        'norm.bias': r(hidden),
    }
    if dino:
        t.update({'cls_token': r(1, 1, hidden), 'reg_token': r(1, CFG.dino.num_registers, hidden)})
    else:  # SigLIP's attention-pooling head (timm AttentionPoolLatent): in the file, unused
        pool = {
            'latent': (1, 1, hidden),
            'q.weight': (hidden, hidden),
            'q.bias': (hidden,),
            'kv.weight': (2 * hidden, hidden),
            'kv.bias': (2 * hidden,),
            'proj.weight': (hidden, hidden),
            'proj.bias': (hidden,),
            'norm.weight': (hidden,),
            'norm.bias': (hidden,),
            'mlp.fc1.weight': (mlp, hidden),
            'mlp.fc1.bias': (mlp,),
            'mlp.fc2.weight': (hidden, mlp),
            'mlp.fc2.bias': (hidden,),
        }
        t.update({f'attn_pool.{k}': r(*shape) for k, shape in pool.items()})
    for i in range(layers):
        b = f'blocks.{i}.'
        t.update(
            {
                b + 'norm1.weight': 1 + r(hidden),
                b + 'norm1.bias': r(hidden),
                b + 'attn.qkv.weight': r(3 * hidden, hidden),
                b + 'attn.qkv.bias': r(3 * hidden),
                b + 'attn.proj.weight': r(hidden, hidden),
                b + 'attn.proj.bias': r(hidden),
                b + 'norm2.weight': 1 + r(hidden),
                b + 'norm2.bias': r(hidden),
                b + 'mlp.fc1.weight': r(mlp, hidden),
                b + 'mlp.fc1.bias': r(mlp),
                b + 'mlp.fc2.weight': r(hidden, mlp),
                b + 'mlp.fc2.bias': r(hidden),
            }
        )
        if dino:  # the exporter's name for timm's LayerScale gamma
            t.update(
                {b + 'ls1.scale_factor': 1 + r(hidden), b + 'ls2.scale_factor': 1 + r(hidden)}
            )
    return {prefix + k: v for k, v in t.items()}


@pytest.fixture(scope='module')
def base_dir(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    d, s, h = CFG.dino, CFG.siglip, CFG.llm.hidden_size
    vision = {
        **timm_vit(DINO, d.hidden_size, d.num_layers, d.intermediate_size, g, True),
        **timm_vit(SIG, s.hidden_size, s.num_layers, s.intermediate_size, g, False),
    }
    f = CFG.vision_dim
    rest = {
        'projector.fc1.weight': torch.randn(4 * f, f, generator=g),
        'projector.fc1.bias': torch.randn(4 * f, generator=g),
        'projector.fc2.weight': torch.randn(h, 4 * f, generator=g),
        'projector.fc2.bias': torch.randn(h, generator=g),
        'projector.fc3.weight': torch.randn(h, h, generator=g),
        'projector.fc3.bias': torch.randn(h, generator=g),
    }
    torch.manual_seed(1)  # the Llama is stored by transformers' own names, as OpenVLA does
    rest.update({'language_model.' + k: v for k, v in build_llm(CFG).state_dict().items()})
    out = tmp_path_factory.mktemp('openvla')
    write_shards(out, [vision, rest])
    return out, {**vision, **rest}


def write_shards(directory, shards: list[dict[str, torch.Tensor]]) -> None:
    """save_pretrained's layout: model-0000i-of-0000n.safetensors and their index (fp32)."""
    tensors = {name: t for shard in shards for name, t in shard.items()}
    layouts = [[(name, tuple(t.shape)) for name, t in shard.items()] for shard in shards]
    write_sharded(directory, layouts, lambda name, _shape: tensors[name], torch.float32)


def timm_block(x: torch.Tensor, t: dict, b: str, heads: int) -> torch.Tensor:
    """timm's ViT block with layer scale, written from its definition."""
    n, length, hidden = x.shape
    h = F.layer_norm(x, (hidden,), t[b + 'norm1.weight'], t[b + 'norm1.bias'], 1e-6)
    qkv = F.linear(h, t[b + 'attn.qkv.weight'], t[b + 'attn.qkv.bias'])
    q, k, v = qkv.reshape(n, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, hidden)
    scale1, scale2 = t[b + 'ls1.scale_factor'], t[b + 'ls2.scale_factor']
    x = x + scale1 * F.linear(a, t[b + 'attn.proj.weight'], t[b + 'attn.proj.bias'])
    h = F.layer_norm(x, (hidden,), t[b + 'norm2.weight'], t[b + 'norm2.bias'], 1e-6)
    h = F.linear(
        F.gelu(F.linear(h, t[b + 'mlp.fc1.weight'], t[b + 'mlp.fc1.bias'])),
        t[b + 'mlp.fc2.weight'],
        t[b + 'mlp.fc2.bias'],
    )
    return x + scale2 * h


def test_loads_every_base_tensor_onto_the_right_module(base_dir):
    directory, t = base_dir
    policy = OftPolicy.from_openvla(directory, config=CFG)
    sd = policy.network.state_dict()
    hidden = CFG.dino.hidden_size
    qkv = t[DINO + 'blocks.1.attn.qkv.weight']
    assert torch.equal(
        sd['vision.dino.encoder.layer.1.attention.k_proj.base_layer.weight'],
        qkv[hidden : 2 * hidden],
    )
    pos = sd['vision.dino.embeddings.position_embeddings']
    assert pos[:, 0].eq(0).all() and torch.equal(pos[:, 1:], t[DINO + 'pos_embed'])
    assert torch.equal(
        sd['vision.siglip.embeddings.position_embedding.weight'], t[SIG + 'pos_embed'][0]
    )
    assert torch.equal(
        sd['vision.siglip.encoder.layers.0.self_attn.out_proj.base_layer.bias'],
        t[SIG + 'blocks.0.attn.proj.bias'],
    )
    assert torch.equal(sd['projector.fc2.base_layer.weight'], t['projector.fc2.weight'])
    assert torch.equal(sd['llm.lm_head.weight'], t['language_model.lm_head.weight'])
    assert torch.equal(
        sd['llm.model.layers.1.mlp.down_proj.base_layer.weight'],
        t['language_model.model.layers.1.mlp.down_proj.weight'],
    )


def test_dinov2_features_equal_timm_computation(base_dir):
    """Second-to-last block patch tokens equal a timm-style forward of the raw tensors."""
    directory, t = base_dir
    policy = OftPolicy.from_openvla(directory, config=CFG)
    x = torch.rand(2, 3, CFG.image_size, CFG.image_size)
    xn = normalize_pixels(x, DINO_MEAN, DINO_STD)
    patches = (
        F.conv2d(
            xn,
            t[DINO + 'patch_embed.proj.weight'],
            t[DINO + 'patch_embed.proj.bias'],
            stride=CFG.patch_size,
        )
        .flatten(2)
        .transpose(1, 2)
        + t[DINO + 'pos_embed']
    )
    tokens = torch.cat(
        [
            t[DINO + 'cls_token'].expand(2, -1, -1),
            t[DINO + 'reg_token'].expand(2, -1, -1),
            patches,
        ],
        dim=1,
    )
    for i in range(CFG.dino.num_layers - 1):
        tokens = timm_block(tokens, t, f'{DINO}blocks.{i}.', CFG.dino.num_heads)
    expected = tokens[:, 1 + CFG.dino.num_registers :]
    with torch.no_grad():
        ours = policy.network.vision.encode_dino(x, None)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_the_prismatic_native_layer_scale_name_loads_too(base_dir, tmp_path):
    """Checkpoints saved by the Prismatic training code (not the Hugging Face export) keep
    timm's `ls1.gamma`; both spellings load to the same weights."""
    directory, t = base_dir
    native = {k.replace('.scale_factor', '.gamma'): v for k, v in t.items()}
    assert any(k.endswith('ls1.gamma') for k in native)
    write_shards(tmp_path, [native])
    exported = OftPolicy.from_openvla(directory, config=CFG).network.state_dict()
    loaded = OftPolicy.from_openvla(tmp_path, config=CFG).network.state_dict()
    key = 'vision.dino.encoder.layer.0.layer_scale1.lambda1'
    assert torch.equal(loaded[key], t[DINO + 'blocks.0.ls1.scale_factor'])
    assert torch.equal(loaded[key], exported[key])


def test_unknown_and_misshapen_tensors_are_named(base_dir, tmp_path):
    directory, t = base_dir
    bad = {**t, 'vision_backbone.extra.weight': torch.zeros(1)}
    save_file(bad, str(tmp_path / 'model.safetensors'))
    with pytest.raises(CheckpointError, match=r'model\.safetensors.*vision_backbone\.extra'):
        OftPolicy.from_openvla(tmp_path, config=CFG)
    bad = {**t, 'projector.fc3.weight': torch.zeros(2, 2)}
    save_file(bad, str(tmp_path / 'model.safetensors'))
    with pytest.raises(CheckpointError, match=r'projector\.fc3\.weight.*\(2, 2\)'):
        OftPolicy.from_openvla(tmp_path, config=CFG)
    bad = {k: v for k, v in t.items() if k != 'projector.fc3.weight'}
    save_file(bad, str(tmp_path / 'model.safetensors'))
    with pytest.raises(
        CheckpointError, match=r'lacks 1 tensors.*projector\.fc3\.(base_layer\.)?weight'
    ):
        OftPolicy.from_openvla(tmp_path, config=CFG)


def fine_tuned(base: object) -> OftPolicy:
    """A policy started from `base` whose trainable tensors moved away from their init."""
    policy = OftPolicy.from_openvla(
        base, config=CFG, stats=NormStats.from_limits(*robot.action_limits())
    )
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in policy.network.parameters():
            if param.requires_grad:  # LoRA B starts at zero: move it, or LoRA is not tested
                param.add_(torch.randn(param.shape, generator=g) * 0.05)
    return policy.eval()


def test_reference_checkpoint_holds_fine_tuned_tensors_only_and_round_trips(base_dir, tmp_path):
    directory, _ = base_dir
    policy = fine_tuned(directory)
    observation = random_observation(CFG, seed=2)
    expected = policy.predict_action_chunk(*observation, GREEN)
    out = policy.save_pretrained(tmp_path / 'ckpt', base_weights='reference')  # from_openvla's
    saved = load_file(str(out / 'model.safetensors'))
    trainable = {n for n, p in policy.network.named_parameters() if p.requires_grad}
    assert trainable <= set(saved)  # LoRA, FiLM, proprio projector, action slots and head
    # The vision projector is a base part with LoRA, as the authors' "all-linear".
    assert 'projector.fc1.lora_A.default.weight' in saved
    for frozen in (
        'projector.fc1.base_layer.weight',
        'llm.lm_head.weight',
        'llm.model.embed_tokens.weight',
        'llm.model.layers.0.self_attn.q_proj.base_layer.weight',
        'vision.dino.embeddings.cls_token',
        'vision.siglip.post_layernorm.bias',
    ):
        assert frozen not in saved
    assert json.loads((out / REFERENCE_FILE).read_text())['path'] == str(directory.resolve())
    loaded = OftPolicy.from_pretrained(out)
    np.testing.assert_array_equal(loaded.predict_action_chunk(*observation, GREEN), expected)
    assert loaded.base_checkpoint == directory.resolve()
    full = policy.save_pretrained(tmp_path / 'full')
    assert not (full / REFERENCE_FILE).exists()
    assert (out / 'model.safetensors').stat().st_size < (full / 'model.safetensors').stat().st_size
    policy.save_pretrained(out)  # a full save over a reference one drops the reference
    assert not (out / REFERENCE_FILE).exists()
    np.testing.assert_array_equal(
        OftPolicy.from_pretrained(out).predict_action_chunk(*observation, GREEN), expected
    )


def test_moved_or_replaced_base_is_named(base_dir, tmp_path):
    base = shutil.copytree(base_dir[0], tmp_path / 'base')
    out = fine_tuned(base).save_pretrained(
        tmp_path / 'ckpt', base_weights='reference', base_checkpoint=base
    )
    moved = base.rename(tmp_path / 'moved')
    with pytest.raises(
        CheckpointError,
        match=rf'{REFERENCE_FILE}: the base checkpoint '
        rf'{base} is missing',
    ):
        OftPolicy.from_pretrained(out)
    reference = json.loads((out / REFERENCE_FILE).read_text())
    (out / REFERENCE_FILE).write_text(json.dumps({**reference, 'path': str(moved)}))
    OftPolicy.from_pretrained(out)  # the fix the message gives works
    shard = moved / 'model-00002-of-00002.safetensors'
    tensors = load_file(str(shard))
    del tensors['projector.fc3.bias']
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError, match=rf'{moved} has shards .* saved against'):
        OftPolicy.from_pretrained(out)


def test_reference_checkpoint_missing_a_fine_tuned_tensor_is_named(base_dir, tmp_path):
    out = fine_tuned(base_dir[0]).save_pretrained(tmp_path / 'ckpt', base_weights='reference')
    weights = load_file(str(out / 'model.safetensors'))
    del weights['action_head.fc2.weight']
    save_file(weights, str(out / 'model.safetensors'))
    with pytest.raises(
        CheckpointError,
        match=r'model\.safetensors: missing tensors '
        r'action_head\.fc2\.weight',
    ):
        OftPolicy.from_pretrained(out)


def test_reference_to_a_different_base_is_refused_at_save(base_dir, tmp_path):
    directory, t = base_dir
    other = tmp_path / 'other'
    other.mkdir()
    save_file(
        {**t, 'language_model.model.norm.weight': t['language_model.model.norm.weight'] + 1},
        str(other / 'model.safetensors'),
    )
    with pytest.raises(CheckpointError, match=r"'language_model\.model\.norm\.weight' differs"):
        fine_tuned(directory).save_pretrained(
            tmp_path / 'ckpt', base_weights='reference', base_checkpoint=other
        )


@pytest.mark.parametrize(
    'config, kwargs, message',
    [
        (
            CFG.replace(lora_rank=0),
            {'base_weights': 'reference', 'base_checkpoint': '/base'},
            'lora_rank=0',
        ),
        (CFG, {'base_weights': 'reference'}, 'needs base_checkpoint='),
        (CFG, {'base_checkpoint': '/base'}, "only used with base_weights='reference'"),
        (CFG, {'base_weights': 'shared'}, "base_weights='shared'"),
    ],
)
def test_bad_base_weight_options_are_refused(tmp_path, config, kwargs, message):
    policy = OftPolicy(config, stats=NormStats.from_limits(*robot.action_limits()))
    with pytest.raises(ValueError, match=message):
        policy.save_pretrained(tmp_path / 'ckpt', **kwargs)
    assert not (tmp_path / 'ckpt').exists()


def test_a_streamed_random_base_checkpoint_reads_back_and_loads(base_dir, tmp_path):
    """random_base's writer (the real-size benchmark's 15 GB base) at the tiny size: shards
    split as the exporter's, an index naming every tensor, bf16 values as made, and a base that
    from_openvla loads with the tokenizer written next to it."""
    _, tensors = base_dir
    layout = [(name, tuple(t.shape)) for name, t in tensors.items()]
    total = 2 * sum(t.numel() for t in tensors.values())
    out = write_random_openvla_base(tmp_path / 'base', layout, max_shard_bytes=total // 3 + 1)
    index = json.loads((out / 'model.safetensors.index.json').read_text())
    assert list(index['weight_map']) == [name for name, _ in layout]
    assert index['metadata']['total_size'] == total
    shards = sorted(set(index['weight_map'].values()))
    n = len(shards)
    assert n >= 3
    assert shards == [f'model-{i:05d}-of-{n:05d}.safetensors' for i in range(1, n + 1)]
    make = random_tensor_maker(0)  # draws in layout order, as the writer did
    for name, shape in layout:
        with safe_open(str(out / index['weight_map'][name]), framework='pt') as f:
            got = f.get_tensor(name)
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, make(name, shape).to(torch.bfloat16)), name
    policy = OftPolicy.from_openvla(
        out,
        stats=NormStats.from_limits(*robot.action_limits()),
        config=CFG.replace(tokenizer='pretrained'),
        dtype=torch.bfloat16,
    )
    chunk = policy.eval().predict_action_chunk(*random_observation(CFG), GREEN)
    assert chunk.shape == (CFG.chunk_size, CFG.action_dim) and np.isfinite(chunk).all()


def test_loading_skips_only_the_base_initialisation(base_dir):
    """from_openvla builds the base modules without their random init (base_init): every
    buffer (RoPE frequencies, position ids) is what a normally built network computes, the
    modules fine-tuning starts fresh are initialised as always, and the base weights are the
    checkpoint's."""
    directory, _ = base_dir
    torch.manual_seed(0)
    built = OftPolicy(CFG).network
    loaded = OftPolicy.from_openvla(directory, config=CFG).network
    buffers = dict(loaded.named_buffers())
    assert buffers  # the Llama's rotary frequencies at least
    for name, buffer in built.named_buffers():
        assert torch.equal(buffers[name], buffer), name
    fresh = dict(loaded.named_parameters())
    zero_started = [n for n in fresh if '_film.' in n or 'lora_B' in n]  # start as identity
    assert zero_started and not any(fresh[n].any() for n in zero_started)
    for part in ('action_head.', 'proprio_projector.', 'lora_A'):
        for key in (n for n in fresh if part in n and fresh[n].dim() == 2):
            std = fresh[key].float().std().item()
            assert 0.0 < std < 1.0, (key, std)  # initialised, not left as allocated
    reference = OftPolicy(CFG)
    load_openvla_base(reference.network, directory)
    expected = reference.network.state_dict()
    for name in base_keys(expected):
        assert torch.equal(loaded.state_dict()[name], expected[name]), name


def test_the_layout_rules_give_the_exported_7b_file_exactly():
    """openvla_layout, which writes the tiny and cut bases of the training tests and benches,
    reproduces every name, shape and the order of openvla/openvla-7b's export (the layout file
    written from the authors' exporter)."""
    layout_file = Path(__file__).parent / 'data' / 'openvla_7b_tensors.txt'
    assert openvla_layout(get_preset('openvla-7b')) == read_tensor_layout(layout_file)
