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


def arm_state_from_joint_state(names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
    """An Interbotix vx300s JointState (any order, mapped by name) -> (7,): the 6 arm joints
    (rad) and the gripper opening (0..1 from the left finger position, unclipped)."""
    if len(names) != len(positions):
        raise ValueError(f'{len(names)} names but {len(positions)} positions')
    by_name = dict(zip(names, positions, strict=True))
    wanted = (*robot.ARM_JOINTS, robot.FINGER_JOINT)
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise ValueError(f'joints {missing} are missing (got {list(names)})')
    values = np.array([by_name[name] for name in wanted], dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f'non-finite positions {dict(zip(wanted, values.tolist(), strict=True))}')
    values[-1] = robot.finger_to_normalized(values[-1])
    return values  # (7,)
