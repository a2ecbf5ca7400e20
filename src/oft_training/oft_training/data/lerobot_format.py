"""The LeRobotDataset format, versions 2.0, 2.1 and 3.0, as LeRobot's own code writes it.

Sources, in huggingface/lerobot: v3.0 from `src/lerobot/datasets/utils.py` at v0.4.4 (path
templates, DEFAULT_FEATURES, create_empty_dataset_info, write_tasks) and `lerobot_dataset.py`
(LeRobotDatasetMetadata.save_episode and _save_episode_metadata, LeRobotDataset
._save_episode_data, _save_episode_video and _query_videos); v2.x from the same files at v0.3.3
and `datasets/v30/convert_dataset_v21_to_v30.py`, which spells out what each old file held.

    meta/info.json             codebase_version, fps, features {key: dtype, shape, names[, info]},
                               data_path and video_path templates, chunks_size, totals
  v3.0
    meta/tasks.parquet         column task_index, the task string as the (pandas) index
    meta/episodes/chunk-XXX/file-XXX.parquet
                               a row per episode: episode_index, tasks, length, data/chunk_index,
                               data/file_index, dataset_from_index, dataset_to_index,
                               videos/<key>/{chunk_index, file_index, from_timestamp,
                               to_timestamp}, meta/episodes/..., stats/<feature>/<stat>
    data/chunk-XXX/file-XXX.parquet          the frames of many episodes, a row per frame
    videos/<key>/chunk-XXX/file-XXX.mp4      episodes one after another; an episode's frame at
                                             `timestamp` is shown at from_timestamp + timestamp
  v2.0 / v2.1
    meta/tasks.jsonl           {"task_index", "task"} per line
    meta/episodes.jsonl        {"episode_index", "tasks", "length"} per line
    data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet  one file per episode
    videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4   from 0 s

where episode_chunk = episode_index // chunks_size. A frame row holds every non-video feature
plus timestamp (float32, seconds from the episode start), frame_index, episode_index, index and
task_index; `dtype: image` features are stored in the row as {bytes, path} (PNG).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oft_policy_node import robot

INFO_PATH = 'meta/info.json'
STATS_PATH = 'meta/stats.json'
TASKS_PATH = 'meta/tasks.parquet'
EPISODES_DIR = 'meta/episodes'
CHUNK_FILE = 'chunk-{chunk_index:03d}/file-{file_index:03d}'
DATA_PATH = 'data/' + CHUNK_FILE + '.parquet'
VIDEO_PATH = 'videos/{video_key}/' + CHUNK_FILE + '.mp4'
EPISODES_PATH = EPISODES_DIR + '/' + CHUNK_FILE + '.parquet'
LEGACY_TASKS_PATH = 'meta/tasks.jsonl'
LEGACY_EPISODES_PATH = 'meta/episodes.jsonl'

V30 = 'v3.0'
READABLE_VERSIONS = ('v2.0', 'v2.1', V30)
# Added to every dataset's features by LeRobotDatasetMetadata.create (utils.DEFAULT_FEATURES).
DEFAULT_FEATURES = {
    'timestamp': {'dtype': 'float32', 'shape': [1], 'names': None},
    'frame_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'episode_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'task_index': {'dtype': 'int64', 'shape': [1], 'names': None},
}
# Names of the ALOHA hub datasets' 14 joints (lerobot/aloha_* info.json): arm, then joint.
ALOHA_JOINT_NAMES = [
    f'{arm}_{joint}' for arm in robot.ARMS for joint in (*robot.ARM_JOINTS, robot.GRIPPER)
]


class FormatError(ValueError):
    """A dataset whose metadata cannot be read as a LeRobotDataset (whole dataset, not one
    episode)."""


def is_lerobot_dataset(path: Path) -> bool:
    return path.is_dir() and (path / INFO_PATH).is_file()


@dataclass(frozen=True)
class VideoSpan:
    """Where one episode of one camera is: the file and the time its first frame is shown."""

    path: Path
    from_s: float


@dataclass(frozen=True)
class EpisodeMeta:
    index: int
    length: int
    tasks: tuple[str, ...]
    data_path: Path
    videos: dict[str, VideoSpan]  # feature key -> span


def feature_names(feature: dict) -> list[str] | None:
    """The per-dimension names of a vector feature, flattened: datasets write a list, a list of
    one list, or {"motors": [...]}."""
    names = feature.get('names')
    if isinstance(names, dict):
        names = [n for group in names.values() for n in (group or [])]
    if isinstance(names, list) and names and all(isinstance(n, list) for n in names):
        names = [n for group in names for n in group]
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    return None


def joint_order(names: list[str] | None) -> np.ndarray | None:
    """Column of `names` for each of the stack's 14 dimensions ([left 6 joints, left gripper,
    right ...]), or None when the names do not name the ALOHA joints. Accepts the hub's names
    (`left_waist`) and this stack's (`follower_left/waist`)."""
    if not names:
        return None
    canonical = [re.sub(r'[/.\s]+', '_', n.strip().lower()) for n in names]
    canonical = [n.removeprefix('follower_') for n in canonical]
    if sorted(canonical) != sorted(ALOHA_JOINT_NAMES):
        return None
    return np.array([canonical.index(n) for n in ALOHA_JOINT_NAMES])


class LeRobotSource:
    """The metadata of one LeRobotDataset folder, and its frames episode by episode."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.info = json.loads((self.root / INFO_PATH).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FormatError(f'{self.root}: cannot read {INFO_PATH}: {exc}') from exc
        self.version = str(self.info.get('codebase_version', ''))
        if self.version not in READABLE_VERSIONS:
            raise FormatError(
                f'{self.root}: codebase_version {self.version!r} is not one of {READABLE_VERSIONS}'
            )
        for key in ('fps', 'features', 'data_path'):
            if key not in self.info:
                raise FormatError(f'{self.root / INFO_PATH}: no "{key}"')
        self.fps = float(self.info['fps'])
        self.features: dict[str, dict] = self.info['features']
        self.tasks = self._read_tasks()
        self.episodes = self._read_episodes()

    @property
    def name(self) -> str:
        return self.root.name

    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get('dtype') == 'video']

    def missing_episodes(self) -> list[int]:
        """Episode indices absent between 0 and the largest one (an index gap)."""
        have = {e.index for e in self.episodes}
        return [i for i in range(max(have, default=-1) + 1) if i not in have]

    # --- metadata -----------------------------------------------------------------------
    def _read_tasks(self) -> dict[int, str]:
        if self.version == V30:
            table = self._parquet(self.root / TASKS_PATH)
            # pandas writes the task strings as the frame's index: a column named 'task' in
            # recent LeRobot, '__index_level_0__' where the index had no name.
            pandas_meta = json.loads((table.schema.metadata or {}).get(b'pandas', b'{}'))
            index_columns = [c for c in pandas_meta.get('index_columns', []) if isinstance(c, str)]
            column = next((c for c in ['task', *index_columns] if c in table.column_names), None)
            if column is None or 'task_index' not in table.column_names:
                raise FormatError(
                    f'{self.root / TASKS_PATH}: no task / task_index columns '
                    f'(has {table.column_names})'
                )
            return dict(
                zip(table['task_index'].to_pylist(), table[column].to_pylist(), strict=True)
            )
        rows = self._jsonl(self.root / LEGACY_TASKS_PATH)
        return {int(r['task_index']): str(r['task']) for r in rows}

    def _read_episodes(self) -> list[EpisodeMeta]:
        if self.version == V30:
            files = sorted((self.root / EPISODES_DIR).glob('*/*.parquet'))
            if not files:
                raise FormatError(f'{self.root}: no {EPISODES_DIR}/chunk-*/file-*.parquet')
            rows = []
            for path in files:
                table = self._parquet(path)
                keep = [c for c in table.column_names if not c.startswith('stats/')]
                rows += table.select(keep).to_pylist()
            episodes = [self._v30_episode(r) for r in rows]
        else:
            episodes = [self._v2_episode(r) for r in self._jsonl(self.root / LEGACY_EPISODES_PATH)]
        indices = [e.index for e in episodes]
        if len(set(indices)) != len(indices):
            repeated = sorted({i for i in indices if indices.count(i) > 1})
            raise FormatError(f'{self.root}: episode indices {repeated} are listed twice')
        return sorted(episodes, key=lambda e: e.index)

    def _v30_episode(self, row: dict) -> EpisodeMeta:
        try:
            data = self.info['data_path'].format(
                chunk_index=row['data/chunk_index'], file_index=row['data/file_index']
            )
            videos = {
                key: VideoSpan(
                    self.root
                    / self.info['video_path'].format(
                        video_key=key,
                        chunk_index=row[f'videos/{key}/chunk_index'],
                        file_index=row[f'videos/{key}/file_index'],
                    ),
                    float(row[f'videos/{key}/from_timestamp']),
                )
                for key in self.video_keys()
            }
            return EpisodeMeta(
                int(row['episode_index']),
                int(row['length']),
                tuple(row.get('tasks') or ()),
                self.root / data,
                videos,
            )
        except (KeyError, TypeError) as exc:
            raise FormatError(
                f'{self.root}: episode row {row.get("episode_index")} lacks {exc} '
                f'(meta/episodes columns: {sorted(row)})'
            ) from exc

    def _v2_episode(self, row: dict) -> EpisodeMeta:
        index = int(row['episode_index'])
        chunk = index // int(self.info.get('chunks_size', 1000))
        videos = {
            key: VideoSpan(
                self.root
                / self.info['video_path'].format(
                    episode_chunk=chunk, video_key=key, episode_index=index
                ),
                0.0,
            )
            for key in self.video_keys()
        }
        data = self.info['data_path'].format(episode_chunk=chunk, episode_index=index)
        return EpisodeMeta(
            index, int(row['length']), tuple(row.get('tasks') or ()), self.root / data, videos
        )

    def _parquet(self, path: Path, **kwargs: object) -> pa.Table:
        # No Arrow thread pool: `convert` reads the metadata, then forks its workers.
        try:
            return pq.read_table(path, use_threads=False, **kwargs)
        except (OSError, pa.ArrowException) as exc:
            raise FormatError(f'{path}: not a readable parquet file ({exc})') from exc

    def _jsonl(self, path: Path) -> list[dict]:
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, json.JSONDecodeError) as exc:
            raise FormatError(f'{path}: cannot read ({exc})') from exc

    # --- frames -------------------------------------------------------------------------
    def frames(self, episode: EpisodeMeta, columns: list[str]) -> pa.Table:
        """The episode's rows (only `columns`), in file order. v3.0 files hold many episodes:
        the filter reads only the row groups whose statistics allow this episode."""
        wanted = list(dict.fromkeys(['episode_index', *columns]))
        return self._parquet(
            episode.data_path, columns=wanted, filters=[('episode_index', '=', episode.index)]
        )


def vector_column(table: pa.Table, key: str, width: int) -> np.ndarray:
    """A list / fixed-size-list column -> (N, width) float64; ValueError on another width."""
    column = table[key].combine_chunks()
    if not pa.types.is_list(column.type) and not pa.types.is_fixed_size_list(column.type):
        if width == 1:
            return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)[:, None]
        raise ValueError(f'{key} is {column.type}, not a list of {width}')
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != width or lengths.max() != width):
        widths = sorted(set(lengths.tolist()))
        raise ValueError(f'{key} rows have {widths} values, expected {width}')
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64).reshape(len(column), width)


def decode_image_cell(cell: dict | None, root: Path) -> np.ndarray:
    """A `dtype: image` cell ({bytes, path}, PNG or JPEG) -> (H, W, 3) uint8 RGB."""
    if cell is None:
        raise ValueError('empty image cell')
    data = cell.get('bytes')
    if data is None and cell.get('path'):
        data = (root / cell['path']).read_bytes()
    if data is None:
        raise ValueError('image cell without bytes or path')
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError('image bytes do not decode')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
