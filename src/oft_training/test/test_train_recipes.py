"""train's defaults per preset: openvla-7b gets the authors' ALOHA recipe (moojink/openvla-oft
ALOHA.md's finetune.py command and finetune.py's AdamW and MultiStepLR), the CPU presets keep
theirs, and an option given on the command line always wins."""

from __future__ import annotations

import pytest
import torch

from oft_policy_node.model.config import get_preset
from oft_policy_node.model.lora import apply_lora, set_trainable
from oft_policy_node.model.network import OftNetwork
from oft_training.train import parse_args

BASE = ['--data', 'd', '--out', 'o']


def parsed(monkeypatch, world_size: int, *options: str):
    monkeypatch.setenv('WORLD_SIZE', str(world_size))
    return parse_args([*BASE, *options])


def test_openvla_7b_defaults_are_the_authors_aloha_recipe(monkeypatch):
    # ALOHA.md: --batch_size 4 (per GPU) --learning_rate 5e-4 --num_steps_before_decay 50000
    # --max_steps 100005; finetune.py: AdamW(trainable_params, lr=...) -> weight decay 0.01.
    cfg = parsed(monkeypatch, 8, '--preset', 'openvla-7b')
    assert (cfg.batch_size, cfg.steps, cfg.lr, cfg.decay_step, cfg.weight_decay) == (
        32,
        100_005,
        5e-4,
        50_000,
        0.01,
    )
    assert torch.optim.AdamW([torch.zeros(1)]).defaults['weight_decay'] == cfg.weight_decay
    assert parsed(monkeypatch, 1, '--preset', 'openvla-7b').batch_size == 4


def test_given_options_win_and_given_steps_move_the_decay(monkeypatch):
    cfg = parsed(monkeypatch, 2, '--preset', 'openvla-7b', '--steps', '2000', '--batch-size', '16')
    assert (cfg.steps, cfg.decay_step, cfg.batch_size) == (2000, 1000, 16)
    cfg = parsed(
        monkeypatch, 2, '--preset', 'openvla-7b', '--lr-decay-step', '7', '--weight-decay', '0'
    )
    assert (cfg.steps, cfg.decay_step, cfg.weight_decay) == (100_005, 7, 0.0)


def test_cpu_presets_keep_their_measured_defaults(monkeypatch):
    for preset in ('small', 'tiny'):
        cfg = parsed(monkeypatch, 2, '--preset', preset)
        assert (cfg.batch_size, cfg.steps, cfg.lr, cfg.decay_step, cfg.weight_decay) == (
            8,
            1000,
            5e-4,
            800,
            0.0,
        )


def test_lora_covers_the_projector_as_all_linear_and_trains_only_what_oft_adds():
    """The authors' peft "all-linear" over the whole base VLA: the projector's three linear
    layers get LoRA and stay frozen; the proprio projector (new in OFT) trains in full."""
    cfg = get_preset('openvla-7b')
    with torch.device('meta'):
        network = OftNetwork(cfg, init_base=False)
        apply_lora(network, cfg)
    set_trainable(network, cfg)
    trainable = {name for name, p in network.named_parameters() if p.requires_grad}
    for layer in ('fc1', 'fc2', 'fc3'):
        assert f'projector.{layer}.lora_A.default.weight' in trainable
        assert f'projector.{layer}.base_layer.weight' not in trainable
    assert 'proprio_projector.fc1.weight' in trainable
    assert 'llm.model.layers.0.self_attn.q_proj.base_layer.weight' not in trainable


def test_trainable_dtype_is_for_base_fine_tunes(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        parsed(monkeypatch, 1, '--preset', 'small', '--trainable-dtype', 'bfloat16')
    assert 'fine-tuning a base checkpoint' in capsys.readouterr().err
    cfg = parsed(
        monkeypatch, 1, '--preset', 'openvla-7b', '--base', 'b', '--trainable-dtype', 'bfloat16'
    )
    assert cfg.trainable_dtype == 'bfloat16'
