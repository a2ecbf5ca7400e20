"""Pre/post-processing shared by training and inference: images and NormStats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oft_policy_node import robot
from oft_policy_node.model import NormStats
from oft_policy_node.model.processing import (
    augment_images,
    color_jitter,
    crop_side,
    inference_images,
    normalize_pixels,
    stack_camera_images,
)

CAMS = ('a', 'b')


def test_crop_side_keeps_the_area_fraction():
    assert crop_side(224, 0.9) == 213  # sqrt(0.9) * 224 = 212.5
    assert crop_side(10, 0.64) == 8
    assert crop_side(56, 1.0) == 56


def test_centre_crop_removes_exactly_the_border():
    img = torch.zeros(1, 3, 10, 10)
    img[..., 1:9, 1:9] = 1.0  # 1-pixel border of zeros = outside the 0.64 centre crop
    assert torch.equal(inference_images(img, 10, 0.64), torch.ones(1, 3, 10, 10))
    assert torch.equal(inference_images(img, 10, 1.0), img)


def test_stack_camera_images_orders_and_scales():
    images = {'b': np.full((4, 6, 3), 255, np.uint8), 'a': np.zeros((4, 6, 3), np.uint8)}
    out = stack_camera_images(images, CAMS)
    assert out.shape == (2, 3, 4, 6) and out.dtype == torch.float32
    assert out[0].max() == 0.0 and out[1].min() == 1.0


@pytest.mark.parametrize(
    'images, message',
    [
        ({'a': np.zeros((4, 6, 3), np.uint8)}, "'b'"),
        ({'a': np.zeros((4, 6, 3), np.uint8), 'b': np.zeros((4, 6, 3), np.float32)}, "'b'.*uint8"),
        ({'a': np.zeros((4, 6, 4), np.uint8), 'b': np.zeros((4, 6, 3), np.uint8)}, "'a'.*HxWx3"),
    ],
)
def test_stack_camera_images_rejects_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        stack_camera_images(images, CAMS)


def test_augmentation_uses_one_draw_for_all_cameras():
    one = torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(0))
    views = one.repeat(3, 1, 1, 1)  # three identical cameras
    out = augment_images(views, 28, 0.9, generator=torch.Generator().manual_seed(1))
    assert out.shape == (3, 3, 28, 28) and 0.0 <= out.min() and out.max() <= 1.0
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    other = augment_images(views, 28, 0.9, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(out, other)


def test_color_jitter_identity_and_gray_invariance():
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(color_jitter(x, 1.0, 1.0, 1.0, 0.0), x)
    gray = torch.full((1, 3, 4, 4), 0.4)
    torch.testing.assert_close(color_jitter(gray, 1.0, 1.0, 1.3, 0.05), gray)
    torch.testing.assert_close(color_jitter(gray, 1.5, 1.0, 1.0, 0.0), gray * 1.5)


def test_normalize_pixels_exact():
    x = torch.full((3, 2, 2), 0.5)
    out = normalize_pixels(x, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    assert out[0].eq(0.0).all() and out[1].eq(1.0).all() and out[2].eq(0.25).all()


def test_norm_stats_normalise_clip_and_round_trip(tmp_path):
    stats = NormStats(
        action_min=[0.0, -2.0, 1.0],
        action_max=[1.0, 2.0, 1.0],
        proprio_min=[0.0],
        proprio_max=[4.0],
    )
    np.testing.assert_array_equal(
        stats.normalize_actions([[0.0, 0.0, 1.0], [1.0, 2.0, 1.0]]),
        [[-1.0, 0.0, 0.0], [1.0, 1.0, 0.0]],
    )  # constant dim -> 0
    np.testing.assert_array_equal(stats.normalize_actions([5.0, -9.0, 1.0]), [1.0, -1.0, 0.0])
    np.testing.assert_array_equal(stats.unnormalize_actions([3.0, 0.5, 0.0]), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(stats.normalize_proprio([1.0]), [-0.5])
    x = np.array([0.25, -1.0, 1.0], np.float32)
    np.testing.assert_allclose(stats.unnormalize_actions(stats.normalize_actions(x)), x, atol=1e-6)
    stats.save(tmp_path)
    loaded = NormStats.load(tmp_path)
    np.testing.assert_array_equal(loaded.action_max, stats.action_max)


def test_norm_stats_masked_dimensions_pass_through(tmp_path):
    """As the authors' normalize_proprio / _unnormalize_actions: a dimension the mask leaves
    out is passed as it is (proprio still clipped to [-1, 1], actions not)."""
    stats = NormStats(
        [0.0, 0.0],
        [2.0, 2.0],
        [0.0, 0.0],
        [2.0, 2.0],
        action_mask=np.array([True, False]),
        proprio_mask=np.array([False, True]),
    )
    np.testing.assert_array_equal(stats.unnormalize_actions([0.0, 1.5]), [1.0, 1.5])
    np.testing.assert_array_equal(stats.normalize_actions([2.0, 0.5]), [1.0, 0.5])
    np.testing.assert_array_equal(stats.normalize_proprio([0.5, 2.0]), [0.5, 1.0])
    np.testing.assert_array_equal(stats.normalize_proprio([3.0, 2.0]), [1.0, 1.0])
    stats.save(tmp_path)
    loaded = NormStats.load(tmp_path)
    assert loaded.action_mask.tolist() == [True, False]
    assert loaded.proprio_mask.tolist() == [False, True]
    unmasked = NormStats([0.0], [1.0], [0.0], [1.0])
    assert 'action_mask' not in unmasked.to_dict()
    with pytest.raises(ValueError, match='action_mask must be a bool array of shape'):
        NormStats([0.0], [1.0], [0.0], [1.0], action_mask=np.array([1.0]))


def test_norm_stats_from_data_and_errors():
    actions = np.array([[0.0, 1.0], [2.0, -1.0]])
    stats = NormStats.from_data(actions, actions)
    np.testing.assert_array_equal(stats.action_min, [0.0, -1.0])
    with pytest.raises(ValueError, match='action_min > action_max'):
        NormStats([1.0], [0.0], [0.0], [1.0])
    with pytest.raises(ValueError, match='finite'):
        NormStats([np.nan], [0.0], [0.0], [1.0])
    with pytest.raises(ValueError, match='last dim 2'):
        stats.normalize_actions(np.zeros(3))
    lower, upper = robot.action_limits()
    assert NormStats.from_limits(lower, upper).normalize_actions(upper).tolist() == [1.0] * 14
