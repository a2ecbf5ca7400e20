"""One episode of a LeRobotDataset (v2.0, v2.1, v3.0) -> one episode on the control grid.

The dataset's frames are already on a fixed grid at its fps; the control grid keeps every
`fps / 25`-th frame (an fps that is no multiple of 25 is refused: resampling it would invent
observations never recorded). Proprio and action rows are the recorded float values; camera
frames come from the episode's span of each video (or the row's image), resized once.

Joint order comes from the features' names: the hub's ALOHA datasets name their 14 dimensions
(`left_waist` ... `right_gripper`, in either arm order); other names are taken in the stack's
order with a warning. Values are radians and grippers 0 (closed) .. 1 (open), the ALOHA HDF5
convention those datasets were ported from; arm values beyond 2 pi (degrees) are refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from oft_policy_node import robot
from oft_training.data.lerobot_format import (
    FormatError,
    LeRobotSource,
    decode_image_cell,
    feature_names,
    joint_order,
    vector_column,
)
from oft_training.data.training_set import EpisodeError, TrainingSetWriter
from oft_training.data.video import VideoError, decode_frames

DEFAULT_CAMERA_KEYS = tuple((cam, f'observation.images.{cam}') for cam in robot.CAMERAS)
# LeRobotDataset's own default tolerance_s: how far a video frame's time may be from a
# row's timestamp (and consecutive timestamps from 1 / fps).
DEFAULT_TOLERANCE_S = 1e-4
# Arm joints beyond this are not radians (a full turn plus margin): degrees, or raw ticks.
MAX_ARM_RADIANS = 2 * math.pi + 0.1
GRIPPER_RANGE = (-0.5, 1.5)  # normalised openings seen outside this are reported


@dataclass(frozen=True)
class LeRobotOptions:
    """Which features are what; every field is a `convert` option."""

    state_key: str = 'observation.state'
    action_key: str = 'action'
    camera_keys: tuple[tuple[str, str], ...] = DEFAULT_CAMERA_KEYS  # (camera, feature key)
    rate_hz: float = robot.CONTROL_RATE_HZ
    tolerance_s: float = DEFAULT_TOLERANCE_S
    instruction: str | None = None


@dataclass(frozen=True)
class DatasetPlan:
    """What every episode of one dataset shares, decided once: the stride onto the control
    grid and the column of each of the 14 dimensions."""

    stride: int
    state_columns: np.ndarray  # (14,)
    action_columns: np.ndarray  # (14,)
    warnings: tuple[str, ...]


def plan_dataset(source: LeRobotSource, options: LeRobotOptions) -> DatasetPlan:
    """Check the features and fps of the whole dataset. Raises FormatError on what makes every
    episode unusable (a missing feature, an fps that is no multiple of the control rate)."""
    features = source.features
    missing = [
        key
        for key in (options.state_key, options.action_key, *(k for _, k in options.camera_keys))
        if key not in features
    ]
    if missing:
        raise FormatError(
            f'{source.name}: no feature {missing}; it has {sorted(features)}. Map others with '
            '--lerobot-state, --lerobot-action, --lerobot-camera CAM=KEY'
        )
    for cam, key in options.camera_keys:
        if features[key].get('dtype') not in ('video', 'image'):
            raise FormatError(
                f'{source.name}: {key} (for {cam}) is {features[key].get("dtype")}, '
                'not a video or image feature'
            )
    ratio = source.fps / options.rate_hz
    if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
        raise FormatError(
            f'{source.name}: fps {source.fps:g} is no multiple of the {options.rate_hz:g} Hz '
            'control rate; only whole multiples (25, 50, 100 ...) keep recorded frames on the '
            'grid'
        )
    warnings = []
    columns = {}
    for what, key in (('state', options.state_key), ('action', options.action_key)):
        shape = list(features[key].get('shape', []))
        if shape != [robot.ACTION_DIM]:
            raise FormatError(
                f'{source.name}: {key} has shape {shape}, expected [{robot.ACTION_DIM}] '
                '(two arms of 6 joints and a gripper)'
            )
        names = feature_names(features[key])
        order = joint_order(names)
        if order is None:
            warnings.append(
                f'{source.name}: the names of {key} ({names[:3] if names else None} ...) do '
                "not name the ALOHA joints; taking its columns in the stack's order "
                f'{robot.action_joint_names()}'
            )
            order = np.arange(robot.ACTION_DIM)
        columns[what] = order
    gaps = source.missing_episodes()
    if gaps:
        warnings.append(
            f'{source.name}: episode indices {gaps[:20]} are missing (an index gap: '
            'episodes deleted or not copied); converting the ones listed'
        )
    total = source.info.get('total_episodes')
    if total is not None and int(total) != len(source.episodes):
        warnings.append(
            f'{source.name}: info.json says {total} episodes, meta lists {len(source.episodes)}'
        )
    return DatasetPlan(round(ratio), columns['state'], columns['action'], tuple(warnings))


@dataclass
class LeRobotEpisodeReport:
    ticks: int
    duration_s: float
    instruction: str
    warnings: list[str]


def convert_lerobot_episode(
    source: LeRobotSource,
    episode_index: int,
    plan: DatasetPlan,
    writer: TrainingSetWriter,
    options: LeRobotOptions,
    resize: Callable[[np.ndarray], np.ndarray],
    name: str,
) -> LeRobotEpisodeReport:
    """Write episode `episode_index` of `source` into `writer`. Raises EpisodeError naming the
    episode for anything that would give a wrong sample."""
    episode = next((e for e in source.episodes if e.index == episode_index), None)
    if episode is None:
        raise EpisodeError(f'{name}: episode {episode_index} is not in {source.root}')
    image_keys = [k for _, k in options.camera_keys if source.features[k]['dtype'] == 'image']
    columns = ['frame_index', 'timestamp', 'task_index', options.state_key, options.action_key]
    try:
        table = source.frames(episode, [*columns, *image_keys])
    except FormatError as exc:
        raise EpisodeError(f'{name}: {exc}') from exc
    rows = np.argsort(table['frame_index'].to_numpy(), kind='stable')
    frame_index = table['frame_index'].to_numpy()[rows]
    _check_frames(name, episode.length, frame_index, table, rows, source.fps, options)
    timestamps = table['timestamp'].to_numpy().astype(np.float64)[rows]
    grid = rows[:: plan.stride]  # (T,) table rows on the control grid
    try:
        proprio = vector_column(table, options.state_key, robot.ACTION_DIM)[grid]
        actions = vector_column(table, options.action_key, robot.ACTION_DIM)[grid]
    except ValueError as exc:
        raise EpisodeError(f'{name}: {exc}') from exc
    proprio, actions = proprio[:, plan.state_columns], actions[:, plan.action_columns]
    warnings = [*_check_units(name, 'state', proprio), *_check_units(name, 'action', actions)]
    instruction = options.instruction or _instruction(name, source, table['task_index'])
    times = timestamps[:: plan.stride]  # (T,) seconds from the episode start
    origin = f'lerobot:{source.root}#{episode.index}'
    with writer.episode(name, len(grid), instruction, origin) as sink:
        sink.proprio[:] = proprio
        sink.actions[:] = actions
        for cam, key in options.camera_keys:
            if key in image_keys:
                for tick, row in enumerate(grid):
                    try:
                        frame = decode_image_cell(table[key][int(row)].as_py(), source.root)
                    except (ValueError, OSError) as exc:
                        raise EpisodeError(f'{name}: {key} frame {row}: {exc}') from exc
                    sink.put_image(cam, np.array([tick]), resize(frame))
                continue
            span = episode.videos[key]
            if not span.path.is_file():
                raise EpisodeError(f'{name}: {key}: video {span.path} does not exist')

            def store(tick: int, rgb: np.ndarray, cam: str = cam) -> None:
                sink.put_image(cam, np.array([tick]), resize(rgb))

            try:
                decode_frames(span.path, span.from_s + times, options.tolerance_s, store)
            except VideoError as exc:
                raise EpisodeError(f'{name}: {key}: {exc}') from exc
    return LeRobotEpisodeReport(
        len(grid), (len(grid) - 1) / options.rate_hz, instruction, warnings
    )


def _check_frames(
    name: str,
    length: int,
    frame_index: np.ndarray,
    table: object,
    rows: np.ndarray,
    fps: float,
    options: LeRobotOptions,
) -> None:
    """Every frame 0..length-1 once, `1 / fps` apart: a gap would pair an observation with the
    action of another instant."""
    if len(frame_index) == 0:
        raise EpisodeError(f'{name}: no frames in its data file')
    if not np.array_equal(frame_index, np.arange(length)):
        missing = np.setdiff1d(np.arange(length), frame_index)
        surplus = len(frame_index) - (length - len(missing))
        raise EpisodeError(
            f'{name}: {len(frame_index)} frames in its data file for length {length}: '
            f'frame_index misses {missing[:10].tolist()}, {surplus} repeated or beyond'
        )
    timestamps = table['timestamp'].to_numpy().astype(np.float64)[rows]
    off = np.abs(np.diff(timestamps) - 1.0 / fps) > options.tolerance_s
    if off.any():
        first = int(np.flatnonzero(off)[0])
        raise EpisodeError(
            f'{name}: timestamps of frames {first} and {first + 1} are '
            f'{(timestamps[first + 1] - timestamps[first]) * 1e3:.2f} ms apart, not 1 / fps = '
            f'{1e3 / fps:.2f} ms (frames dropped or duplicated)'
        )


def _check_units(name: str, what: str, values: np.ndarray) -> list[str]:
    if not np.all(np.isfinite(values)):
        rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        raise EpisodeError(f'{name}: {what} has non-finite values at ticks {rows[:10].tolist()}')
    grippers = [robot.arm_columns(arm).stop - 1 for arm in robot.ARMS]
    arms = np.delete(values, grippers, axis=1)
    if np.abs(arms).max() > MAX_ARM_RADIANS:
        raise EpisodeError(
            f'{name}: {what} arm joints reach {np.abs(arms).max():.1f}: not radians (degrees?); '
            'the stack expects radians and grippers 0..1'
        )
    low, high = values[:, grippers].min(), values[:, grippers].max()
    if low < GRIPPER_RANGE[0] or high > GRIPPER_RANGE[1]:
        return [
            f'{name}: {what} grippers range {low:.2f}..{high:.2f}; the stack expects 0 '
            '(closed) .. 1 (open), as ALOHA normalises them'
        ]
    return []


def _instruction(name: str, source: LeRobotSource, task_index: object) -> str:
    used = sorted(set(task_index.to_pylist()))
    unknown = [t for t in used if t not in source.tasks]
    if unknown:
        raise EpisodeError(f"{name}: task_index {unknown} is not in the dataset's tasks")
    texts = list(dict.fromkeys(source.tasks[t].strip() for t in used))
    if len(texts) != 1:
        raise EpisodeError(
            f'{name}: the task changed during the episode ({texts}); one instruction per '
            'episode, or pass --instruction'
        )
    return texts[0]
