"""The authors' inference image pipeline (`image_pipeline='openvla_oft'`), without TensorFlow.

Policies trained with moojink/openvla-oft saw camera frames prepared this way, so checkpoints
imported from it (import_oft.py) are fed the same way:

1. experiments/robot/aloha/aloha_utils.py `resize_image_for_preprocessing`: the 480 x 640 frame
   to 256 x 256 with PIL's bicubic filter (their ALOHA data were prepared at that size,
   preprocess_split_aloha_data.py);
2. experiments/robot/openvla_utils.py `resize_image_for_policy`: a JPEG round trip (their RLDS
   data hold JPEGs; tf.image.encode_jpeg's default quality 95, 4:2:0 chroma, decoded as
   TensorFlow decodes), then
   tf.image.resize(224, method='lanczos3', antialias=True), rounded to uint8;
3. `center_crop_image` (when trained with random crops, their default): the centre square of
   0.9 of the area, tf.image.crop_and_resize back to 224 (bilinear), back to uint8 the way
   tf.image.convert_image_dtype does (x * 255.5, truncated).

The two TensorFlow operations are re-stated from TensorFlow's kernels (cited per function) and
checked against TensorFlow's own output (test data written by scripts/fixtures/
openvla_oft_images.py): equal within one grey level. A frame already at the model size skips
steps 1-2, a 256 x 256 frame skips step 1, as in the authors' code.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import simplejpeg
from PIL import Image

PREPROCESS_SIZE = 256  # aloha_utils.py ALOHA_PREPROCESS_SIZE
JPEG_QUALITY = 95  # tf.image.encode_jpeg's default quality
_TF_PI = 3.14159265359  # the constant TensorFlow's LanczosKernelFunc uses


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """TensorFlow's LanczosKernelFunc, radius 3 (tensorflow/core/kernels/image/
    sampling_kernels.h)."""
    x = np.abs(x).astype(np.float64)
    radius = 3.0
    with np.errstate(divide='ignore', invalid='ignore'):
        value = radius * np.sin(_TF_PI * x) * np.sin(_TF_PI * x / radius) / (_TF_PI**2 * x * x)
    value = np.where(x <= 1e-3, 1.0, value)
    return np.where(x > radius, 0.0, value)


@functools.lru_cache(maxsize=8)
def lanczos3_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float32 resampling matrix of tf.image.resize(method='lanczos3', antialias=True):
    ScaleAndTranslate with scale out/in and no translation, spans as `ComputeSpansCore` in
    tensorflow/core/kernels/image/scale_and_translate_op.cc computes them (sample at
    (x + 0.5) / scale, kernel widened by 1/scale when shrinking, weights normalised)."""
    inv_scale = in_size / out_size
    kernel_scale = max(inv_scale, 1.0)
    radius = 3.0 * kernel_scale
    weights = np.zeros((out_size, in_size), dtype=np.float32)
    for x in range(out_size):
        sample = (x + 0.5) * inv_scale
        start = min(max(math.ceil(sample - radius - 0.5), 0), in_size - 1)
        end = min(max(math.floor(sample + radius - 0.5), 0), in_size - 1) + 1
        source = np.arange(start, end, dtype=np.float64)
        w = _lanczos3((source + 0.5 - sample) / kernel_scale).astype(np.float32)
        total = w.sum(dtype=np.float32)
        if abs(total) >= 1000.0 * np.finfo(np.float32).tiny:
            w = w / total
        weights[x, start:end] = w
    return weights


def resize_lanczos3(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, as tf.image.resize(lanczos3, antialias) and
    resize_image_for_policy's round and clip."""
    rows = lanczos3_weights(image.shape[0], size)  # (size, H)
    cols = lanczos3_weights(image.shape[1], size)  # (size, W)
    h, w, c = image.shape
    out = rows @ image.astype(np.float32).reshape(h, w * c)  # (size, W*3), BLAS
    out = (out.reshape(size, w, c).transpose(0, 2, 1) @ cols.T).transpose(0, 2, 1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def center_crop(image: np.ndarray, crop_scale: float) -> np.ndarray:
    """center_crop_image: the centre square keeping `crop_scale` of the area, resized back to
    the image's size by tf.image.crop_and_resize (bilinear between the four neighbours, sample
    positions as tensorflow/core/kernels/image/crop_and_resize_op.cc), in float32 on [0, 1]
    values, then to uint8 by convert_image_dtype (x * 255.5, truncated)."""
    h, w = image.shape[:2]
    side = np.sqrt(np.float32(crop_scale))  # tf.sqrt of the float32 constant
    y1 = x1 = (np.float32(1.0) - side) / np.float32(2.0)
    y2 = x2 = y1 + side
    values = image.astype(np.float32) * np.float32(1.0 / 255.0)

    def positions(start: np.float32, stop: np.float32, n: int) -> tuple[np.ndarray, ...]:
        scale = (stop - start) * np.float32(n - 1) / np.float32(n - 1)  # crop size = n
        pos = start * np.float32(n - 1) + np.arange(n, dtype=np.float32) * scale
        low = np.floor(pos).astype(np.int64)
        high = np.ceil(pos).astype(np.int64)
        return low, high, (pos - low).astype(np.float32)

    top, bottom, y_lerp = positions(y1, y2, h)
    left, right, x_lerp = positions(x1, x2, w)
    x_lerp = x_lerp[None, :, None]
    upper = values[top][:, left] + (values[top][:, right] - values[top][:, left]) * x_lerp
    lower = values[bottom][:, left] + (values[bottom][:, right] - values[bottom][:, left]) * x_lerp
    out = upper + (lower - upper) * y_lerp[:, None, None]
    out = np.clip(out, 0.0, 1.0) * np.float32(255.5)
    return out.astype(np.uint8)  # truncation, as saturate_cast


def jpeg_round_trip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode as JPEG and decode again (resize_image_for_policy's first two lines), byte for
    byte and pixel for pixel as TensorFlow: Pillow's encoder at quality 95 with 4:2:0 chroma
    writes the bytes tf.image.encode_jpeg writes; tf.io.decode_image decodes with libjpeg's
    fast integer DCT and smooth chroma upsampling, which Pillow cannot select (its accurate DCT
    differs by up to 7 grey levels), simplejpeg can."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='JPEG', quality=quality, subsampling=2)
    return simplejpeg.decode_jpeg(buffer.getvalue(), fastdct=True, fastupsample=False)


def prepare_frame(frame: np.ndarray, size: int, crop_scale: float) -> np.ndarray:
    """One (H, W, 3) uint8 camera frame -> (size, size, 3) uint8 as the authors' deployment
    feeds their processor (steps 1-3 of the module docstring; crop_scale 1: no crop)."""
    if frame.shape[:2] != (size, size):
        if frame.shape[:2] != (PREPROCESS_SIZE, PREPROCESS_SIZE):
            frame = np.asarray(
                Image.fromarray(frame).resize(
                    (PREPROCESS_SIZE, PREPROCESS_SIZE), resample=Image.BICUBIC
                )
            )
        frame = resize_lanczos3(jpeg_round_trip(frame), size)
    if crop_scale < 1.0:
        frame = center_crop(frame, crop_scale)
    return frame
