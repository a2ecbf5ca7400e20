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
# Poses of each arm (rad, ARM_JOINTS order) from the ALOHA scripts: START_ARM_POSE[:6] of
# Interbotix/aloha aloha/constants.py (the same in the authors' experiments/robot/aloha
# constants.py), where an episode starts; the sleep pose, where the arms rest with torque off.
START_ARM_POSE = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0)
SLEEP_ARM_POSE = (0.0, -1.7, 1.55, 0.12, 0.65, 0.0)
# The executor's limit for the normalised gripper opening (1/s): a full close takes 0.25 s, about
# as fast as a teleoperator closes the leader gripper in the ALOHA demos.
GRIPPER_VELOCITY_LIMIT = 4.0


@dataclass(frozen=True)
class GripperCalibration:
    """How a follower gripper's units map to the policy's normalised opening (0 closed .. 1
    open): the observed finger position (m, joint left_finger) and the commanded motor angle
    (rad, joint gripper) of a closed and an open gripper. Robots differ (robot profiles in
    aloha_bringup/config/robots); the simulation models ALOHA2_GRIPPER."""

    finger_closed: float
    finger_open: float
    motor_closed: float
    motor_open: float

    def __post_init__(self) -> None:
        values = (self.finger_closed, self.finger_open, self.motor_closed, self.motor_open)
        if not all(map(math.isfinite, values)):
            raise ValueError(f'gripper calibration values must be finite, got {values}')
        if self.finger_closed == self.finger_open or self.motor_closed == self.motor_open:
            raise ValueError(f'closed and open must differ, got {values}')

    def with_finger_range(self, closed: float, opened: float) -> GripperCalibration:
        return GripperCalibration(closed, opened, self.motor_closed, self.motor_open)

    def with_motor_range(self, closed: float, opened: float) -> GripperCalibration:
        return GripperCalibration(self.finger_closed, self.finger_open, closed, opened)

    def finger_to_normalized(self, finger: float | np.ndarray) -> float | np.ndarray:
        """Observed finger position (m) -> normalised opening, unclipped."""
        return (finger - self.finger_closed) / (self.finger_open - self.finger_closed)

    def normalized_to_finger(self, opening: float | np.ndarray) -> float | np.ndarray:
        return self.finger_closed + opening * (self.finger_open - self.finger_closed)

    def normalized_to_motor(self, opening: float | np.ndarray) -> float | np.ndarray:
        """Normalised opening -> gripper motor angle command (rad)."""
        return self.motor_closed + opening * (self.motor_open - self.motor_closed)

    def motor_to_normalized(self, motor_angle: float | np.ndarray) -> float | np.ndarray:
        return (motor_angle - self.motor_closed) / (self.motor_open - self.motor_closed)


# Trossen's ROS 2 ALOHA followers (Interbotix/aloha, aloha/constants.py:
# FOLLOWER_GRIPPER_POSITION_CLOSE/OPEN, FOLLOWER_GRIPPER_JOINT_CLOSE/OPEN).
ALOHA2_GRIPPER = GripperCalibration(
    finger_closed=0.0440, finger_open=0.0579, motor_closed=0.6197, motor_open=1.6214
)
FINGER_CLOSED, FINGER_OPEN = ALOHA2_GRIPPER.finger_closed, ALOHA2_GRIPPER.finger_open
GRIPPER_MOTOR_CLOSED, GRIPPER_MOTOR_OPEN = ALOHA2_GRIPPER.motor_closed, ALOHA2_GRIPPER.motor_open
finger_to_normalized = ALOHA2_GRIPPER.finger_to_normalized
normalized_to_finger = ALOHA2_GRIPPER.normalized_to_finger
normalized_to_motor = ALOHA2_GRIPPER.normalized_to_motor
motor_to_normalized = ALOHA2_GRIPPER.motor_to_normalized


@dataclass(frozen=True)
class LeaderGripper:
    """A leader arm's (WidowX 250, teleoperation) gripper joint angle (rad) of a closed and an
    open gripper: a leader's gripper angle is a normalised opening by these."""

    closed: float
    opened: float

    def __post_init__(self) -> None:
        if self.closed == self.opened:
            raise ValueError(f'leader gripper closed and open angles are equal ({self.closed})')

    def opening(self, angle: float | np.ndarray) -> float | np.ndarray:
        return (angle - self.closed) / (self.opened - self.closed)

    def angle(self, opening: float | np.ndarray) -> float | np.ndarray:
        return self.closed + opening * (self.opened - self.closed)


# Interbotix/aloha constants.py: LEADER_GRIPPER_JOINT_CLOSE / OPEN (ALOHA 2 leaders); the
# authors' experiments/robot/aloha/constants.py: MASTER_GRIPPER_JOINT_CLOSE / OPEN (ALOHA 1).
ALOHA2_LEADER = LeaderGripper(closed=-0.0552, opened=0.8298)
ALOHA1_LEADER = LeaderGripper(closed=-0.6842, opened=0.3083)


def leader_joint_states_topic(arm: str) -> str:
    """The leader arm's joint_states (Trossen's namespaces leader_left / leader_right)."""
    if arm not in ARMS:
        raise ValueError(f'unknown arm {arm!r}; expected one of {ARMS}')
    return f'/leader_{arm}/joint_states'


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


# The raw image topic of each camera the model reads, per camera driver and version; a robot
# profile (aloha_bringup config/robots) names one, or lists its own topics.
CAMERA_SETS: dict[str, dict[str, str]] = {
    # realsense-ros 4.55+ publishes ~/color/... under <camera_namespace>/<camera_name>;
    # Trossen's aloha launch starts each camera as node `camera` in namespace cam_*
    # (Interbotix/aloha main).
    'realsense_4_55': {camera: camera_topic(camera) for camera in CAMERAS},
    # realsense-ros 4.54 publishes namespace-relative color/..., so the same launch gives
    # /cam_*/color/... (Interbotix/aloha before ff43bd5).
    'realsense_4_54': {camera: f'/{camera}/color/image_rect_raw' for camera in CAMERAS},
    # Interbotix/aloha 2.0 (config/robot/aloha_stationary.yaml) names the cameras camera_high,
    # camera_wrist_left, camera_wrist_right (realsense-ros 4.55+).
    'aloha_2_0': {
        'cam_high': '/camera_high/camera/color/image_rect_raw',
        'cam_left_wrist': '/camera_wrist_left/camera/color/image_rect_raw',
        'cam_right_wrist': '/camera_wrist_right/camera/color/image_rect_raw',
    },
    # The original ALOHA's USB webcams (tonyzhaozh/aloha launch/4arms_teleop.launch: usb_cam).
    'usb_cam': {camera: f'/usb_{camera}/image_raw' for camera in CAMERAS},
}


# image_transport's names: "raw" is the topic itself, a plugin's stream is <topic>/<plugin>.
IMAGE_TRANSPORTS = ('raw', 'compressed')


def image_topic(base: str, transport: str) -> str:
    """The topic a camera's frames arrive on with `transport`."""
    if transport not in IMAGE_TRANSPORTS:
        raise ValueError(f'image transport {transport!r} is not one of {IMAGE_TRANSPORTS}')
    return base if transport == 'raw' else f'{base.rstrip("/")}/{transport}'


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
DRIVER_SERVICES = (
    'reboot_motors',
    'set_operating_modes',
    'set_motor_registers',
    'get_motor_registers',
    'torque_enable',
)


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
