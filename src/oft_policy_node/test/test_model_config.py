"""OftConfig validation, presets, and the openvla-7b parameter counts of the paper's Table V."""

from __future__ import annotations

import pytest
import torch

from oft_policy_node.model import OftConfig, get_preset
from oft_policy_node.model.lora import (
    BASE_PARTS,
    apply_lora,
    count_parameters,
    parameter_table,
    set_trainable,
)
from oft_policy_node.model.network import OftNetwork


def test_presets_have_the_robot_layout():
    for name in ('tiny', 'small', 'openvla-7b'):
        cfg = get_preset(name)
        assert (cfg.chunk_size, cfg.action_dim, cfg.proprio_dim) == (25, 14, 14)
        assert cfg.camera_names == ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
    real = get_preset('openvla-7b')
    assert real.vision_dim == 2176 and real.patches_per_image == 256
    assert (real.lora_rank, real.lora_alpha) == (32, 16)


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        get_preset('tiyn')


@pytest.mark.parametrize(
    'change, field',
    [
        ({'image_size': 50}, 'image_size'),
        ({'chunk_size': 0}, 'chunk_size'),
        ({'tokenizer': 'sentencepiece'}, 'tokenizer'),
        ({'crop_scale': 1.5}, 'crop_scale'),
        ({'lora_rank': -1}, 'lora_rank'),
        ({'camera_names': ('a', 'a')}, 'camera_names'),
        ({'instruction_template': 'no slot'}, 'instruction_template'),
    ],
)
def test_invalid_values_name_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        get_preset('tiny').replace(**change)


def test_dict_round_trip():
    cfg = get_preset('small')
    assert OftConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match='OftConfig'):
        OftConfig.from_dict({'name': 'x'})


def test_openvla_7b_parameter_counts_match_table_v():
    """Built on the meta device (no memory): the paper's Table V within 2 %."""
    cfg = get_preset('openvla-7b')
    with torch.device('meta'):
        network = OftNetwork(cfg)
        apply_lora(network, cfg)
        set_trainable(network, cfg)
    print('\n' + parameter_table(network))
    counts = count_parameters(network)
    measured = {
        'base': sum(counts[p]['total'] for p in BASE_PARTS),
        'film': counts['film']['total'],
        'action_head': counts['action_head']['total'],
        'proprio': counts['proprio']['total'],
    }
    paper = {'base': 7.54e9, 'film': 456e6, 'action_head': 269e6, 'proprio': 17e6}
    for group, expected in paper.items():
        assert measured[group] == pytest.approx(expected, rel=0.02), group
