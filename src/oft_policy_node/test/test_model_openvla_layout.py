"""The openvla-7b preset against the real layout of `openvla/openvla-7b`: every tensor the
authors' Hugging Face export holds (test/data/openvla_7b_tensors.txt, written from
vla-scripts/extern/convert_openvla_weights_to_hf.py, prismatic/extern/hf/modeling_prismatic.py,
configuration_prismatic.py and the timm / transformers modules they save; sources cited in the
file) lands on exactly one parameter of the meta-device network with its shape, and every base
parameter is covered. No weights are downloaded or allocated."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from oft_policy_node.model import get_preset
from oft_policy_node.model.network import OftNetwork
from oft_policy_node.model.openvla_weights import SKIPPED, base_keys, map_key
from oft_policy_node.model.random_base import read_tensor_layout, split_into_shards

LAYOUT = Path(__file__).resolve().parent / 'data' / 'openvla_7b_tensors.txt'


def test_the_layout_file_is_the_paper_size():
    rows = read_tensor_layout(LAYOUT)
    assert len(rows) == len({name for name, _ in rows}) == 982
    assert sum(torch.Size(shape).numel() for _, shape in rows) == 7_541_237_184  # Table V: 7.54 B


def test_every_exported_tensor_lands_on_exactly_one_parameter():
    with torch.device('meta'):
        network = OftNetwork(get_preset('openvla-7b'))
    params = network.state_dict()
    hits: Counter[str] = Counter()
    skipped = []
    for name, shape in read_tensor_layout(LAYOUT):
        if SKIPPED.match(name):
            skipped.append(name)
            continue
        pairs = map_key(name, torch.empty(shape, device='meta'))
        assert pairs, f'{name} {shape} is not read'
        for ours, tensor in pairs:
            assert ours in params, f'{name} -> {ours}, which the network does not have'
            assert tensor.shape == params[ours].shape, (name, ours, tensor.shape)
            hits[ours] += 1
    assert [k for k, n in hits.items() if n != 1] == []
    assert set(hits) == set(base_keys(params))  # and every base parameter is covered
    assert len(skipped) == 13 and all('.attn_pool.' in k for k in skipped)  # SigLIP's MAP head


def test_the_exporters_split_gives_three_shards_of_at_most_7_gb():
    shards = split_into_shards(read_tensor_layout(LAYOUT), element_size=2)  # bf16
    sizes = [sum(torch.Size(shape).numel() * 2 for _, shape in shard) for shard in shards]
    assert len(shards) == 3 and max(sizes) <= 7_000_000_000  # model-0000{1,2,3}-of-00003
    assert sum(sizes) == 15_082_474_368
