"""Cost per observation of each image pipeline the policy can have: this stack's resize (torch,
bilinear with antialiasing, centre crop) vs the authors' (image_pipeline='openvla_oft' of
checkpoints imported from moojink/openvla-oft: PIL bicubic to 256, a JPEG round trip, TF's
lanczos3 to 224, TF's centre crop; model/openvla_oft_images.py), for three 480x640 frames, one
thread, as the policy node prepares them before each chunk; and each stage of the authors'
pipeline for one frame.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from bench.bench_camera_decoding import scene, timed
from oft_policy_node import robot
from oft_policy_node.model import get_preset
from oft_policy_node.model.openvla_oft_images import center_crop, jpeg_round_trip, resize_lanczos3
from oft_policy_node.model.processing import observation_pixels

REPEATS = 30


def run() -> dict:
    torch.set_num_threads(1)
    images = {camera: scene(seed) for seed, camera in enumerate(robot.CAMERAS)}
    base = get_preset('openvla-7b')
    resize = timed(lambda: observation_pixels(images, base), REPEATS)
    authors = timed(
        lambda: observation_pixels(images, base.replace(image_pipeline='openvla_oft')), REPEATS
    )
    frame = images['cam_high']
    at_256 = np.asarray(Image.fromarray(frame).resize((256, 256), resample=Image.BICUBIC))
    jpeg = jpeg_round_trip(at_256)
    at_224 = resize_lanczos3(jpeg, 224)
    stages = {
        'bicubic_480x640_to_256': timed(
            lambda: Image.fromarray(frame).resize((256, 256), resample=Image.BICUBIC), REPEATS
        ),
        'jpeg_round_trip_256': timed(lambda: jpeg_round_trip(at_256), REPEATS),
        'lanczos3_256_to_224': timed(lambda: resize_lanczos3(jpeg, 224), REPEATS),
        'centre_crop_224': timed(lambda: center_crop(at_224, 0.9), REPEATS),
    }
    return {
        'cameras': len(images),
        'frame': f'{robot.IMAGE_HEIGHT}x{robot.IMAGE_WIDTH}',
        'resize_3_cameras': resize,
        'openvla_oft_3_cameras': authors,
        'openvla_oft_vs_resize': round(authors['median_ms'] / resize['median_ms'], 2),
        'openvla_oft_stages_one_frame': stages,
    }
