"""Training from a base checkpoint the way openvla-7b trains, at the tiny size: the base built on
the meta device and streamed into bf16 equals the old float32 build cast afterwards; a run
with a bf16 base saves only what trains (the base by reference) and resumes exactly; each
rank reports its expected and peak memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from oft_policy_node.model import OftPolicy, get_preset
from oft_policy_node.model.openvla_weights import REFERENCE_FILE, load_openvla_base
from oft_policy_node.model.random_base import openvla_layout, write_random_openvla_base
from oft_training.data.training_set import TrainingSet
from oft_training.train import main as train
from oft_training.training.loop import FINAL_DIR
from oft_training.training.metrics_log import METRICS_FILE
from oft_training.training.policy_setup import build_policy
from oft_training.training.precision import cpu_bf16_flags

CFG = get_preset('tiny')
needs_bf16 = pytest.mark.skipif(
    not cpu_bf16_flags(), reason='bf16 training on the CPU needs AVX-512 BF16 or AMX'
)


@pytest.fixture(scope='module')
def tiny_base(tmp_path_factory) -> Path:
    """A random base OpenVLA checkpoint in the export's names and order at the tiny widths."""
    return write_random_openvla_base(tmp_path_factory.mktemp('base') / 'tiny', openvla_layout(CFG))


def test_meta_built_bf16_base_equals_the_float32_build_cast(tiny_base, training_set):
    data = TrainingSet(training_set)
    torch.manual_seed(0)
    old = OftPolicy(CFG, stats=data.stats, instructions=data.instructions, init_base=False)
    load_openvla_base(old.network, tiny_base)
    torch.manual_seed(0)
    new = build_policy(
        'tiny', str(tiny_base), data.stats, data.instructions, base_dtype=torch.bfloat16
    )
    before, after = old.network.state_dict(), new.network.state_dict()
    assert list(after) == list(before)
    trainable = {n for n, p in new.network.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in old.network.named_parameters() if p.requires_grad}
    for name, tensor in after.items():
        if name in trainable:
            assert tensor.dtype == torch.float32, name
            # peft creates LoRA on its base layer's dtype: A is the same draw, rounded to bf16.
            expected = before[name].bfloat16().float() if 'lora_A' in name else before[name]
        elif name in dict(new.network.named_buffers()):
            expected = before[name]  # computed (RoPE, position ids), never loaded
        elif tensor.dtype == torch.bfloat16:  # a frozen base weight
            expected = before[name].bfloat16()
        else:  # frozen and not base: the unused last FiLM maps
            expected = before[name]
        assert torch.equal(tensor, expected), name
    assert new.base_checkpoint == tiny_base
    assert all(p.device.type == 'cpu' for p in new.parameters())  # nothing left on meta


def run_args(data: Path, out: Path, base: Path, *extra: str) -> list[str]:
    return [
        *('--data', str(data), '--out', str(out), '--base', str(base), '--preset', 'tiny'),
        *('--batch-size', '2', '--val-every', '2', '--seed', '1', '--lr-decay-step', '3'),
        *('--precision', 'bfloat16', '--save-every', '2'),
        *extra,
    ]


def metrics(out: Path) -> list[dict]:
    lines = (out / METRICS_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != 'step_s'} for line in lines]


@needs_bf16
def test_a_bf16_base_run_saves_what_trains_and_resumes_exactly(
    tiny_base, training_set, tmp_path, capsys
):
    straight = tmp_path / 'straight'
    assert train(run_args(training_set, straight, tiny_base, '--steps', '4')) == 0
    printed = capsys.readouterr().out
    assert 'rank 0: expects' in printed and 'AdamW states' in printed
    assert 'rank 0: peak after the first step: host' in printed

    final = straight / FINAL_DIR
    saved = load_file(str(final / 'model.safetensors'))
    assert (final / REFERENCE_FILE).is_file()
    policy = OftPolicy.from_pretrained(final)
    trainable = {n for n, p in policy.network.named_parameters() if p.requires_grad}
    assert trainable <= set(saved)
    assert not any(k.endswith('q_proj.base_layer.weight') for k in saved)  # the base stays put
    step_dir = straight / 'checkpoints' / 'step_0000004' / 'policy'
    assert (step_dir / REFERENCE_FILE).is_file()

    resumed = tmp_path / 'resumed'
    assert train(run_args(training_set, resumed, tiny_base, '--steps', '2')) == 0
    assert train(run_args(training_set, resumed, tiny_base, '--steps', '4', '--resume')) == 0
    assert metrics(resumed) == metrics(straight)
    a = load_file(str(resumed / FINAL_DIR / 'model.safetensors'))
    assert a.keys() == saved.keys()
    assert all(torch.equal(a[k], saved[k]) for k in saved)


def test_fsdp_needs_torchrun_and_is_not_for_grounding(tiny_base, training_set, tmp_path, capsys):
    out = tmp_path / 'run'
    assert train(run_args(training_set, out, tiny_base, '--steps', '1', '--fsdp')) == 2
    assert "--fsdp shards over torchrun's processes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(run_args(training_set, out, tiny_base, '--fsdp', '--grounding', 'g.npz'))
    assert 'grounding co-training' in capsys.readouterr().err


def test_gradient_checkpointing_recomputes_every_vit_block_and_llama_layer(monkeypatch):
    """With checkpointing on, backward runs each ViT block and Llama layer's forward again
    (so their activations were not kept); without it, each runs once."""
    from oft_policy_node.model import vision
    from oft_policy_node.model.testing import random_policy

    def calls(checkpointing: bool) -> tuple[int, int]:
        policy = random_policy('tiny', 0, ('put green pepper into pot',), 0).train()
        if checkpointing:
            policy.network.enable_gradient_checkpointing()
        counted = {'vit': 0, 'llm': 0}
        block = vision.dino_block

        def counting_block(*args):
            counted['vit'] += 1
            return block(*args)

        monkeypatch.setattr(vision, 'dino_block', counting_block)
        # transformers checkpoints a layer's forward, not its __call__ (hooks stay outside), and
        # torch stops a recomputation once it has what backward needs, inside the MLP: the
        # attention is what visibly runs again.
        for layer in policy.network.llm.model.layers:
            layer.self_attn.register_forward_hook(
                lambda *_: counted.__setitem__('llm', counted['llm'] + 1)
            )
        size = CFG.image_size
        batch = {
            'images': torch.rand(1, len(CFG.camera_names), 3, size, size),
            'proprio': torch.zeros(1, CFG.proprio_dim),
            'actions': torch.zeros(1, CFG.chunk_size, CFG.action_dim),
            'instructions': ['put green pepper into pot'],
        }
        loss, _ = policy(batch)
        loss.backward()
        return counted['vit'], counted['llm']

    vit_blocks = CFG.dino.num_layers - 1  # the last block never runs
    assert calls(False) == (vit_blocks, CFG.llm.num_layers)
    assert calls(True) == (2 * vit_blocks, 2 * CFG.llm.num_layers)
