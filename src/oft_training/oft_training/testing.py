"""Synthetic demos in the real file formats, for tests, benchmarks and smoke checks.

`write_bag` writes a rosbag2 episode (MCAP or sqlite3) with the real message types and topics
of the robot; `write_aloha_hdf5` writes an episode in the layout of ALOHA's record_episodes.py.
Every value is a closed-form function of its message number, so a test can state exactly which
message each sample must come from:

* follower joint_states at `joint_rate_hz`, message i: arm joint j of arm a = `state_value(i,
  a, j)`, finger position from opening `state_opening(i)`;
* commands at `command_rate_hz`, message i: `command_value(i, a, j)`, gripper opening
  `command_opening(i)` (sent as motor angle);
* camera frames at `camera_rate_hz`, frame i of camera c: uniform colour `frame_colour(i, c)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from oft_policy_node import robot
from oft_training.data import topics
from oft_training.data.rosbag_episode import make_typestore
from oft_training.data.sync import NS_PER_S


def state_value(i: int | np.ndarray, arm: int, joint: int) -> float | np.ndarray:
    return 0.001 * i + 0.1 * joint + 0.5 * arm


def state_opening(i: int | np.ndarray) -> float | np.ndarray:
    return (np.asarray(i) % 50) / 49.0


def command_value(i: int | np.ndarray, arm: int, joint: int) -> float | np.ndarray:
    return -0.002 * i + 0.05 * joint - 0.3 * arm


def command_opening(i: int | np.ndarray) -> float | np.ndarray:
    return (np.asarray(i) * 3 % 40) / 39.0


def frame_colour(i: int, camera: int) -> tuple[int, int, int]:
    """RGB of frame i of camera number `camera`; differs per channel to catch channel swaps."""
    return (i % 256, 255 - i % 256, 40 * camera)


def _row(i: int, value: object, opening: object) -> np.ndarray:
    return np.array(
        [
            v
            for a in range(len(robot.ARMS))
            for v in [*(value(i, a, j) for j in range(len(robot.ARM_JOINTS))), opening(i)]
        ]
    )


def state_row(i: int) -> np.ndarray:
    """Expected proprio (14,) from follower message i."""
    return _row(i, state_value, state_opening)


def command_row(i: int) -> np.ndarray:
    """Expected action (14,) from command message i."""
    return _row(i, command_value, command_opening)


@dataclass(frozen=True)
class BagSpec:
    seconds: float = 2.0
    start_ns: int = 1_000 * NS_PER_S
    joint_rate_hz: float = 50.0
    command_rate_hz: float = 25.0
    camera_rate_hz: float = 30.0
    image_shape: tuple[int, int] = (48, 64)  # (H, W)
    encoding: str = 'rgb8'
    # 'raw' (sensor_msgs/Image) or 'jpeg' / 'png': CompressedImage on <topic>/compressed, the
    # format field as image_transport's compressed plugin writes it
    image_format: str = 'raw'
    instruction: str = 'put green pepper into pot'
    instruction_in: tuple[str, ...] = ('metadata',)  # 'metadata' and/or 'topic'
    action_source: str = 'sim'  # 'sim', 'interbotix' or 'leader' (the leader arms' states)
    camera_set: str = 'realsense_4_55'  # the topics, one of robot.CAMERA_SETS
    omit_topics: tuple[str, ...] = ()
    camera_rates_hz: dict[str, float] = field(default_factory=dict)  # per-camera rate override
    camera_gap: tuple[str, float, float] | None = None  # (camera, from s, to s) not recorded
    stamp_zero: bool = False  # header stamps left at 0 (an unstamping publisher)
    custom_data: dict[str, str] = field(default_factory=dict)  # more metadata.yaml custom_data


def _stamps(spec: BagSpec, rate_hz: float) -> np.ndarray:
    count = int(spec.seconds * rate_hz + 1e-9) + 1
    return spec.start_ns + (np.arange(count) * round(NS_PER_S / rate_hz)).astype(np.int64)


@dataclass(frozen=True)
class DemoMessage:
    """One message of a synthetic demo, independent of the ROS binding that sends or stores it:
    `fields` are the message fields except `header`, whose stamp is `stamp_ns` (None: the type
    has no header)."""

    receive_ns: int
    topic: str
    msgtype: str
    stamp_ns: int | None
    fields: dict


def demo_messages(spec: BagSpec = BagSpec()) -> list[DemoMessage]:
    """The episode's messages in receive order (see the module docstring for the values)."""
    messages: list[DemoMessage] = []

    def add(ns: int, topic: str, msgtype: str, stamped: bool, **fields: object) -> None:
        stamp = (0 if spec.stamp_zero else int(ns)) if stamped else None
        if topic not in spec.omit_topics:
            messages.append(DemoMessage(int(ns), topic, msgtype, stamp, fields))

    def joint_state(names: list[str], positions: list[float]) -> dict:
        return {
            'name': names,
            'position': np.array(positions, dtype=np.float64),
            'velocity': np.zeros(0),
            'effort': np.zeros(0),
        }

    for i, ns in enumerate(_stamps(spec, spec.joint_rate_hz)):
        for a, arm in enumerate(robot.ARMS):
            finger = float(robot.normalized_to_finger(state_opening(i)))
            arm_values = [state_value(i, a, j) for j in range(6)]
            add(
                ns,
                robot.joint_states_topic(arm),
                topics.JOINT_STATE,
                True,
                **joint_state(
                    list(robot.INTERBOTIX_JOINT_STATE_ORDER), [*arm_values, 0.0, finger, -finger]
                ),
            )
    for i, ns in enumerate(_stamps(spec, spec.command_rate_hz)):
        for a, arm in enumerate(robot.ARMS):
            arm_values = [command_value(i, a, j) for j in range(6)]
            motor = float(robot.normalized_to_motor(command_opening(i)))
            if spec.action_source == 'leader':
                closed, opened = topics.LEADER_GRIPPER_CLOSED, topics.LEADER_GRIPPER_OPEN
                angle = closed + command_opening(i) * (opened - closed)
                add(
                    ns,
                    robot.leader_joint_states_topic(arm),
                    topics.JOINT_STATE,
                    True,
                    **joint_state(
                        list(robot.INTERBOTIX_JOINT_STATE_ORDER), [*arm_values, angle, 0.0, 0.0]
                    ),
                )
            elif spec.action_source == 'sim':
                add(
                    ns,
                    robot.joint_positions_topic(arm),
                    topics.JOINT_STATE,
                    True,
                    **joint_state([*robot.ARM_JOINTS, robot.GRIPPER], [*arm_values, motor]),
                )
            else:
                add(
                    ns,
                    robot.joint_group_topic(arm),
                    topics.JOINT_GROUP_COMMAND,
                    False,
                    name='arm',
                    cmd=np.array(arm_values, dtype=np.float32),
                )
                add(
                    ns,
                    robot.joint_single_topic(arm),
                    topics.JOINT_SINGLE_COMMAND,
                    False,
                    name='gripper',
                    cmd=motor,
                )
    h, w = spec.image_shape
    for c, cam in enumerate(robot.CAMERAS):
        for i, ns in enumerate(_stamps(spec, spec.camera_rates_hz.get(cam, spec.camera_rate_hz))):
            if (
                spec.camera_gap
                and spec.camera_gap[0] == cam
                and spec.camera_gap[1] <= (ns - spec.start_ns) / NS_PER_S < spec.camera_gap[2]
            ):
                continue
            pixels = np.empty((h, w, 3), dtype=np.uint8)
            pixels[:] = frame_colour(i, c)
            raw_topic = robot.CAMERA_SETS[spec.camera_set][cam]
            if spec.image_format != 'raw':
                topic, msgtype, stamped, fields = _compressed_frame(
                    raw_topic, pixels, spec.image_format
                )
                add(ns, topic, msgtype, stamped, **fields)
                continue
            if spec.encoding == 'bgr8':
                pixels = pixels[..., ::-1]
            add(
                ns,
                raw_topic,
                topics.IMAGE,
                True,
                height=h,
                width=w,
                encoding=spec.encoding,
                is_bigendian=0,
                step=w * 3,
                data=np.ascontiguousarray(pixels).reshape(-1),
            )
    if 'topic' in spec.instruction_in:
        add(spec.start_ns, robot.INSTRUCTION_TOPIC, topics.STRING, False, data=spec.instruction)
    messages.sort(key=lambda m: m.receive_ns)
    return messages


def _compressed_frame(raw_topic: str, rgb: np.ndarray, kind: str) -> tuple:
    """(topic, type, stamped, fields) of an RGB frame as compressed_image_transport sends it:
    encoded in BGR order, format '<encoding>; <kind> compressed bgr8'."""
    import cv2

    ok, data = cv2.imencode('.jpg' if kind == 'jpeg' else '.png', rgb[..., ::-1])
    assert ok
    return (
        robot.image_topic(raw_topic, 'compressed'),
        topics.COMPRESSED_IMAGE,
        True,
        {'format': f'rgb8; {kind} compressed bgr8', 'data': data.reshape(-1)},
    )


def write_bag(
    path: Path, spec: BagSpec = BagSpec(), storage: str = 'mcap', compressed: bool = False
) -> Path:
    """Write one synthetic episode as a rosbag2 folder at `path`; returns `path`.
    `compressed`: zstd-compressed storage chunks (`ros2 bag record --compression-mode
    storage`)."""
    store = make_typestore()
    t = store.types
    plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[storage]
    writer = Writer(path, version=9, storage_plugin=plugin)
    if compressed:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        if 'metadata' in spec.instruction_in:
            writer.set_custom_data('instruction', spec.instruction)
        for key, value in spec.custom_data.items():
            writer.set_custom_data(key, value)
        connections = {}
        for m in demo_messages(spec):
            if m.topic not in connections:
                connections[m.topic] = writer.add_connection(m.topic, m.msgtype, typestore=store)
            fields = dict(m.fields)
            if m.stamp_ns is not None:
                fields['header'] = t['std_msgs/msg/Header'](
                    stamp=t['builtin_interfaces/msg/Time'](
                        sec=m.stamp_ns // NS_PER_S, nanosec=m.stamp_ns % NS_PER_S
                    ),
                    frame_id='',
                )
            writer.write(
                connections[m.topic],
                m.receive_ns,
                store.serialize_cdr(t[m.msgtype](**fields), m.msgtype),
            )
    return path


ALOHA_HDF5_CAMERAS = ('cam_high', 'cam_low', 'cam_left_wrist', 'cam_right_wrist')
# Interbotix/aloha 2.0's record_episodes.py: the datasets named after aloha_stationary.yaml's
# camera_instances, /compress_len rows in that list's order (high, low, wrist_right, wrist_left).
ALOHA_2_0_HDF5_NAMES = {
    'cam_high': 'camera_high',
    'cam_low': 'camera_low',
    'cam_right_wrist': 'camera_wrist_right',
    'cam_left_wrist': 'camera_wrist_left',
}


def write_aloha_hdf5(
    path: Path,
    steps: int = 100,
    compress: bool = True,
    image_shape: tuple[int, int] = (48, 64),
    instruction: str | None = None,
    names: dict[str, str] | None = None,
) -> Path:
    """An ALOHA record_episodes.py episode: qpos row i = `state_row(i)`, action row i =
    `command_row(i)`, frame i of camera c = `frame_colour(i, c)` (4 cameras incl. cam_low).
    `names`: the datasets' names, in the order they are recorded (ALOHA_2_0_HDF5_NAMES);
    default ALOHA's."""
    h, w = image_shape
    names = names or {cam: cam for cam in ALOHA_HDF5_CAMERAS}
    frames = {names[cam]: np.empty((steps, h, w, 3), dtype=np.uint8) for cam in names}
    for cam in names:
        for i in range(steps):
            frames[names[cam]][i] = frame_colour(i, ALOHA_HDF5_CAMERAS.index(cam))
    with h5py.File(path, 'w') as root:
        root.attrs['sim'] = False
        root.attrs['compress'] = compress
        if instruction is not None:
            root.attrs['instruction'] = instruction
        obs = root.create_group('observations')
        images = obs.create_group('images')
        obs.create_dataset('qpos', data=np.stack([state_row(i) for i in range(steps)]))
        obs.create_dataset('qvel', data=np.zeros((steps, 14)))
        root.create_dataset('action', data=np.stack([command_row(i) for i in range(steps)]))
        if not compress:
            for cam, data in frames.items():
                images.create_dataset(cam, data=data)
            return path
        encoded = {
            cam: [cv2.imencode('.jpg', f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1] for f in data]
            for cam, data in frames.items()
        }
        padded = max(len(b) for enc in encoded.values() for b in enc)
        lengths = np.zeros((len(frames), steps))
        for c, cam in enumerate(frames):
            table = np.zeros((steps, padded), dtype=np.uint8)
            for i, jpeg in enumerate(encoded[cam]):
                table[i, : len(jpeg)] = jpeg
                lengths[c, i] = len(jpeg)
            images.create_dataset(cam, data=table, chunks=(1, padded))
        root.create_dataset('compress_len', data=lengths)
    return path
