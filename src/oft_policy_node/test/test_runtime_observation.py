"""Observation sync, image and joint-state decoding, and instruction rules, with exact values."""

from __future__ import annotations

import numpy as np
import pytest

from oft_policy_node import robot
from oft_policy_node.runtime.instructions import validate_instruction
from oft_policy_node.runtime.observation_buffer import ObservationBuffer
from oft_policy_node.runtime.sensor_decoding import arm_state_from_joint_state, decode_image

MS = 1_000_000  # ns


def fill(buffer: ObservationBuffer, stamps: dict[str, int]) -> None:
    for source, stamp in stamps.items():
        if source in robot.ARMS:
            buffer.add_arm_state(source, stamp, np.full(7, stamp / MS))
        else:
            buffer.add_image(source, stamp, np.full((2, 2, 3), stamp // MS % 256, np.uint8))


def test_newest_set_within_tolerance():
    buffer = ObservationBuffer(sync_tolerance=0.02, max_age=0.5)
    fill(buffer, {c: 1000 * MS for c in (*robot.CAMERAS, *robot.ARMS)})
    fill(
        buffer,
        {
            'cam_high': 1033 * MS,
            'cam_left_wrist': 1040 * MS,
            'cam_right_wrist': 1035 * MS,
            'left': 1030 * MS,
            'right': 1050 * MS,
        },
    )
    observation = buffer.latest(1100 * MS)
    # The anchor is the laggard's newest sample (left, 1030 ms); every source picks its sample
    # nearest to it, here each newest one; the spread 1030..1050 ms is within the 20 ms.
    assert observation.stamp == 1050 * MS
    assert observation.images['cam_left_wrist'][0, 0, 0] == 1040 % 256
    np.testing.assert_array_equal(observation.proprio, [1030.0] * 7 + [1050.0] * 7)


def test_out_of_sync_or_too_old_gives_nothing():
    buffer = ObservationBuffer(sync_tolerance=0.01, max_age=0.2)
    assert buffer.latest(0) is None  # nothing yet
    fill(buffer, {c: 1000 * MS for c in (*robot.CAMERAS, 'left')})
    fill(buffer, {'right': 1050 * MS})
    assert buffer.latest(1060 * MS) is None  # right is 50 ms away from everything else
    fill(buffer, {'right': 1005 * MS})  # older than its last: treated as a clock reset
    assert buffer.latest(1100 * MS).stamp == 1005 * MS
    assert buffer.latest(1300 * MS) is None  # 295 ms old


def test_decode_image_rgb_bgr_and_padding():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(decode_image('rgb8', 2, 3, 9, rgb.tobytes()), rgb)
    np.testing.assert_array_equal(decode_image('bgr8', 2, 3, 9, rgb[..., ::-1].tobytes()), rgb)
    padded = np.pad(rgb.reshape(2, 9), ((0, 0), (0, 3)))  # step 12: 3 padding bytes per row
    np.testing.assert_array_equal(decode_image('rgb8', 2, 3, 12, padded.tobytes()), rgb)


@pytest.mark.parametrize(
    'args, reason',
    [
        (('mono8', 2, 3, 3, bytes(6)), "encoding 'mono8'"),
        (('rgb8', 2, 3, 9, bytes(18), (480, 640)), 'size 2x3 differs from the expected 480x640'),
        (('rgb8', 2, 3, 9, bytes(17)), 'truncated'),
        (('rgb8', 2, 3, 5, bytes(18)), 'step 5'),
    ],
)
def test_decode_image_rejections(args, reason):
    with pytest.raises(ValueError, match=reason):
        decode_image(*args)


def test_joint_state_mapped_by_name():
    names = list(reversed(robot.INTERBOTIX_JOINT_STATE_ORDER))
    by_name = {
        'waist': 0.1,
        'shoulder': 0.2,
        'elbow': 0.3,
        'forearm_roll': 0.4,
        'wrist_angle': 0.5,
        'wrist_rotate': 0.6,
        'gripper': 9.0,
        'left_finger': robot.FINGER_OPEN,
        'right_finger': -robot.FINGER_OPEN,
    }
    state = arm_state_from_joint_state(names, [by_name[n] for n in names])
    np.testing.assert_allclose(state, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0])
    with pytest.raises(ValueError, match=r"\['shoulder', 'elbow'"):
        arm_state_from_joint_state(['waist'], [0.0])
    with pytest.raises(ValueError, match='2 names but 1 positions'):
        arm_state_from_joint_state(['waist', 'elbow'], [0.0])
    with pytest.raises(ValueError, match='non-finite'):
        arm_state_from_joint_state(names, [float('inf')] * len(names))


def test_instruction_rules():
    known = ('put green pepper into pot',)
    assert validate_instruction('  put green pepper into pot\n', known, False) == known[0]
    assert validate_instruction('wave', known, allow_unknown=True) == 'wave'
    for text, reason in [
        ('', 'empty'),
        ('x' * 257, '257 characters'),
        ('a\tb', 'non-printable'),
        ('wave', 'not seen in training'),
    ]:
        with pytest.raises(ValueError, match=reason):
            validate_instruction(text, known, False)
