"""Broken checkpoint directories fail with an error naming the file and the tensor."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from oft_policy_node.model import CheckpointError, OftPolicy
from oft_policy_node.model.testing import make_tiny_checkpoint

HEAD = 'action_head.fc2.weight'


@pytest.fixture(scope='module')
def good(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp('good'), seed=2)


@pytest.fixture
def ckpt(good, tmp_path):
    return shutil.copytree(good, tmp_path / 'ckpt')


def rewrite_weights(ckpt, edit):
    weights = load_file(str(ckpt / 'model.safetensors'))
    edit(weights)
    save_file(weights, str(ckpt / 'model.safetensors'))


@pytest.mark.parametrize(
    'name', ['norm_stats.json', 'model.safetensors', 'config.json', 'instructions.json']
)
def test_missing_file_is_named(ckpt, name):
    (ckpt / name).unlink()
    with pytest.raises(CheckpointError, match=name):
        OftPolicy.from_pretrained(ckpt)


def test_wrong_shape_names_file_and_tensor(ckpt):
    rewrite_weights(ckpt, lambda w: w.__setitem__(HEAD, torch.zeros(3, 3)))
    with pytest.raises(CheckpointError, match=rf'model\.safetensors.*{HEAD}.*\(3, 3\)'):
        OftPolicy.from_pretrained(ckpt)


def test_missing_and_unexpected_tensors_are_named(ckpt):
    def edit(w):
        del w[HEAD]
        w['extra.weight'] = torch.zeros(1)

    rewrite_weights(ckpt, edit)
    with pytest.raises(CheckpointError, match=rf'missing tensors {HEAD}.*unexpected.*extra'):
        OftPolicy.from_pretrained(ckpt)


def test_corrupt_weights_file(ckpt):
    (ckpt / 'model.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(CheckpointError, match='model.safetensors'):
        OftPolicy.from_pretrained(ckpt)


def test_bad_config_and_stats_are_named(ckpt):
    cfg = json.loads((ckpt / 'config.json').read_text())
    (ckpt / 'config.json').write_text(json.dumps({**cfg, 'chunk_size': -1}))
    with pytest.raises(CheckpointError, match='config.json.*chunk_size'):
        OftPolicy.from_pretrained(ckpt)
    (ckpt / 'config.json').write_text(json.dumps(cfg))
    stats = json.loads((ckpt / 'norm_stats.json').read_text())
    del stats['proprio_max']
    (ckpt / 'norm_stats.json').write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match='norm_stats.json.*proprio_max'):
        OftPolicy.from_pretrained(ckpt)


def test_stats_of_the_wrong_size(ckpt):
    stats = json.loads((ckpt / 'norm_stats.json').read_text())
    stats['action_min'], stats['action_max'] = [0.0] * 7, [1.0] * 7
    (ckpt / 'norm_stats.json').write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match='norm_stats.json.*action_dim=14'):
        OftPolicy.from_pretrained(ckpt)


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match='not a checkpoint directory'):
        OftPolicy.from_pretrained(tmp_path / 'nowhere')
