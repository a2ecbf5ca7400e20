"""Checked decoding of camera images and Interbotix joint states into arrays (ROS-free: takes
the message fields, so the rules are testable without ROS). Bad input raises ValueError with
the reason; the node counts and logs it and keeps running."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oft_policy_node import robot

ENCODINGS = ('rgb8', 'bgr8')


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: bytes,
    expected_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """An rgb8/bgr8 image -> (H, W, 3) uint8 RGB (a copy, independent of `data`)."""
    if encoding not in ENCODINGS:
        raise ValueError(f'encoding {encoding!r} is not supported; publish one of {ENCODINGS}')
    if expected_size is not None and (height, width) != tuple(expected_size):
        raise ValueError(
            f'size {height}x{width} differs from the expected '
            f'{expected_size[0]}x{expected_size[1]} (parameter image_size)'
        )
    if height < 1 or width < 1 or step < width * 3:
        raise ValueError(
            f'height {height}, width {width}, step {step} do not describe a 3-byte-per-pixel image'
        )
    if len(data) < step * height:
        raise ValueError(
            f'data has {len(data)} bytes, {step} x {height} = {step * height} '
            f'needed (truncated image)'
        )
    rows = np.frombuffer(data, np.uint8, count=step * height).reshape(height, step)
    image = rows[:, : width * 3].reshape(height, width, 3)  # (H, W, 3)
    return np.ascontiguousarray(image[..., ::-1] if encoding == 'bgr8' else image)


# sensor_msgs/CompressedImage formats: compressed_image_transport writes
# "<image encoding>; <jpeg|png> compressed <encoding compressed>", e.g. "rgb8; jpeg compressed
# bgr8" (image_transport_plugins, compressed_publisher.cpp); other publishers write just "jpeg"
# or "png". Either way the payload is a whole JPEG or PNG file.
COMPRESSED_FORMATS = ('jpeg', 'png')


def compressed_kind(format_field: str) -> str:
    """'jpeg' or 'png' from a CompressedImage's `format`; ValueError for anything else
    (compressedDepth, theora, ...)."""
    words = format_field.lower().replace(';', ' ').split()
    if 'compresseddepth' in words:
        words = []  # a depth map, PNG inside but not a colour frame
    for kind in COMPRESSED_FORMATS:
        if kind in words or (kind == 'jpeg' and 'jpg' in words):
            return kind
    raise ValueError(
        f'compressed format {format_field!r} is not JPEG or PNG (image_transport '
        f'"compressed"; "compressedDepth" and "theora" are not colour frames)'
    )


def decode_compressed_image(
    format_field: str, data: bytes, expected_size: tuple[int, int] | None = None
) -> np.ndarray:
    """A JPEG or PNG sensor_msgs/CompressedImage -> (H, W, 3) uint8 RGB."""
    import cv2  # only a compressed transport needs it

    compressed_kind(format_field)
    buffer = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None  # (H, W, 3) BGR
    if image is None:
        raise ValueError(f'{len(data)} bytes do not decode as {format_field!r}')
    if expected_size is not None and image.shape[:2] != tuple(expected_size):
        raise ValueError(
            f'size {image.shape[0]}x{image.shape[1]} differs from the expected '
            f'{expected_size[0]}x{expected_size[1]} (parameter image_size)'
        )
    return np.ascontiguousarray(image[..., ::-1])


def joint_values(
    names: Sequence[str], positions: Sequence[float], wanted: Sequence[str]
) -> np.ndarray:
    """The positions of `wanted` joints from a JointState's names and positions, looked up by
    name (any order); ValueError for a missing joint or a non-finite value."""
    if len(names) != len(positions):
        raise ValueError(f'{len(names)} names but {len(positions)} positions')
    by_name = dict(zip(names, positions, strict=True))
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise ValueError(f'joints {missing} are missing (got {list(names)})')
    values = np.array([by_name[name] for name in wanted], dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f'non-finite positions {dict(zip(wanted, values.tolist(), strict=True))}')
    return values


def arm_state_from_joint_state(
    names: Sequence[str],
    positions: Sequence[float],
    gripper: robot.GripperCalibration = robot.ALOHA2_GRIPPER,
) -> np.ndarray:
    """An Interbotix vx300s JointState (any order, mapped by name) -> (7,): the 6 arm joints
    (rad) and the gripper opening (0..1 from the left finger position by `gripper`'s
    calibration, unclipped)."""
    values = joint_values(names, positions, (*robot.ARM_JOINTS, robot.FINGER_JOINT))
    values[-1] = gripper.finger_to_normalized(values[-1])
    return values  # (7,)
