"""The authors' image pipeline without TensorFlow (image_pipeline='openvla_oft').

test/data/openvla_oft_images/ was written by TensorFlow running the authors' own functions
(scripts/fixtures/openvla_oft_images.py: openvla_utils.py resize_image_for_policy and
center_crop_image on a 256 x 256 image): each stage is compared with what TensorFlow computed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oft_policy_node import robot
from oft_policy_node.model import get_preset
from oft_policy_node.model.openvla_oft_images import (
    center_crop,
    jpeg_round_trip,
    prepare_frame,
    resize_lanczos3,
)
from oft_policy_node.model.processing import camera_pixels, observation_pixels

FIXTURE = Path(__file__).resolve().parent / 'data' / 'openvla_oft_images'


def stage(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURE / f'{name}.png'))


def differences(ours: np.ndarray, theirs: np.ndarray) -> tuple[int, float]:
    """Largest difference in grey levels, and the share of values that differ at all."""
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    return int(diff.max()), float((diff > 0).mean())


def test_the_jpeg_round_trip_is_tensorflows_byte_for_byte():
    assert differences(jpeg_round_trip(stage('input')), stage('jpeg')) == (0, 0.0)


def test_the_lanczos3_resize_is_tensorflows_within_one_level():
    most, share = differences(resize_lanczos3(stage('jpeg'), 224), stage('resized'))
    assert most <= 1 and share < 1e-3  # float32 sums in another order: rare ties round apart


def test_the_centre_crop_is_tensorflows():
    assert differences(center_crop(stage('resized'), 0.9), stage('cropped')) == (0, 0.0)


def test_the_whole_pipeline_from_a_256_frame():
    most, share = differences(prepare_frame(stage('input'), 224, 0.9), stage('cropped'))
    assert most <= 1 and share < 1e-3
    most, _ = differences(prepare_frame(stage('input'), 224, 1.0), stage('resized'))
    assert most <= 1  # crop_scale 1: the authors' --center_crop False


def test_a_camera_frame_goes_to_256_bicubic_first_and_a_model_size_frame_stays():
    frame = np.asarray(Image.fromarray(stage('input')).resize((640, 480), Image.BICUBIC))
    at_256 = np.asarray(Image.fromarray(frame).resize((256, 256), resample=Image.BICUBIC))
    assert np.array_equal(prepare_frame(frame, 224, 0.9), prepare_frame(at_256, 224, 0.9))
    small = stage('resized')
    assert np.array_equal(prepare_frame(small, 224, 1.0), small)
    assert np.array_equal(prepare_frame(small, 224, 0.9), stage('cropped'))


def test_the_config_chooses_the_pipeline():
    cfg = get_preset('tiny')
    frame = stage('input')
    images = dict.fromkeys(robot.CAMERAS, frame)
    ours = observation_pixels(images, cfg.replace(image_size=224))
    theirs = observation_pixels(images, cfg.replace(image_size=224, image_pipeline='openvla_oft'))
    expected = torch.from_numpy(prepare_frame(frame, 224, 0.9)).permute(2, 0, 1) / 255.0
    assert torch.equal(theirs[0], expected) and not torch.equal(ours[0], expected)
    # Training crops and jitters the authors' uncropped 224 frames.
    uncropped = camera_pixels(images, cfg.replace(image_size=224, image_pipeline='openvla_oft'))
    assert tuple(uncropped.shape) == (3, 3, 224, 224)
    with pytest.raises(ValueError, match='missing camera image'):
        observation_pixels({'cam_high': frame}, cfg.replace(image_pipeline='openvla_oft'))
    with pytest.raises(ValueError, match="image_pipeline='bicubic'"):
        cfg.replace(image_pipeline='bicubic')
