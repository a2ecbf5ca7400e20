"""Demo recording to rosbag2 (MCAP) with `rosbags`: the topic set and a writer that takes the
serialised (CDR) messages as they came off DDS, so nothing is re-encoded or lost in conversion.

ROS-free: the recorder node and `record_demos` feed it raw messages.
"""

from __future__ import annotations

import struct
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from oft_policy_node import robot
from oft_policy_node.child_process import stop_deferred
from oft_training.data.topics import INTERBOTIX_MSG_DEFINITIONS, JOINT_STATE, action_channels

IMAGE_TYPES = {'raw': 'sensor_msgs/msg/Image', 'compressed': 'sensor_msgs/msg/CompressedImage'}


def _observation_topics(camera_topics: list[str], image_transport: str) -> dict[str, str]:
    """The cameras as the graph sends them (raw Image topics, or <topic>/compressed
    CompressedImage: the converter reads both) and both arms' joint states."""
    return {
        **{
            robot.image_topic(topic, image_transport): IMAGE_TYPES[image_transport]
            for topic in camera_topics
        },
        **{robot.joint_states_topic(arm): JOINT_STATE for arm in robot.ARMS},
    }


def demo_topics(
    image_transport: str = 'raw', camera_topics: list[str] | None = None
) -> dict[str, str]:
    """The demo topic set: what a training episode needs."""
    cameras = camera_topics or [robot.camera_topic(cam) for cam in robot.CAMERAS]
    return {
        **_observation_topics(cameras, image_transport),
        **{robot.joint_positions_topic(arm): JOINT_STATE for arm in robot.ARMS},
        robot.TASK_INSTRUCTION_TOPIC: 'std_msgs/msg/String',
        robot.TASK_EPISODE_TOPIC: 'std_msgs/msg/String',
        robot.TASK_SUCCESS_TOPIC: 'std_msgs/msg/Bool',
    }


def graph_topics(camera_topics: list[str], image_transport: str, backend: str) -> dict[str, str]:
    """What `record:=true` records of the running graph: the cameras as the graph sends them,
    the arms' joint states, the chunks, the commands of the executor's backend, the active
    instruction and the nodes' /diagnostics (the executor's state)."""
    # the backends' commands, as the converter's action sources read them
    sources = {'joint_positions': 'sim', 'interbotix': 'interbotix'}
    if backend not in sources:
        raise ValueError(f'backend {backend!r} is not one of {sorted(sources)}')
    return {
        **_observation_topics(camera_topics, image_transport),
        **{c.topic: c.msgtype for c in action_channels(sources[backend])},
        robot.ACTION_CHUNK_TOPIC: 'oft_msgs/msg/ActionChunk',
        robot.INSTRUCTION_TOPIC: 'std_msgs/msg/String',
        '/diagnostics': 'diagnostic_msgs/msg/DiagnosticArray',
    }


# What record_demos.launch.py and the simulation record. Latched topics are recorded with
# transient-local durability (their last value at start).
DEMO_TOPICS = demo_topics()
LATCHED_TOPICS = (robot.TASK_INSTRUCTION_TOPIC, robot.TASK_EPISODE_TOPIC, robot.INSTRUCTION_TOPIC)
STAMPED_TYPES = (*IMAGE_TYPES.values(), 'sensor_msgs/msg/JointState')
# rosbag2 metadata version 9 is what Jazzy/Kilted's `ros2 bag` write; Humble reads it too
# when written as MCAP (its mcap plugin reads the schema from the file).
BAG_VERSION = 9


def register_project_types(typestore: object, msgtypes: set[str]) -> None:
    """Add the message types rosbags does not ship: this project's oft_msgs (their .msg files,
    installed or in the source tree) and Interbotix's commands (oft_training's verbatim copy)."""
    for msgtype in sorted(msgtypes - set(typestore.fielddefs)):
        package, _, name = msgtype.split('/')
        if msgtype in INTERBOTIX_MSG_DEFINITIONS:
            text = INTERBOTIX_MSG_DEFINITIONS[msgtype]
        elif package == 'oft_msgs':
            text = (_oft_msgs_dir() / f'{name}.msg').read_text()
        else:
            continue  # reported as unknown by the caller
        typestore.register(get_types_from_msg(text, msgtype))


def _oft_msgs_dir() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory('oft_msgs')) / 'msg'
    except (ImportError, LookupError):
        return Path(__file__).resolve().parents[2] / 'oft_msgs' / 'msg'


def header_stamp_ns(cdr: bytes) -> int:
    """The header stamp (ns) of a serialised message that starts with std_msgs/Header: after
    the 4-byte CDR encapsulation, int32 sec and uint32 nanosec."""
    little = cdr[1] == 1  # encapsulation kind: CDR_LE = 0x0001
    sec, nanosec = struct.unpack_from('<iI' if little else '>iI', cdr, 4)
    return sec * 1_000_000_000 + nanosec


class BagWriter:
    """One rosbag2 MCAP bag of `topics` (name -> ROS 2 type); write raw CDR, close once."""

    def __init__(
        self,
        path: str | Path,
        topics: dict[str, str] = DEMO_TOPICS,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """`metadata` goes into metadata.yaml's custom_data (`ros2 bag info` shows it); the
        training converter reads the episode's `instruction` from there."""
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(
                f'bag {self.path} already exists; choose a new path or remove it'
            )
        typestore = get_typestore(Stores.ROS2_KILTED)
        register_project_types(typestore, set(topics.values()))
        unknown = [t for t in topics.values() if t not in typestore.fielddefs]
        if unknown:
            raise ValueError(f'message types {unknown} are not in the ROS 2 type store')
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        for key, value in (metadata or {}).items():
            self._writer.set_custom_data(key, str(value))
        self._writer.open()
        self._connections = {
            topic: self._writer.add_connection(topic, msgtype, typestore=typestore)
            for topic, msgtype in topics.items()
        }
        self.counts = dict.fromkeys(topics, 0)
        self.closed = False

    def write(self, topic: str, timestamp_ns: int, cdr: bytes) -> None:
        """Write one message whole: a stop signal that lands inside is raised after it."""
        if self.closed:
            raise RuntimeError(f'bag {self.path} is closed')
        with stop_deferred():
            self._writer.write(self._connections[topic], timestamp_ns, cdr)
            self.counts[topic] += 1

    def set_metadata(self, key: str, value: str) -> None:
        """Add to custom_data before `close` writes it (what is known only at the end)."""
        if self.closed:
            raise RuntimeError(f'bag {self.path} is closed')
        self._writer.set_custom_data(key, value)

    def close(self) -> dict[str, int]:
        """Flush and write metadata.yaml (what makes the bag readable); idempotent, and a
        second Ctrl-C does not cut it short."""
        if not self.closed:
            self.closed = True
            with stop_deferred():
                self._writer.close()
        return dict(self.counts)
