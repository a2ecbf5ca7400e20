"""LeRobotDataset folders for the reader's tests, written file by file as LeRobot writes them.

Nothing here uses the stack's own LeRobot code: each file follows the code that writes it in
huggingface/lerobot, or a published hub dataset where the format leaves a choice.

v3.0 (lerobot v0.4.4, src/lerobot/datasets/):
  * utils.py: DEFAULT_DATA_PATH 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
    DEFAULT_VIDEO_PATH 'videos/{video_key}/chunk-...mp4', DEFAULT_EPISODES_PATH
    'meta/episodes/chunk-...parquet', DEFAULT_TASKS_PATH 'meta/tasks.parquet',
    DEFAULT_FEATURES (timestamp float32, frame_index, episode_index, index, task_index int64),
    create_empty_dataset_info (the info.json keys), get_hf_features_from_features (a (14,)
    float32 feature is datasets.Sequence(length=14): an Arrow fixed-size list; an image is
    datasets.Image(): a struct of bytes and path).
  * lerobot_dataset.py: _save_episode_data (one ParquetWriter, a row group per episode,
    snappy), LeRobotDatasetMetadata.save_episode_tasks (pd.DataFrame({'task_index': ...},
    index=tasks): an unnamed index, stored by pandas as '__index_level_0__'),
    _save_episode_metadata (episode rows: episode_index, tasks, length, data/..., videos/...,
    dataset_from_index, dataset_to_index, meta/episodes/..., stats/...), _save_episode_video and
    video_utils.concatenate_video_files (a camera's episodes back to back in one file; an
    episode's from_timestamp is the duration before it).
  * video_utils.encode_video_frames: yuv420p, g=2, crf=30, libsvtav1 preset 12.
v2.1 (lerobot v0.3.3, src/lerobot/datasets/utils.py): DEFAULT_PARQUET_PATH
  'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet', DEFAULT_VIDEO_PATH
  'videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4',
  meta/episodes.jsonl {episode_index, tasks, length}, meta/tasks.jsonl {task_index, task},
  meta/episodes_stats.jsonl; create_empty_dataset_info adds total_chunks and total_videos.
Names and shapes of the ALOHA hub datasets (meta/info.json of lerobot/aloha_static_vinh_cup_left,
v2.0): names {"motors": ["left_waist", ..., "right_gripper"]}, image shape [480, 640, 3] with
names ["height", "width", "channel"], fps 50; right-arm-first names appear in other ALOHA
datasets on the hub (e.g. HuaihaiLyu/hamburger_heti, v2.0, 30 fps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oft_training.data.video import no_realtime_takeover
from oft_training.testing import command_row, state_row

HUB_NAMES = [
    f'{arm}_{joint}'
    for arm in ('left', 'right')
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
RIGHT_FIRST = list(range(7, 14)) + list(range(7))  # stored column -> stack column
CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')


def frame_number(episode: int, frame: int) -> int:
    """A number per recorded frame, unique across episodes."""
    return 1000 * episode + frame


def state(episode: int, frame: int) -> np.ndarray:
    """observation.state of a frame, in the stack's order (radians, grippers 0..1)."""
    return state_row(frame_number(episode, frame) % 700).astype(np.float32)


def action(episode: int, frame: int) -> np.ndarray:
    return command_row(frame_number(episode, frame) % 700).astype(np.float32)


def colour(episode: int, frame: int, camera: int) -> np.ndarray:
    """RGB of a uniform frame. Any two frames of an episode (of up to 80) are at least 29 levels
    apart in (red, green), far beyond a codec's error, so a decoded frame tells which it is."""
    n = frame_number(episode, frame)
    return np.array([(19 * n) % 256, (255 - 22 * n) % 256, 60 * camera + 20], np.uint8)


def frame_of(pixels: np.ndarray, episode: int, length: int) -> int:
    """The frame of `episode` whose colour is nearest the mean (red, green) of `pixels`."""
    seen = pixels.reshape(-1, 3)[:, :2].mean(axis=0)
    colours = np.array([colour(episode, f, 0)[:2] for f in range(length)], float)
    return int(np.argmin(np.linalg.norm(colours - seen, axis=1)))


@dataclass
class LeRobotSpec:
    version: str = 'v3.0'
    fps: int = 50
    lengths: tuple[int, ...] = (60, 70)  # frames per episode
    tasks: tuple[str, ...] = ('put green pepper into pot', 'put red pepper into pot')
    image_shape: tuple[int, int] = (48, 64)
    vcodec: str = 'libsvtav1'  # or 'libx264'
    camera_dtype: str = 'video'  # or 'image' (PNG in the frame table)
    names: str = 'hub'  # 'hub' (dict, left first), 'right_first' (flat list), 'generic'
    cameras: tuple[str, ...] = CAMERAS
    skip_episodes: tuple[int, ...] = ()  # indices left out: an index gap
    drop_frames: dict[int, int] = field(default_factory=dict)  # episode -> frame left out
    task_switch: int | None = None  # episode whose second half has another task
    degrees: bool = False  # joints in degrees, as some recorders write them

    def episodes(self) -> list[int]:
        count = len(self.lengths) + len(self.skip_episodes)
        return [i for i in range(count) if i not in self.skip_episodes]

    def length(self, episode: int) -> int:
        return self.lengths[self.episodes().index(episode)]


def write_lerobot(root: Path, spec: LeRobotSpec) -> Path:
    root.mkdir(parents=True)
    v3 = spec.version == 'v3.0'
    rows, episode_rows, offset = [], [], 0
    videos = {cam: [] for cam in spec.cameras}  # camera -> frames per episode
    for e in spec.episodes():
        length = spec.length(e)
        task = e % len(spec.tasks)
        frames = [f for f in range(length) if spec.drop_frames.get(e) != f]
        table = _frame_table(spec, e, frames, task, offset)
        for c, cam in enumerate(spec.cameras):
            videos[cam].append(
                [np.broadcast_to(colour(e, f, c), (*spec.image_shape, 3)) for f in range(length)]
            )
        rows.append(table)
        episode_rows.append({'episode_index': e, 'tasks': [spec.tasks[task]], 'length': length})
        offset += length
    if v3:
        _write_v30(root, spec, rows, episode_rows, videos)
    else:
        _write_v21(root, spec, rows, episode_rows, videos)
    features = _features(spec)
    info = {
        'codebase_version': spec.version,
        'robot_type': 'aloha',
        'total_episodes': len(episode_rows),
        'total_frames': offset,
        'total_tasks': len(spec.tasks),
        'chunks_size': 1000,
        'fps': spec.fps,
        'splits': {'train': f'0:{len(episode_rows)}'},
        'features': features,
    }
    if v3:
        info.update(
            data_files_size_in_mb=100,
            video_files_size_in_mb=200,
            data_path='data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
            video_path='videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4',
        )
    else:
        info.update(
            total_chunks=1,
            total_videos=len(episode_rows) * len(spec.cameras),
            data_path='data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet',
            video_path='videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4',
        )
    if spec.camera_dtype == 'image':
        info['video_path'] = None
    (root / 'meta').mkdir(exist_ok=True)
    (root / 'meta/info.json').write_text(json.dumps(info, indent=4))
    return root


def _stored(values: np.ndarray, spec: LeRobotSpec) -> np.ndarray:
    if spec.degrees:
        values = np.degrees(values)
    return values[RIGHT_FIRST] if spec.names == 'right_first' else values


def _frame_table(spec: LeRobotSpec, e: int, frames: list[int], task: int, offset: int) -> pa.Table:
    n = len(frames)
    tasks = [task] * n
    if spec.task_switch == e:
        tasks = [task if i < n // 2 else (task + 1) % len(spec.tasks) for i in range(n)]
    columns = {
        'observation.state': pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate([_stored(state(e, f), spec) for f in frames]), pa.float32()),
            14,
        ),
        'action': pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate([_stored(action(e, f), spec) for f in frames]), pa.float32()),
            14,
        ),
    }
    if spec.camera_dtype == 'image':  # datasets.Image(): {bytes: PNG, path}
        for c, cam in enumerate(spec.cameras):
            cells = []
            for f in frames:
                rgb = np.broadcast_to(colour(e, f, c), (*spec.image_shape, 3))
                png = cv2.imencode(
                    '.png', cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
                )[1]
                cells.append({'bytes': png.tobytes(), 'path': f'frame_{f:06d}.png'})
            columns[f'observation.images.{cam}'] = pa.array(
                cells, pa.struct([('bytes', pa.binary()), ('path', pa.string())])
            )
    columns.update(
        {
            'timestamp': pa.array(np.array(frames) / spec.fps, pa.float32()),
            'frame_index': pa.array(frames, pa.int64()),
            'episode_index': pa.array([e] * n, pa.int64()),
            'index': pa.array(offset + np.array(frames), pa.int64()),
            'task_index': pa.array(tasks, pa.int64()),
        }
    )
    return pa.table(columns)


def _encode(
    path: Path, spec: LeRobotSpec, frames: list[np.ndarray], container: dict | None = None
) -> float:
    """encode_video_frames: yuv420p, g=2, crf=30 (libsvtav1 preset 12). Returns seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {'g': '2', 'crf': '30'}
    if spec.vcodec == 'libsvtav1':
        options['preset'] = '12'
    # SVT-AV1 would make this (pytest's) thread real-time: see video.no_realtime_takeover.
    with no_realtime_takeover(), av.open(str(path), 'w', options=container or {}) as out:
        stream = out.add_stream(spec.vcodec, rate=spec.fps, options=options)
        stream.pix_fmt, stream.height, stream.width = 'yuv420p', *spec.image_shape
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format='rgb24')
            frame.pts, frame.time_base = i, Fraction(1, spec.fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return len(frames) / spec.fps


def _write_v30(root, spec, tables, episode_rows, videos) -> None:
    path = root / 'data/chunk-000/file-000.parquet'
    path.parent.mkdir(parents=True)
    with pq.ParquetWriter(path, tables[0].schema, compression='snappy') as writer:
        for table in tables:
            writer.write_table(table)
    start = 0
    for row in episode_rows:
        row.update(
            {
                'data/chunk_index': 0,
                'data/file_index': 0,
                'dataset_from_index': start,
                'dataset_to_index': start + row['length'],
                'meta/episodes/chunk_index': 0,
                'meta/episodes/file_index': 0,
                'stats/action/min': [0.0] * 14,  # stats columns: the reader must skip them
            }
        )
        start += row['length']
    if spec.camera_dtype == 'video':
        for cam, episodes in videos.items():
            key = f'observation.images.{cam}'
            # concatenate_video_files writes with movflags=faststart: the index first.
            duration = _encode(
                root / f'videos/{key}/chunk-000/file-000.mp4',
                spec,
                [f for ep in episodes for f in ep],
                {'movflags': 'faststart'},
            )
            assert duration > 0
            before = 0.0
            for row, frames in zip(episode_rows, episodes, strict=True):
                row.update(
                    {
                        f'videos/{key}/chunk_index': 0,
                        f'videos/{key}/file_index': 0,
                        f'videos/{key}/from_timestamp': before,
                        f'videos/{key}/to_timestamp': before + len(frames) / spec.fps,
                    }
                )
                before += len(frames) / spec.fps
    path = root / 'meta/episodes/chunk-000/file-000.parquet'
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), path)
    index = {
        'index_columns': ['__index_level_0__'],
        'column_indexes': [],
        'columns': [
            {
                'name': 'task_index',
                'field_name': 'task_index',
                'pandas_type': 'int64',
                'numpy_type': 'int64',
                'metadata': None,
            },
            {
                'name': None,
                'field_name': '__index_level_0__',
                'pandas_type': 'unicode',
                'numpy_type': 'object',
                'metadata': None,
            },
        ],
    }
    tasks = pa.table(
        {'task_index': list(range(len(spec.tasks))), '__index_level_0__': list(spec.tasks)}
    ).replace_schema_metadata({b'pandas': json.dumps(index).encode()})
    pq.write_table(tasks, root / 'meta/tasks.parquet')


def _write_v21(root, spec, tables, episode_rows, videos) -> None:
    for row, table in zip(episode_rows, tables, strict=True):
        e = row['episode_index']
        path = root / f'data/chunk-000/episode_{e:06d}.parquet'
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    if spec.camera_dtype == 'video':
        for cam, episodes in videos.items():
            for row, frames in zip(episode_rows, episodes, strict=True):
                e = row['episode_index']
                _encode(
                    root / f'videos/chunk-000/observation.images.{cam}/episode_{e:06d}.mp4',
                    spec,
                    frames,
                )
    (root / 'meta').mkdir(exist_ok=True)
    (root / 'meta/episodes.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in episode_rows))
    (root / 'meta/tasks.jsonl').write_text(
        ''.join(json.dumps({'task_index': i, 'task': t}) + '\n' for i, t in enumerate(spec.tasks))
    )


def _features(spec: LeRobotSpec) -> dict:
    vector = {
        'hub': {'motors': HUB_NAMES},
        'right_first': [HUB_NAMES[i] for i in RIGHT_FIRST],
        'generic': [f'qpos_{i}' for i in range(14)],
    }[spec.names]
    h, w = spec.image_shape
    features = {
        'observation.state': {'dtype': 'float32', 'shape': [14], 'names': vector},
        'action': {'dtype': 'float32', 'shape': [14], 'names': vector},
    }
    for cam in spec.cameras:
        feature = {
            'dtype': spec.camera_dtype,
            'shape': [h, w, 3],
            'names': ['height', 'width', 'channel'],
        }
        if spec.camera_dtype == 'video':
            feature['info'] = {
                'video.fps': spec.fps,
                'video.height': h,
                'video.width': w,
                'video.channels': 3,
                'video.codec': 'av1' if spec.vcodec == 'libsvtav1' else 'h264',
                'video.pix_fmt': 'yuv420p',
                'video.is_depth_map': False,
                'has_audio': False,
            }
        features[f'observation.images.{cam}'] = feature
    for key, dtype in (
        ('timestamp', 'float32'),
        ('frame_index', 'int64'),
        ('episode_index', 'int64'),
        ('index', 'int64'),
        ('task_index', 'int64'),
    ):
        features[key] = {'dtype': dtype, 'shape': [1], 'names': None}
    return features
