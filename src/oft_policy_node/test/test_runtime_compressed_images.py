"""Decoding sensor_msgs/CompressedImage (runtime/sensor_decoding.py): JPEG and PNG in the
format strings image_transport's compressed plugin writes, colour order kept, bad input refused
with the reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from oft_policy_node.runtime.sensor_decoding import compressed_kind, decode_compressed_image

RGB = np.zeros((48, 64, 3), np.uint8)
RGB[..., 0] = 200  # red: a swapped channel order would show as blue
RGB[:, :32, 1] = 90


def encode(extension: str) -> bytes:
    ok, data = cv2.imencode(extension, RGB[..., ::-1])
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    'format_field, kind',
    [
        ('rgb8; jpeg compressed bgr8', 'jpeg'),
        ('bgr8; png compressed bgr8', 'png'),
        ('jpeg', 'jpeg'),
        ('JPG', 'jpeg'),
        ('png', 'png'),
    ],
)
def test_formats_of_image_transport_and_of_plain_publishers(format_field, kind):
    assert compressed_kind(format_field) == kind


def test_png_is_exact_and_jpeg_close_in_rgb_order():
    np.testing.assert_array_equal(decode_compressed_image('png', encode('.png')), RGB)
    jpeg = decode_compressed_image('rgb8; jpeg compressed bgr8', encode('.jpg'), (48, 64))
    assert np.abs(jpeg.astype(int) - RGB).mean() < 3  # lossy, the channels in RGB order
    assert jpeg[..., 0].mean() > 190 and jpeg[..., 2].mean() < 10


@pytest.mark.parametrize(
    'format_field, data, size, message',
    [
        ('16UC1; compressedDepth png', b'x', None, 'is not JPEG or PNG'),
        ('jpeg', b'not an image', None, 'do not decode as'),
        ('jpeg', b'', None, 'do not decode as'),
        ('png', None, (480, 640), 'size 48x64 differs from the expected 480x640'),
    ],
)
def test_bad_compressed_images_are_refused_saying_why(format_field, data, size, message):
    with pytest.raises(ValueError, match=message):
        decode_compressed_image(format_field, encode('.png') if data is None else data, size)
