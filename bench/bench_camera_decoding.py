"""Cost per 480x640 camera frame of each image transport the policy node reads: raw
sensor_msgs/Image vs JPEG and PNG sensor_msgs/CompressedImage (image_transport compressed).

For each: the bytes per frame and the network rate of the three cameras at 30 Hz, and the time
policy_node spends turning one message's payload into an RGB array (runtime/sensor_decoding.py:
decode_image for raw, decode_compressed_image for JPEG/PNG, OpenCV underneath), with the
encoder's cost on the sending side for reference. compressed_image_transport's defaults: JPEG
quality 95, PNG level 3. The frame is a MuJoCo-like scene: smooth shading, edges and sensor noise
(a flat synthetic frame would flatter the codecs). One thread, as the node's callbacks run.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from oft_policy_node import robot
from oft_policy_node.runtime.sensor_decoding import decode_compressed_image, decode_image

REPEATS = 60
CAMERAS, RATE_HZ = len(robot.CAMERAS), 30.0


def scene(seed: int = 0) -> np.ndarray:
    """(480, 640, 3) uint8 RGB: a lit table, a few objects with edges, camera noise."""
    rng = np.random.default_rng(seed)
    h, w = robot.IMAGE_HEIGHT, robot.IMAGE_WIDTH
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    image = np.stack([120 + 80 * x, 110 + 60 * y, 90 + 40 * (x + y) / 2], axis=-1)
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(15, 70)
        mask = (np.mgrid[0:h, 0:w][0] - cy) ** 2 + (np.mgrid[0:h, 0:w][1] - cx) ** 2 < r * r
        image[mask] = rng.integers(0, 255, 3)
    image += rng.normal(0.0, 4.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def timed(function, repeats: int = REPEATS) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {
        'median_ms': round(float(np.median(ms)), 3),
        'p90_ms': round(float(np.percentile(ms, 90)), 3),
    }


def run() -> dict:
    cv2.setNumThreads(1)
    rgb = scene()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    size = (robot.IMAGE_HEIGHT, robot.IMAGE_WIDTH)
    raw = bytearray(rgb.tobytes())  # as rclpy hands a message's data; the node copies it
    results = {
        'frame': f'{size[0]}x{size[1]} rgb8',
        'raw': {
            'bytes': len(raw),
            'mb_per_s_3_cameras_30hz': round(len(raw) * CAMERAS * RATE_HZ / 1e6, 1),
            'decode': timed(lambda: decode_image('rgb8', *size, size[1] * 3, bytes(raw), size)),
        },
    }
    for kind, extension, params in (
        ('jpeg', '.jpg', [cv2.IMWRITE_JPEG_QUALITY, 95]),
        ('png', '.png', [cv2.IMWRITE_PNG_COMPRESSION, 3]),
    ):
        data = bytearray(cv2.imencode(extension, bgr, params)[1].tobytes())
        format_field = f'rgb8; {kind} compressed bgr8'
        decoded = decode_compressed_image(format_field, bytes(data), size)
        results[kind] = {
            'bytes': len(data),
            'mb_per_s_3_cameras_30hz': round(len(data) * CAMERAS * RATE_HZ / 1e6, 1),
            'size_vs_raw': round(len(data) / len(raw), 3),
            'decode': timed(
                lambda f=format_field, d=data: decode_compressed_image(f, bytes(d), size)
            ),
            'encode': timed(lambda e=extension, p=params: cv2.imencode(e, bgr, p), REPEATS // 3),
            'mean_abs_error': round(float(np.abs(decoded.astype(int) - rgb).mean()), 2),
        }
        results[kind]['decode_vs_raw'] = round(
            results[kind]['decode']['median_ms'] / results['raw']['decode']['median_ms'], 1
        )
        # share of one core the node spends decoding all cameras at 30 Hz
        results[kind]['decode_core_share_3_cameras_30hz'] = round(
            results[kind]['decode']['median_ms'] * CAMERAS * RATE_HZ / 1e3, 3
        )
    return results
