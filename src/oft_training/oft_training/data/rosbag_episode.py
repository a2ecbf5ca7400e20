"""One rosbag2 recording (MCAP or sqlite3) -> one episode on the control grid.

Two passes over the bag keep memory flat whatever the episode length: the first decodes the
joint and command topics and only the stamps of the camera topics, which fixes the grid and
which frame each tick uses; the second decodes, resizes and stores just those frames. MCAP
files are read in place (`mcap_file`): a frame's pixels go from the page cache straight into
the resize, and the first pass reads no pixels at all.

Time base: `header.stamp` for stamped messages (sensor time; sim time in simulation, where the
recorder's receive time runs at wall speed), the bag's receive time for message types without a
header (Interbotix commands). `time_source='receive'` uses receive time for everything.

A bag may mark where its training starts (custom_data TRAIN_FROM_KEY, ns on the header clock):
a recovery demo (`record_demos --miss-first-grasp`) trains from its retry on, not on the miss
it made on purpose.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from oft_policy_node import robot
from oft_policy_node.runtime.sensor_decoding import decode_compressed_image
from oft_training.data import topics
from oft_training.data.mcap_file import McapFile
from oft_training.data.sync import NS_PER_S, Stream, control_grid, latest_at
from oft_training.data.training_set import EpisodeError, TrainingSetWriter

TIME_SOURCES = ('header', 'receive')
TRAIN_FROM_KEY = 'train_from_ns'


@dataclass(frozen=True)
class BagOptions:
    """How a bag becomes an episode; every field is a `convert` option."""

    action_source: str = 'auto'
    leader_gripper: tuple[float, float] = (
        topics.LEADER_GRIPPER_CLOSED,
        topics.LEADER_GRIPPER_OPEN,
    )
    cameras: tuple[str, ...] = robot.CAMERAS
    rate_hz: float = robot.CONTROL_RATE_HZ
    joint_tolerance_s: float = 0.1  # max age of a joint state / command at a tick
    image_tolerance_s: float = 0.1  # max age of a camera frame at a tick
    camera_sync_s: float = 0.05  # max stamp spread of the three frames used at one tick
    time_source: str = 'header'
    instruction: str | None = None  # overrides metadata and topic
    camera_topics: dict[str, str] = field(default_factory=dict)  # camera -> topic override

    def __post_init__(self) -> None:
        if self.time_source not in TIME_SOURCES:
            raise ValueError(f'time_source {self.time_source!r}: choose one of {TIME_SOURCES}')
        for name in ('rate_hz', 'joint_tolerance_s', 'image_tolerance_s', 'camera_sync_s'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')

    def camera_topic(self, camera: str) -> str:
        return self.camera_topics.get(camera, robot.camera_topic(camera))


def make_typestore() -> object:
    """ROS 2 message types (identical for the types used here from Humble on) + Interbotix."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    for name, text in topics.INTERBOTIX_MSG_DEFINITIONS.items():
        store.register(get_types_from_msg(text, name))
    return store


def is_bag(path: Path) -> bool:
    """A rosbag2 folder (metadata.yaml) or a bare .mcap / .db3 storage file."""
    return (path.is_dir() and (path / 'metadata.yaml').is_file()) or path.suffix in (
        '.mcap',
        '.db3',
    )


@dataclass
class BagEpisodeReport:
    name: str
    ticks: int
    duration_s: float
    instruction: str
    warnings: list[str]
    actions_from: str = ''


def convert_bag(
    path: Path,
    writer: TrainingSetWriter,
    options: BagOptions,
    resize: Callable[[np.ndarray], np.ndarray],
    name: str | None = None,
) -> BagEpisodeReport:
    """Read the bag at `path` into `writer` as one episode. Raises EpisodeError (naming the
    episode) for anything that would give a wrong sample."""
    name = name or path.stem
    store = make_typestore()
    proprio = topics.proprio_channels()
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unreadable / corrupt bags
        raise EpisodeError(f'{name}: cannot open bag {path}: {exc}') from exc
    recorded = {topic for topic, info in reader.topics.items() if info.msgcount}
    try:
        source, actions_from = topics.resolve_action_source(options.action_source, recorded)
    except ValueError as exc:
        reader.close()
        raise EpisodeError(f'{name}: {exc}') from exc
    actions = topics.action_channels(source, options.leader_gripper)
    messages = None
    try:
        messages = BagMessages(reader, store)
        report = _convert_open_bag(
            reader, messages, store, name, writer, options, resize, proprio, actions
        )
        return replace(report, actions_from=actions_from)
    except EpisodeError:
        raise
    except Exception as exc:  # truncated chunks, undecodable messages: name the episode
        raise EpisodeError(
            f'{name}: bag {path} is unreadable ({type(exc).__name__}: {exc}); '
            'is it truncated or corrupt?'
        ) from exc
    finally:
        if messages is not None:
            messages.close()
        reader.close()


class BagMessages:
    """The messages of an open bag as (topic, msgtype, receive_ns, raw CDR), in storage order:
    read in place from MCAP files, through rosbags for sqlite3."""

    def __init__(self, reader: Reader, store: object) -> None:
        self._reader, self.store = reader, store
        # A bag folder's storage holds one storage file reader per split; a bare file is one.
        storages = getattr(reader.storage, 'storages', [reader.storage])
        in_place = bool(storages) and all(isinstance(s, McapReader) for s in storages)
        self._files = [McapFile(s.path) for s in storages] if in_place else None

    def read(self, wanted: set[str]) -> Iterator[tuple[str, str, int, bytes | memoryview]]:
        if self._files is None:
            connections = [c for c in self._reader.connections if c.topic in wanted]
            for connection, receive_ns, raw in self._reader.messages(connections):
                yield connection.topic, connection.msgtype, receive_ns, raw
            return
        for file in self._files:
            ids = [i for i, channel in file.channels.items() if channel.topic in wanted]
            for i in np.flatnonzero(np.isin(file.channel_ids, ids)):
                channel = file.channels[int(file.channel_ids[i])]
                yield channel.topic, channel.msgtype, int(file.log_times[i]), file.data(int(i))

    def close(self) -> None:
        for file in self._files or ():
            file.close()


def camera_streams(options: BagOptions, available: dict) -> dict[str, tuple[str, str]]:
    """topic -> (camera, message type) of each camera in a bag: its raw sensor_msgs/Image
    topic, or else its image_transport <topic>/compressed (JPEG/PNG CompressedImage); the raw
    name where neither has messages (reported as missing). The topics: --camera-topic where
    given, else the first of robot.CAMERA_SETS the bag has every camera of."""

    def has(topic: str) -> bool:
        return topic in available and available[topic].msgcount > 0

    def stream(camera: str, raw: str) -> tuple[str, tuple[str, str]] | None:
        compressed = robot.image_topic(raw, 'compressed')
        if has(raw):
            return raw, (camera, topics.IMAGE)
        return (compressed, (camera, topics.COMPRESSED_IMAGE)) if has(compressed) else None

    candidates = [{camera: options.camera_topic(camera) for camera in options.cameras}]
    if not options.camera_topics:
        candidates += [
            {camera: topics_of[camera] for camera in options.cameras}
            for topics_of in robot.CAMERA_SETS.values()
        ]
    for candidate in candidates:
        found = [stream(camera, topic) for camera, topic in candidate.items()]
        if all(found):
            return dict(found)
    return {topic: (camera, topics.IMAGE) for camera, topic in candidates[0].items()}


def first_frame_size(path: Path, options: BagOptions) -> tuple[int, int]:
    """(H, W) of the first frame of the first camera: the size a bag was recorded at."""
    store = make_typestore()
    try:
        with Reader(path) as reader:
            topic, (_, msgtype) = next(iter(camera_streams(options, reader.topics).items()))
            messages = BagMessages(reader, store)
            try:
                for _, _, _, raw in messages.read({topic}):
                    return frame_rgb(raw, store, msgtype, topic).shape[:2]
            finally:
                messages.close()
    except Exception as exc:  # rosbags raises several types for unreadable bags
        raise ValueError(f'cannot read the first camera frame of {path}: {exc}') from exc
    raise ValueError(f'{path} has no message on {topic}')


def frame_rgb(raw: bytes | memoryview, store: object, msgtype: str, where: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a recorded sensor_msgs/Image or CompressedImage."""
    if msgtype == topics.IMAGE:
        return image_to_rgb(_image(raw, store), where)
    msg = store.deserialize_cdr(bytes(raw), msgtype)
    try:
        return decode_compressed_image(msg.format, bytes(msg.data))
    except ValueError as exc:
        raise EpisodeError(f'{where}: {exc}') from exc


def _convert_open_bag(
    reader: Reader,
    messages: BagMessages,
    store: object,
    name: str,
    writer: TrainingSetWriter,
    options: BagOptions,
    resize: Callable[[np.ndarray], np.ndarray],
    proprio: list[topics.Channel],
    actions: list[topics.Channel],
) -> BagEpisodeReport:
    available = reader.topics
    streams_of_cameras = camera_streams(options, available)
    camera_topics = {topic: camera for topic, (camera, _) in streams_of_cameras.items()}
    wanted = {c.topic: c.msgtype for c in proprio + actions}
    wanted.update({topic: msgtype for topic, (_, msgtype) in streams_of_cameras.items()})
    missing = sorted(t for t in wanted if t not in available or available[t].msgcount == 0)
    if missing:
        hint = (
            f' (action source {options.action_source!r}: pick another with --action-source)'
            if any(t in {c.topic for c in actions} for t in missing)
            else ''
        )
        raise EpisodeError(
            f'{name}: no messages on {missing}{hint}; the bag has {sorted(available)}'
        )
    for topic, msgtype in wanted.items():
        if available[topic].msgtype != msgtype:
            raise EpisodeError(
                f'{name}: {topic} has type {available[topic].msgtype}, expected {msgtype}'
            )

    # Pass 1: joint/command values and camera stamps.
    channels = {c.topic: c for c in proprio + actions}
    values: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
    camera_stamps: dict[str, list[int]] = defaultdict(list)
    instructions: list[str] = []
    for topic, msgtype, receive_ns, raw in messages.read({*wanted, *topics.INSTRUCTION_TOPICS}):
        if topic in camera_topics:  # only the stamp: no pixels are read
            header = _header_only(raw, store, msgtype)
            stamp = _stamp(header, receive_ns, options.time_source, name, topic)
            camera_stamps[topic].append(stamp)
            continue
        msg = store.deserialize_cdr(bytes(raw), msgtype)
        if topic in topics.INSTRUCTION_TOPICS:
            instructions.append(msg.data)
            continue
        stamp = _stamp(msg, receive_ns, options.time_source, name, topic)
        try:
            decoded = channels[topic].decode(msg)
        except topics.ChannelError as exc:
            raise EpisodeError(f'{name}: {exc}') from exc
        if decoded is not None:
            values[topic][0].append(stamp)
            values[topic][1].append(decoded)

    streams = {
        topic: Stream.from_unsorted(topic, *values[topic])
        for topic in channels
        if values[topic][0]
    }
    silent = sorted(set(channels) - set(streams))
    if silent:
        raise EpisodeError(
            f'{name}: no usable command on {silent} (e.g. Interbotix commands to '
            'another group or joint)'
        )
    # Camera streams carry their message ordinal as value: pass 2 finds frames by it.
    cams = {
        topic: Stream.from_unsorted(topic, stamps, np.arange(len(stamps)))
        for topic, stamps in camera_stamps.items()
    }
    ticks = control_grid([*streams.values(), *cams.values()], options.rate_hz)  # (T,)
    train_from = _train_from_ns(name, reader, options)
    if train_from is not None:
        ticks = ticks[ticks >= train_from]
        if not len(ticks):
            raise EpisodeError(f'{name}: no control tick after its {TRAIN_FROM_KEY} mark')

    problems = []
    rows = {
        'proprio': np.full((len(ticks), robot.ACTION_DIM), np.nan),
        'actions': np.full((len(ticks), robot.ACTION_DIM), np.nan),
    }
    for what, group in (('proprio', proprio), ('actions', actions)):
        for channel in group:
            stream = streams[channel.topic]
            index, gaps = latest_at(stream, ticks, options.joint_tolerance_s)
            problems += gaps
            rows[what][:, list(channel.dims)] = stream.values[np.maximum(index, 0)]
    frame_of: dict[str, np.ndarray] = {}  # topic -> (T,) message ordinal used at each tick
    used_stamps = []
    for topic, stream in cams.items():
        index, gaps = latest_at(stream, ticks, options.image_tolerance_s)
        problems += gaps
        frame_of[topic] = stream.values[np.maximum(index, 0)]
        used_stamps.append(stream.stamps[np.maximum(index, 0)])
    if problems:
        raise EpisodeError(f'{name}: ' + '; '.join(map(str, problems)))
    spread_s = (np.max(used_stamps, axis=0) - np.min(used_stamps, axis=0)) / NS_PER_S  # (T,)
    if len(ticks) and spread_s.max() > options.camera_sync_s:
        bad = np.flatnonzero(spread_s > options.camera_sync_s)
        raise EpisodeError(
            f'{name}: cameras out of sync at {len(bad)} tick(s) from tick '
            f'{bad[0]}: frames up to {spread_s.max() * 1e3:.0f} ms apart '
            f'(allowed {options.camera_sync_s * 1e3:.0f} ms, --camera-sync)'
        )

    instruction, warnings = _instruction(name, reader, instructions, options)
    source = f'rosbag2:{reader.path}'
    with writer.episode(name, len(ticks), instruction, source) as sink:
        sink.proprio[:] = rows['proprio']
        sink.actions[:] = rows['actions']
        # Pass 2: decode only the frames some tick uses.
        ticks_of = {topic: _ticks_by_frame(frame_of[topic]) for topic in cams}
        ordinal: dict[str, int] = defaultdict(int)
        for topic, msgtype, _, raw in messages.read(set(camera_topics)):
            number = ordinal[topic]
            ordinal[topic] += 1
            use = ticks_of[topic].get(number)
            if use is None:
                continue
            frame = resize(frame_rgb(raw, store, msgtype, f'{name}: {topic}'))
            sink.put_image(camera_topics[topic], use, frame)
    duration_s = float(ticks[-1] - ticks[0]) / NS_PER_S if len(ticks) else 0.0
    return BagEpisodeReport(name, len(ticks), duration_s, instruction, warnings)


def _train_from_ns(name: str, reader: Reader, options: BagOptions) -> int | None:
    """The bag's mark (custom_data TRAIN_FROM_KEY, ns on the header clock) before which its
    ticks do not train: a recovery demo's deliberate miss."""
    mark = (reader.storage.metadata.custom or {}).get(TRAIN_FROM_KEY)
    if mark is None:
        return None
    if options.time_source == 'receive':
        raise EpisodeError(
            f'{name}: its {TRAIN_FROM_KEY} mark is on the header clock; '
            'convert it with --time-source header'
        )
    try:
        return int(mark)
    except ValueError:
        raise EpisodeError(f'{name}: {TRAIN_FROM_KEY} {mark!r} is not an integer') from None


def _stamp(msg: object, receive_ns: int, time_source: str, name: str, topic: str) -> int:
    header = getattr(msg, 'header', None)
    if time_source == 'receive' or header is None:
        return receive_ns
    stamp = header.stamp.sec * NS_PER_S + header.stamp.nanosec
    if stamp == 0:
        raise EpisodeError(
            f'{name}: {topic} has unstamped messages (header.stamp = 0); '
            'convert with --time-source receive'
        )
    return stamp


_CDR_LITTLE_ENDIAN = 1  # second byte of the CDR encapsulation header (0: big endian)
_STAMP = struct.Struct('<iI')  # builtin_interfaces/Time: sec int32, nanosec uint32
_U32 = struct.Struct('<I')


def _header_only(raw: bytes | memoryview, store: object, msgtype: str) -> object:
    """A stamped message with only its header read: the stamp is its first field, right after
    the 4-byte CDR encapsulation header, so no pixels are touched."""
    if raw[1] != _CDR_LITTLE_ENDIAN:
        return store.deserialize_cdr(bytes(raw), msgtype)
    sec, nanosec = _STAMP.unpack_from(raw, 4)
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec)))


def _image(raw: bytes | memoryview, store: object) -> object:
    """sensor_msgs/msg/Image from CDR, its `data` a view of `raw` (no copy of the pixels).

    Little-endian CDR (what every ROS 2 rmw writes on x86 and ARM): header (stamp, frame_id),
    height, width, encoding, is_bigendian, step, data; strings and sequences are a uint32 count
    first, and every uint32 is aligned to 4 bytes counted from the end of the 4-byte
    encapsulation header."""
    if raw[1] != _CDR_LITTLE_ENDIAN:
        return store.deserialize_cdr(bytes(raw), topics.IMAGE)

    def aligned(pos: int) -> int:
        return 4 + (pos - 4 + 3) // 4 * 4

    pos = 4 + _STAMP.size
    pos += 4 + _U32.unpack_from(raw, pos)[0]  # frame_id
    pos = aligned(pos)
    height, width = struct.unpack_from('<II', raw, pos)
    (length,) = _U32.unpack_from(raw, pos + 8)
    encoding = bytes(raw[pos + 12 : pos + 12 + length]).rstrip(b'\0').decode()
    pos = aligned(pos + 12 + length + 1)  # + is_bigendian
    step, count = struct.unpack_from('<II', raw, pos)
    data = np.frombuffer(raw, np.uint8, count, pos + 8)
    return SimpleNamespace(height=height, width=width, encoding=encoding, step=step, data=data)


def _ticks_by_frame(frames: np.ndarray) -> dict[int, np.ndarray]:
    """Message ordinal -> the ticks (indices) that use it."""
    order = np.argsort(frames, kind='stable')
    unique, starts = np.unique(frames[order], return_index=True)
    return {int(f): t for f, t in zip(unique, np.split(order, starts[1:]), strict=True)}


def _instruction(
    name: str, reader: Reader, on_topic: list[str], options: BagOptions
) -> tuple[str, list[str]]:
    """Priority: --instruction, the bag's metadata (custom_data 'instruction'), the topic."""
    warnings = []
    custom = reader.storage.metadata.custom or {}
    from_meta = (custom.get('instruction') or '').strip()
    distinct = list(dict.fromkeys(s.strip() for s in on_topic if s.strip()))
    if len(distinct) > 1:
        raise EpisodeError(
            f'{name}: the instruction changed during the episode ({distinct}); '
            'split the recording per instruction'
        )
    from_topic = distinct[0] if distinct else ''
    if options.instruction:
        return options.instruction, warnings
    if from_meta and from_topic and from_meta != from_topic:
        warnings.append(
            f"{name}: metadata instruction {from_meta!r} differs from the topic's "
            f'{from_topic!r}; using the metadata'
        )
    instruction = from_meta or from_topic
    if not instruction:
        raise EpisodeError(
            f'{name}: no instruction in the bag metadata (custom_data '
            f'"instruction") nor on {" or ".join(topics.INSTRUCTION_TOPICS)}; '
            'pass --instruction'
        )
    return instruction, warnings


def image_to_rgb(msg: object, where: str) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB."""
    channels = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
    if msg.encoding not in channels:
        raise EpisodeError(
            f'{where}: image encoding {msg.encoding!r} is not supported ({sorted(channels)})'
        )
    c = channels[msg.encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < w * c or len(data) < h * step:
        raise EpisodeError(
            f'{where}: image {w}x{h} {msg.encoding} step {step} with '
            f'{len(data)} bytes is truncated'
        )
    pixels = data[: h * step].reshape(h, step)[:, : w * c].reshape(h, w, c)
    if msg.encoding.startswith('bgr'):
        pixels = pixels[..., [2, 1, 0]]
    elif c == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3])
