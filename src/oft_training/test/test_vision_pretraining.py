"""Vision pretraining: the tiny backbone learns to localise a coloured square (better than
guessing the mean), its weights go into a policy unchanged through `train --init-vision`, and a
missing, corrupt or wrongly shaped backbone file is refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oft_policy_node.model.checkpoint import read_weights
from oft_policy_node.model.config import get_preset
from oft_policy_node.model.openvla_weights import resolve_key
from oft_policy_node.model.vision import FilmVisionBackbone
from oft_training.data.training_set import TrainingSet
from oft_training.train import main as train
from oft_training.training.config import TrainConfig
from oft_training.training.loop import FINAL_DIR
from oft_training.training.policy_setup import build_policy
from oft_training.vision_pretraining import (
    LocalisationSet,
    PretrainSettings,
    load_backbone,
    pretrain,
    save_backbone,
)

TINY = get_preset('tiny')


def squares(count: int, seed: int = 0) -> LocalisationSet:
    """Grey 56 px images with a red 8 px square; its centre, scaled to metres, is the target."""
    rng = np.random.default_rng(seed)
    images = np.full((count, 56, 56, 3), 120, dtype=np.uint8)
    centres = rng.integers(8, 48, (count, 2))
    for image, (row, col) in zip(images, centres, strict=True):
        image[row - 4 : row + 4, col - 4 : col + 4] = (230, 20, 20)
    positions = (centres[:, None, ::-1] / 100.0).astype(np.float64)  # (M, 1, 2): x=col, y=row
    return LocalisationSet(images, positions, ('square',))


@pytest.fixture(scope='module')
def pretrained():
    return pretrain(TINY, squares(400), PretrainSettings(steps=300, batch_size=16, lr=1e-3))


def test_backbone_learns_where_the_square_is(pretrained):
    _, metrics = pretrained
    error, guess = metrics['error_cm']['square'], metrics['mean_guess_error_cm']['square']
    assert error < 0.5 * guess, metrics['error_cm']
    assert metrics['val_images'] == 40 and metrics['train_images'] == 360
    assert np.asarray(metrics['predicted']).shape == (40, 1, 2)


def test_saved_backbone_loads_into_a_policy_unchanged(pretrained, training_set, tmp_path):
    backbone, metrics = pretrained
    path = tmp_path / 'backbone.pt'
    save_backbone(path, backbone, TINY, ('square',), {'error_cm': metrics['error_cm']})
    data = TrainingSet(training_set)
    policy = build_policy('tiny', None, data.stats, data.instructions, init_vision=str(path))
    for encoder in ('dino', 'siglip'):  # tiny has LoRA: wrapped layers keep `.base_layer`
        loaded = getattr(policy.network.vision, encoder).state_dict()
        for name, tensor in getattr(backbone, encoder).state_dict().items():
            torch.testing.assert_close(loaded[resolve_key(name, loaded)], tensor)
    # The FiLM maps are not part of the file: they stay zero (FiLM starts as the identity).
    assert all(not p.detach().any() for p in policy.network.vision.dino_film.parameters())

    # And through the command line: a short run starts from it, keeps it frozen, trains the rest.
    out = tmp_path / 'run'
    assert (
        train(
            [
                '--data',
                str(training_set),
                '--out',
                str(out),
                '--preset',
                'tiny',
                '--steps',
                '2',
                '--batch-size',
                '2',
                '--init-vision',
                str(path),
                '--freeze-vision',
            ]
        )
        == 0
    )
    final = read_weights(out / FINAL_DIR)
    wrapped = policy.network.vision.dino.state_dict()
    for name, tensor in backbone.dino.state_dict().items():
        torch.testing.assert_close(final[f'vision.dino.{resolve_key(name, wrapped)}'], tensor)
    start = policy.network.state_dict()
    assert not torch.equal(final['action_slots'], start['action_slots'])
    # Resuming with another backbone would silently change the run: refused.
    other = tmp_path / 'other.pt'
    save_backbone(other, backbone, TINY, ('square',), {})
    assert (
        train(
            [
                '--data',
                str(training_set),
                '--out',
                str(out),
                '--preset',
                'tiny',
                '--steps',
                '3',
                '--batch-size',
                '2',
                '--init-vision',
                str(other),
                '--resume',
            ]
        )
        == 2
    )


def test_bad_backbone_files_are_refused(pretrained, tmp_path):
    backbone, _ = pretrained
    with pytest.raises(ValueError, match='freeze_vision needs init_vision'):
        TrainConfig(data='d', out='o', freeze_vision=True)
    target = FilmVisionBackbone(TINY)
    with pytest.raises(FileNotFoundError, match='no pretrained vision backbone'):
        load_backbone(tmp_path / 'missing.pt', target, TINY)
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match='not a readable vision backbone'):
        load_backbone(corrupt, target, TINY)
    foreign = tmp_path / 'foreign.pt'
    torch.save({'weights': torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match='not a vision backbone file'):
        load_backbone(foreign, target, TINY)
    path = tmp_path / 'tiny.pt'
    save_backbone(path, backbone, TINY, ('square',), {})
    small = get_preset('small')
    with pytest.raises(ValueError, match='other vision shapes'):
        load_backbone(path, FilmVisionBackbone(small), small)


def test_localisation_set_checks_shapes():
    with pytest.raises(ValueError, match='uint8'):
        LocalisationSet(np.zeros((4, 8, 8, 3), np.float32), np.zeros((4, 1, 2)), ('a',))
    with pytest.raises(ValueError, match='positions has shape'):
        LocalisationSet(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 2, 2)), ('a',))
