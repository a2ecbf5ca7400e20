"""The exact messages the cross-process interface test sends, shared by both sides."""

from __future__ import annotations

import numpy as np

K, D = 25, 14
JOINT_NAMES = [
    f'follower_{side}/{joint}'
    for side in ('left', 'right')
    for joint in (
        'waist',
        'shoulder',
        'elbow',
        'forearm_roll',
        'wrist_angle',
        'wrist_rotate',
        'gripper',
    )
]
# Values that are exact in float32 but not trivially regular, so a reordering shows.
ACTIONS = np.arange(K * D, dtype=np.float32).reshape(K, D) * np.float32(-0.0078125) + np.float32(
    1.5
)  # (K, D)
STAMP = (1_700_000_123, 456_789_012)
CHUNK_ID = 2**40 + 7  # beyond 32 bits: the field is uint64
INSTRUCTION = 'put green pepper into pot'
PERIOD = 0.04
LATENCY = 0.321
KNOWN_INSTRUCTIONS = ('put green pepper into pot', 'put red pepper into pot')
CHUNK_TOPIC = '/interface_test/action_chunk'
SERVICE = '/interface_test/set_instruction'


def reference_chunk() -> object:
    from oft_msgs.msg import ActionChunk

    msg = ActionChunk()
    msg.header.stamp.sec, msg.header.stamp.nanosec = STAMP
    msg.chunk_id = CHUNK_ID
    msg.instruction = INSTRUCTION
    msg.joint_names = JOINT_NAMES
    msg.period = PERIOD
    msg.num_steps = K
    msg.actions = ACTIONS.ravel().tolist()
    msg.inference_latency = LATENCY
    return msg
