"""Episodes -> a LeRobotDataset v3.0 folder, the layout LeRobot's own recorder writes.

Everything follows huggingface/lerobot v0.4.4 (see `lerobot_format` for the files): the frame
table as `LeRobotDataset._save_episode_data` writes it (one row group per episode, snappy, a
new file past `data_files_size_in_mb`), each camera's episodes appended to one MP4 as
`_save_episode_video` does (an episode starts at `from_timestamp`; a new file past
`video_files_size_in_mb`), the episode rows of `LeRobotDatasetMetadata.save_episode` with their
per-episode statistics (`compute_stats.compute_episode_stats`: min, max, mean, std, count and
the quantiles q01 q10 q50 q90 q99; images per channel in [0, 1], shape (3, 1, 1)), tasks as a
pandas-indexed parquet (`write_tasks`), `stats.json` aggregated as `aggregate_stats` does, and
`info.json` from `create_empty_dataset_info` with the video `info` of `get_video_info`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oft_policy_node import robot
from oft_training.data.lerobot_format import (
    ALOHA_JOINT_NAMES,
    DATA_PATH,
    DEFAULT_FEATURES,
    EPISODES_PATH,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    V30,
    VIDEO_PATH,
)
from oft_training.data.training_set import empty_output_folder
from oft_training.data.video import VideoWriter

QUANTILES = {'q01': 0.01, 'q10': 0.10, 'q50': 0.50, 'q90': 0.90, 'q99': 0.99}
CHUNKS_SIZE = 1000  # files per chunk folder (utils.DEFAULT_CHUNK_SIZE)
DATA_FILE_MB = 100  # utils.DEFAULT_DATA_FILE_SIZE_IN_MB
VIDEO_FILE_MB = 200  # utils.DEFAULT_VIDEO_FILE_SIZE_IN_MB
STATE, ACTION = 'observation.state', 'action'
VECTOR = pa.list_(pa.float32(), robot.ACTION_DIM)  # datasets' Sequence(length=14, float32)


def camera_key(camera: str) -> str:
    return f'observation.images.{camera}'


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """compute_episode_stats of a (N, D) feature, or of (N, H, W, 3) uint8 frames (per channel,
    in [0, 1], each stat shaped (3, 1, 1))."""
    image = values.ndim == 4
    flat = values.reshape(-1, 3).astype(np.float64) / 255.0 if image else values.astype(np.float64)
    stats = {
        'min': flat.min(axis=0),
        'max': flat.max(axis=0),
        'mean': flat.mean(axis=0),
        'std': flat.std(axis=0),
        'count': np.array([len(values)]),
        **{key: np.quantile(flat, q, axis=0) for key, q in QUANTILES.items()},
    }
    if image:  # per channel, (3, 1, 1)
        stats = {k: v if k == 'count' else v.reshape(3, 1, 1) for k, v in stats.items()}
    return stats


def sample_frames(frames: np.ndarray) -> np.ndarray:
    """The frames LeRobot's image statistics see (compute_stats.sample_images): 100 or more
    spread over the episode (`sample_indices`), every k-th pixel of frames of 300 px or more
    (`auto_downsample_height_width`, to about 150 px)."""
    length = len(frames)
    count = max(min(100, length), min(int(length**0.75), 10_000))
    picks = np.round(np.linspace(0, length - 1, count)).astype(int)
    height, width = frames.shape[1:3]
    step = int(max(height, width) / 150) if max(height, width) >= 300 else 1
    return np.asarray(frames[picks])[:, ::step, ::step]


def aggregate(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """compute_stats.aggregate_feature_stats: count-weighted means, pooled variance, quantiles
    as count-weighted means of the episodes'."""
    counts = np.stack([s['count'] for s in stats]).astype(np.float64)  # (E, 1)
    means = np.stack([s['mean'] for s in stats])
    weights = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
    total = counts.sum(axis=0)
    mean = (means * weights).sum(axis=0) / total
    variance = ((np.stack([s['std'] for s in stats]) ** 2 + (means - mean) ** 2) * weights).sum(
        axis=0
    ) / total
    result = {
        'min': np.min(np.stack([s['min'] for s in stats]), axis=0),
        'max': np.max(np.stack([s['max'] for s in stats]), axis=0),
        'mean': mean,
        'std': np.sqrt(variance),
        'count': total.astype(np.int64).reshape(1),
    }
    for key in QUANTILES:
        result[key] = (np.stack([s[key] for s in stats]) * weights).sum(axis=0) / total
    return result


def pandas_indexed_table(index_name: str, index: list[str], column: str, values: list[int]):
    """What `pandas.DataFrame({column: values}, index=pd.Index(index, name=index_name))
    .to_parquet()` writes, without pandas: the index as a column plus the b'pandas' schema
    metadata (pandas' documented parquet metadata) that makes pd.read_parquet restore it."""
    table = pa.table({column: pa.array(values, pa.int64()), index_name: pa.array(index)})
    metadata = {
        'index_columns': [index_name],
        'column_indexes': [
            {
                'name': None,
                'field_name': None,
                'pandas_type': 'unicode',
                'numpy_type': 'object',
                'metadata': {'encoding': 'UTF-8'},
            }
        ],
        'columns': [
            {
                'name': column,
                'field_name': column,
                'pandas_type': 'int64',
                'numpy_type': 'int64',
                'metadata': None,
            },
            {
                'name': index_name,
                'field_name': index_name,
                'pandas_type': 'unicode',
                'numpy_type': 'object',
                'metadata': None,
            },
        ],
        'creator': {'library': 'pyarrow', 'version': pa.__version__},
        'pandas_version': '2.2.3',
    }
    return table.replace_schema_metadata({b'pandas': json.dumps(metadata).encode()})


@dataclass
class _Rotating:
    """chunk-XXX/file-XXX numbering of a file that starts anew past a size limit."""

    chunk: int = 0
    file: int = 0

    def next(self) -> None:
        self.file += 1
        if self.file == CHUNKS_SIZE:
            self.chunk, self.file = self.chunk + 1, 0


@dataclass
class _CameraVideo:
    place: _Rotating = field(default_factory=_Rotating)
    writer: VideoWriter | None = None


class LeRobotWriter:
    """Writes episodes into a new LeRobotDataset v3.0 folder; `close()` writes the metadata."""

    def __init__(
        self,
        root: Path,
        fps: int,
        image_size: tuple[int, int],
        cameras: tuple[str, ...] = robot.CAMERAS,
        vcodec: str = 'libsvtav1',
        robot_type: str = 'aloha',
        overwrite: bool = False,
    ) -> None:
        self.root = empty_output_folder(root, overwrite)
        self.fps, self.image_size, self.cameras = int(fps), tuple(image_size), cameras
        self.vcodec, self.robot_type = vcodec, robot_type
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []  # rows of meta/episodes
        self._stats: list[dict[str, dict[str, np.ndarray]]] = []  # per episode, per feature
        self.frames = 0
        self._data = _Rotating()
        self._data_writer: pq.ParquetWriter | None = None
        self._videos = {cam: _CameraVideo() for cam in cameras}
        self._video_info: dict[str, dict] = {}

    def add_episode(
        self,
        proprio: np.ndarray,
        actions: np.ndarray,
        images: dict[str, np.ndarray],
        instruction: str,
    ) -> None:
        """One episode: proprio and actions (T, 14) in the stack's order and units, images
        {camera: (T, H, W, 3) uint8} (arrays or memory maps), one instruction."""
        length = len(proprio)
        index = len(self.episodes)
        task = self.tasks.setdefault(instruction, len(self.tasks))
        frame_index = np.arange(length, dtype=np.int64)
        columns = {
            STATE: np.asarray(proprio, np.float32),
            ACTION: np.asarray(actions, np.float32),
            'timestamp': (frame_index / self.fps).astype(np.float32),
            'frame_index': frame_index,
            'episode_index': np.full(length, index, np.int64),
            'index': self.frames + frame_index,
            'task_index': np.full(length, task, np.int64),
        }
        row = {'episode_index': index, 'tasks': [instruction], 'length': length}
        row.update(self._write_data(columns))
        for cam in self.cameras:
            row.update(self._write_video(cam, images[cam]))
        stats = {key: feature_stats(v.reshape(length, -1)) for key, v in columns.items()}
        for cam in self.cameras:
            stats[camera_key(cam)] = feature_stats(sample_frames(images[cam]))
        self._stats.append(stats)
        row.update(
            {f'stats/{key}/{stat}': value for key, s in stats.items() for stat, value in s.items()}
        )
        row.update(
            {
                'meta/episodes/chunk_index': 0,
                'meta/episodes/file_index': 0,
                'dataset_from_index': self.frames,
                'dataset_to_index': self.frames + length,
            }
        )
        self.episodes.append(row)
        self.frames += length

    def _write_data(self, columns: dict[str, np.ndarray]) -> dict:
        path = self.root / DATA_PATH.format(
            chunk_index=self._data.chunk, file_index=self._data.file
        )
        if self._data_writer is not None and path.stat().st_size >= DATA_FILE_MB * 2**20:
            self._data_writer.close()
            self._data_writer = None
            self._data.next()
            path = self.root / DATA_PATH.format(
                chunk_index=self._data.chunk, file_index=self._data.file
            )
        arrays = {
            key: pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), robot.ACTION_DIM)
            if v.ndim == 2
            else pa.array(v)
            for key, v in columns.items()
        }
        table = pa.table(arrays)
        if self._data_writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(
                path, table.schema, compression='snappy', use_dictionary=True
            )
        self._data_writer.write_table(table)
        return {'data/chunk_index': self._data.chunk, 'data/file_index': self._data.file}

    def _write_video(self, cam: str, frames: np.ndarray) -> dict:
        video = self._videos[cam]
        key = camera_key(cam)
        if video.writer is not None and video.writer.size_mb() >= VIDEO_FILE_MB:
            video.writer.close()
            video.writer = None
            video.place.next()
        if video.writer is None:
            path = self.root / VIDEO_PATH.format(
                video_key=key, chunk_index=video.place.chunk, file_index=video.place.file
            )
            video.writer = VideoWriter(path, self.fps, *self.image_size, codec=self.vcodec)
        start = video.writer.frames
        for frame in frames:
            if frame.shape != (*self.image_size, 3):
                raise ValueError(f'{cam} frame {frame.shape}, expected {(*self.image_size, 3)}')
            video.writer.write(frame)
        return {
            f'videos/{key}/chunk_index': video.place.chunk,
            f'videos/{key}/file_index': video.place.file,
            f'videos/{key}/from_timestamp': start / self.fps,
            f'videos/{key}/to_timestamp': video.writer.frames / self.fps,
        }

    def close(self) -> dict:
        """Finish the files and write the metadata; returns info.json's content."""
        if not self.episodes:
            raise ValueError(f'no episode was written to {self.root}')
        if self._data_writer is not None:
            self._data_writer.close()
        for video in self._videos.values():
            if video.writer is not None:
                video.writer.close()
        first_videos = {
            cam: self.root
            / VIDEO_PATH.format(video_key=camera_key(cam), chunk_index=0, file_index=0)
            for cam in self.cameras
        }
        self._write_episodes()
        tasks = sorted(self.tasks, key=self.tasks.get)
        pq.write_table(
            pandas_indexed_table('task', tasks, 'task_index', [self.tasks[t] for t in tasks]),
            self.root / TASKS_PATH,
        )
        stats = {key: aggregate([e[key] for e in self._stats]) for key in self._stats[0]}
        _write_json(self.root / STATS_PATH, stats)
        info = self._info({cam: video_info(path) for cam, path in first_videos.items()})
        _write_json(self.root / INFO_PATH, info)
        return info

    def _write_episodes(self) -> None:
        table = pa.Table.from_pylist([_jsonable(row) for row in self.episodes])
        path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression='snappy')

    def _info(self, videos: dict[str, dict]) -> dict:
        height, width = self.image_size
        features = {
            ACTION: {'dtype': 'float32', 'shape': [robot.ACTION_DIM], 'names': ALOHA_JOINT_NAMES},
            STATE: {'dtype': 'float32', 'shape': [robot.ACTION_DIM], 'names': ALOHA_JOINT_NAMES},
            **{
                camera_key(cam): {
                    'dtype': 'video',
                    'shape': [height, width, 3],
                    'names': ['height', 'width', 'channels'],
                    'info': videos[cam],
                }
                for cam in self.cameras
            },
            **DEFAULT_FEATURES,
        }
        return {
            'codebase_version': V30,
            'robot_type': self.robot_type,
            'total_episodes': len(self.episodes),
            'total_frames': self.frames,
            'total_tasks': len(self.tasks),
            'chunks_size': CHUNKS_SIZE,
            'data_files_size_in_mb': DATA_FILE_MB,
            'video_files_size_in_mb': VIDEO_FILE_MB,
            'fps': self.fps,
            'splits': {'train': f'0:{len(self.episodes)}'},
            'data_path': DATA_PATH,
            'video_path': VIDEO_PATH,
            'features': features,
        }


def video_info(path: Path) -> dict:
    """video_utils.get_video_info of an encoded file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            'video.height': stream.height,
            'video.width': stream.width,
            'video.codec': stream.codec_context.codec.canonical_name,
            'video.pix_fmt': stream.pix_fmt,
            'video.is_depth_map': False,
            'video.fps': int(stream.base_rate),
            'video.channels': 3,
            'has_audio': bool(container.streams.audio),
        }


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(content), indent=4, ensure_ascii=False) + '\n')


def _jsonable(value: object) -> object:
    """numpy values -> lists, as utils.serialize_dict does before json and parquet."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
