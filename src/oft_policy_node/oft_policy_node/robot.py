"""The bimanual ALOHA as the stack sees it: joint layout, limits, gripper units, cameras, topics.

ROS-free and the single place these names and numbers live; the nodes, the simulation, the
recorder and the training converter all read them from here. Facts from the public
Interbotix vx300s description and the ROS 2 ALOHA stack (see ARCHITECTURE.md section 6).

Units: arm joints in radians. The policy sees and predicts grippers as a normalised opening,
0.0 = closed .. 1.0 = open. The robot reports the gripper by finger position (metres, joint
`left_finger`) and is commanded by gripper motor angle (radians, joint `gripper`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ARMS = ('left', 'right')
ARM_JOINTS = ('waist', 'shoulder', 'elbow', 'forearm_roll', 'wrist_angle', 'wrist_rotate')
GRIPPER = 'gripper'
# The order of interbotix_xs_sdk's /<ns>/joint_states for a vx300s.
INTERBOTIX_JOINT_STATE_ORDER = (*ARM_JOINTS, GRIPPER, 'left_finger', 'right_finger')
FINGER_JOINT = 'left_finger'

# Camera names in the order the model consumes them (cam_high first).
CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
IMAGE_HEIGHT, IMAGE_WIDTH = 480, 640

CONTROL_RATE_HZ = 25.0
CHUNK_SIZE = 25  # K: actions per chunk
ACTION_DIM = 2 * (len(ARM_JOINTS) + 1)  # D = 14: per arm 6 joints + gripper


@dataclass(frozen=True)
class JointLimit:
    lower: float
    upper: float


# vx300s position limits (rad); the velocity limit is the same for every arm joint.
PI_LIMIT = 3.14158
ARM_LIMITS = {
    'waist': JointLimit(-PI_LIMIT, PI_LIMIT),
    'shoulder': JointLimit(-1.850, 1.257),
    'elbow': JointLimit(-1.763, 1.606),
    'forearm_roll': JointLimit(-PI_LIMIT, PI_LIMIT),
    'wrist_angle': JointLimit(-1.868, 2.234),
    'wrist_rotate': JointLimit(-PI_LIMIT, PI_LIMIT),
}
ARM_VELOCITY_LIMIT = math.pi  # rad/s
# The executor's limit for the normalised gripper opening (1/s): a full close takes 0.25 s, about
# as fast as a teleoperator closes the leader gripper in the ALOHA demos.
GRIPPER_VELOCITY_LIMIT = 4.0

# Gripper conversions of the ROS 2 ALOHA follower arms.
FINGER_CLOSED, FINGER_OPEN = 0.0440, 0.0579  # m, observed finger position
GRIPPER_MOTOR_CLOSED, GRIPPER_MOTOR_OPEN = 0.6197, 1.6214  # rad, commanded motor angle


def finger_to_normalized(finger_position: float | np.ndarray) -> float | np.ndarray:
    """Observed finger position (m) -> normalised opening (0 closed .. 1 open), unclipped."""
    return (finger_position - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED)


def normalized_to_finger(opening: float | np.ndarray) -> float | np.ndarray:
    """Normalised opening -> finger position (m), the inverse of `finger_to_normalized`."""
    return FINGER_CLOSED + opening * (FINGER_OPEN - FINGER_CLOSED)


def normalized_to_motor(opening: float | np.ndarray) -> float | np.ndarray:
    """Normalised opening -> gripper motor angle command (rad)."""
    return GRIPPER_MOTOR_CLOSED + opening * (GRIPPER_MOTOR_OPEN - GRIPPER_MOTOR_CLOSED)


def motor_to_normalized(motor_angle: float | np.ndarray) -> float | np.ndarray:
    """Gripper motor angle (rad) -> normalised opening, the inverse of `normalized_to_motor`."""
    return (motor_angle - GRIPPER_MOTOR_CLOSED) / (GRIPPER_MOTOR_OPEN - GRIPPER_MOTOR_CLOSED)


def arm_namespace(arm: str) -> str:
    """Interbotix namespace of an arm: follower_left / follower_right."""
    if arm not in ARMS:
        raise ValueError(f'unknown arm {arm!r}; expected one of {ARMS}')
    return f'follower_{arm}'


def action_joint_names() -> list[str]:
    """The D = 14 column names of actions and proprio: per arm 6 joints then the gripper."""
    return [f'{arm_namespace(arm)}/{joint}' for arm in ARMS for joint in (*ARM_JOINTS, GRIPPER)]


def action_limits() -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound per action dimension, (D,) each; grippers are 0..1."""
    per_arm = [ARM_LIMITS[j] for j in ARM_JOINTS] + [JointLimit(0.0, 1.0)]
    limits = per_arm * len(ARMS)
    return (
        np.array([lim.lower for lim in limits], dtype=np.float64),
        np.array([lim.upper for lim in limits], dtype=np.float64),
    )


def velocity_limits() -> np.ndarray:
    """Speed limit per action dimension, (D,): rad/s for arm joints, 1/s for grippers."""
    per_arm = [ARM_VELOCITY_LIMIT] * len(ARM_JOINTS) + [GRIPPER_VELOCITY_LIMIT]
    return np.array(per_arm * len(ARMS), dtype=np.float64)


def arm_columns(arm: str) -> slice:
    """The 7 columns (6 joints, gripper) of `arm` in an action or proprio vector."""
    index = ARMS.index(arm_namespace(arm).removeprefix('follower_'))
    width = len(ARM_JOINTS) + 1
    return slice(index * width, (index + 1) * width)


# Topic names of the real robot (interbotix_xs_sdk, realsense-ros); the sim publishes the same.
def camera_topic(camera: str) -> str:
    return f'/{camera}/camera/color/image_rect_raw'


def joint_states_topic(arm: str) -> str:
    return f'/{arm_namespace(arm)}/joint_states'


def joint_group_topic(arm: str) -> str:
    return f'/{arm_namespace(arm)}/commands/joint_group'


def joint_single_topic(arm: str) -> str:
    return f'/{arm_namespace(arm)}/commands/joint_single'


def driver_service(arm: str, service: str) -> str:
    """A service of the arm's interbotix_xs_sdk node, e.g. /follower_left/torque_enable."""
    return f'/{arm_namespace(arm)}/{service}'


# The xs_sdk services the executor's bring-up calls (runtime/arm_bringup.py).
DRIVER_SERVICES = ('reboot_motors', 'set_operating_modes', 'set_motor_registers', 'torque_enable')


def joint_positions_topic(arm: str) -> str:
    """The simulation backend's command topic: sensor_msgs/JointState with the 6 arm joints and
    `gripper` (motor angle, rad), i.e. the same units the Interbotix driver is commanded in."""
    return f'/{arm_namespace(arm)}/commands/joint_positions'


ACTION_CHUNK_TOPIC = '/policy/action_chunk'
COMMITTED_CHUNK_TOPIC = '/chunk_executor/committed'  # merge_rule prefix: the chunk being played
INSTRUCTION_TOPIC = '/policy/instruction'
SET_INSTRUCTION_SERVICE = '/set_instruction'

# The task of the current episode, published (latched) by the simulation and recorded with every
# demo: std_msgs/String instruction, std_msgs/String JSON episode metadata (scene, seed,
# instruction, episode index, start time, object start positions) and std_msgs/Bool success.
TASK_INSTRUCTION_TOPIC = '/task/instruction'
TASK_EPISODE_TOPIC = '/task/episode'
TASK_SUCCESS_TOPIC = '/task/success'
# Ground truth of the simulation for evaluation, std_msgs/String JSON at a fixed sim-time rate:
# {"t": s, "grasp": {arm: [x, y, z]}, "objects": {body: [x, y, z]}} (world frame, m).
TASK_STATE_TOPIC = '/task/state'
CLOCK_TOPIC = '/clock'
