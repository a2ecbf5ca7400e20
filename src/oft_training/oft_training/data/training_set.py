"""The training set on disk: episodes on the control grid, built for fast random access.

    <root>/index.json                     format, image size, cameras, rate, chunk size, episodes
                                          (name, source, length, instruction), the instruction
                                          list and per-dimension min/max statistics (the
                                          model's NormStats fields)
    <root>/episodes/<name>/proprio.npy    (T, 14) float32, robot units (grippers 0..1)
    <root>/episodes/<name>/actions.npy    (T, 14) float32, the target in force at each tick
    <root>/episodes/<name>/<camera>.npy   (T, H, W, 3) uint8 RGB, already at the model's size

Plain .npy files open memory-mapped (`np.load(mmap_mode='r')`): a random sample reads three
frames and two small rows, with no decoding, from any number of DataLoader workers.
A sample is the window of K consecutive actions starting at a tick; an episode of T ticks gives
T - K + 1 samples (whole chunks only: padding a chunk would invent targets never commanded).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oft_policy_node import robot
from oft_policy_node.model.normalization import NormStats

FORMAT = 'oft-training-set'
VERSION = 1
INDEX = 'index.json'


class EpisodeError(ValueError):
    """An episode that cannot become training samples; the message names the episode."""


def episode_dir_name(name: str) -> str:
    """A file-system-safe folder name for an episode name."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('._') or 'episode'


def empty_output_folder(root: Path, overwrite: bool) -> Path:
    """`root`, created empty; an existing non-empty one only with `overwrite` (then cleared)."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f'output folder {root} is not empty; pass --overwrite to replace it or '
                'choose another --out'
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class RunningMinMax:
    """Per-dimension min/max over every row seen, (D,) each."""

    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def update(self, rows: np.ndarray) -> None:  # rows (N, D)
        low, high = rows.min(axis=0), rows.max(axis=0)
        self.low = low if self.low is None else np.minimum(self.low, low)
        self.high = high if self.high is None else np.maximum(self.high, high)


@dataclass(frozen=True)
class EpisodeRecord:
    """What the index keeps of one written episode: its entry and per-dimension ranges, (D,)
    each. Small and picklable, so a worker process can hand it to the writer that indexes."""

    entry: dict
    proprio_range: tuple[np.ndarray, np.ndarray]  # (low, high)
    action_range: tuple[np.ndarray, np.ndarray]


class EpisodeSink:
    """Memory-mapped arrays of one episode being written. Use as a context manager: leaving it
    with an exception deletes the partial episode, so no half-written episode is ever indexed."""

    def __init__(
        self, writer: TrainingSetWriter, name: str, length: int, instruction: str, source: str
    ) -> None:
        self._writer, self.name, self.length = writer, name, length
        self.instruction, self.source = instruction, source
        self.folder = writer.root / 'episodes' / episode_dir_name(name)
        if self.folder.exists():
            raise EpisodeError(
                f'{name}: episode folder {self.folder} exists already (two '
                'episodes with the same name?)'
            )
        self.folder.mkdir(parents=True)
        h, w = writer.image_size
        self.proprio = self._array('proprio', (length, robot.ACTION_DIM), np.float32)
        self.actions = self._array('actions', (length, robot.ACTION_DIM), np.float32)
        self.proprio[:] = np.nan  # so an unfilled row is caught in commit()
        self.actions[:] = np.nan
        self.images = {
            cam: self._array(cam, (length, h, w, 3), np.uint8) for cam in writer.cameras
        }
        self._written = {cam: np.zeros(length, dtype=bool) for cam in writer.cameras}

    def _array(self, stem: str, shape: tuple[int, ...], dtype: type) -> np.memmap:
        return np.lib.format.open_memmap(
            self.folder / f'{stem}.npy', mode='w+', dtype=dtype, shape=shape
        )

    def put_image(self, camera: str, ticks: np.ndarray, frame: np.ndarray) -> None:
        """Store one (H, W, 3) uint8 frame (already resized) at every tick in `ticks`."""
        self.images[camera][ticks] = frame
        self._written[camera][ticks] = True

    def __enter__(self) -> EpisodeSink:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self._commit()
        else:
            self._discard()

    def _close_maps(self) -> None:
        # Unmapping leaves the written pages to the kernel's write-back, which any reader
        # sees; an msync per episode (np.memmap.flush) cost 12 % of a fast conversion.
        for array in (self.proprio, self.actions, *self.images.values()):
            array._mmap.close()

    def _discard(self) -> None:
        self._close_maps()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _commit(self) -> None:
        try:
            for what, array in (('proprio', self.proprio), ('actions', self.actions)):
                if not np.all(np.isfinite(array)):
                    rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
                    raise EpisodeError(
                        f'{self.name}: {what} has non-finite values at ticks {rows[:10].tolist()}'
                    )
            for cam, written in self._written.items():
                if not written.all():
                    raise EpisodeError(
                        f'{self.name}: no {cam} frame for ticks '
                        f'{np.flatnonzero(~written)[:10].tolist()}'
                    )
        except EpisodeError:
            self._discard()
            raise
        record = EpisodeRecord(
            {
                'name': self.name,
                'folder': self.folder.name,
                'source': self.source,
                'length': self.length,
                'instruction': self.instruction,
            },
            (np.asarray(self.proprio.min(axis=0)), np.asarray(self.proprio.max(axis=0))),
            (np.asarray(self.actions.min(axis=0)), np.asarray(self.actions.max(axis=0))),
        )
        self._close_maps()
        self._writer.add(record)


class TrainingSetWriter:
    """Collects episodes into `root`; `close()` writes the index with the statistics."""

    def __init__(
        self,
        root: Path,
        image_size: tuple[int, int],
        chunk_size: int = robot.CHUNK_SIZE,
        cameras: tuple[str, ...] = robot.CAMERAS,
        overwrite: bool = False,
    ) -> None:
        self.root = empty_output_folder(root, overwrite)
        self._layout(image_size, chunk_size, cameras)

    @classmethod
    def attached(
        cls,
        root: Path,
        image_size: tuple[int, int],
        chunk_size: int = robot.CHUNK_SIZE,
        cameras: tuple[str, ...] = robot.CAMERAS,
    ) -> TrainingSetWriter:
        """A writer of episodes into the folder another writer prepared and will index (a
        worker process's side): its `records` go to that writer's `add`; never `close` it."""
        writer = cls.__new__(cls)
        writer.root = Path(root)
        writer._layout(image_size, chunk_size, cameras)
        return writer

    def _layout(
        self, image_size: tuple[int, int], chunk_size: int, cameras: tuple[str, ...]
    ) -> None:
        self.image_size, self.chunk_size, self.cameras = tuple(image_size), chunk_size, cameras
        self.episodes: list[dict] = []
        self.records: list[EpisodeRecord] = []
        self.instructions: list[str] = []
        self._proprio_stats, self._action_stats = RunningMinMax(), RunningMinMax()

    def episode(self, name: str, length: int, instruction: str, source: str) -> EpisodeSink:
        if length < self.chunk_size:
            raise EpisodeError(
                f'{name}: {length} ticks on the control grid, fewer than one '
                f'action chunk ({self.chunk_size}); record a longer episode'
            )
        if not instruction.strip():
            raise EpisodeError(
                f'{name}: no instruction; record one (metadata or topic) or pass --instruction'
            )
        return EpisodeSink(self, name, length, instruction.strip(), source)

    def add(self, record: EpisodeRecord) -> None:
        """Index an episode written into `root` (here, or by a worker's `attached` writer)."""
        self.records.append(record)
        self._proprio_stats.update(np.stack(record.proprio_range))
        self._action_stats.update(np.stack(record.action_range))
        if record.entry['instruction'] not in self.instructions:
            self.instructions.append(record.entry['instruction'])
        self.episodes.append(record.entry)

    def close(self) -> dict:
        """Write index.json (atomically) and return it; refuses an empty training set."""
        if not self.episodes:
            raise EpisodeError(
                f'no episode could be converted into {self.root}; see the messages above'
            )
        index = {
            'format': FORMAT,
            'version': VERSION,
            'image_size': list(self.image_size),
            'cameras': list(self.cameras),
            'control_rate_hz': robot.CONTROL_RATE_HZ,
            'chunk_size': self.chunk_size,
            'joint_names': robot.action_joint_names(),
            'episodes': self.episodes,
            'instructions': self.instructions,
            'stats': NormStats(
                self._action_stats.low,
                self._action_stats.high,
                self._proprio_stats.low,
                self._proprio_stats.high,
            ).to_dict(),
        }
        tmp = self.root / (INDEX + '.tmp')
        tmp.write_text(json.dumps(index, indent=1) + '\n')
        os.replace(tmp, self.root / INDEX)
        return index


@dataclass
class TrainingSet:
    """Read side: random access to samples (images at tick t, proprio at t, actions t..t+K-1)."""

    root: Path
    episode_names: list[str] | None = None  # a subset (e.g. the train or val split)
    index: dict = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        path = self.root / INDEX
        if not path.is_file():
            raise FileNotFoundError(
                f'{path} not found: is {self.root} a training set written by `convert`?'
            )
        self.index = json.loads(path.read_text())
        if self.index.get('format') != FORMAT or self.index.get('version') != VERSION:
            raise ValueError(f'{path}: not a {FORMAT} v{VERSION} index')
        by_name = {e['name']: e for e in self.index['episodes']}
        names = list(by_name) if self.episode_names is None else self.episode_names
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise KeyError(f'episodes {unknown} are not in {path}')
        self.episodes = [by_name[n] for n in names]
        k = self.chunk_size
        # (episode number, start tick) of every sample, in order.
        self._starts = (
            np.concatenate(
                [
                    np.stack([np.full(e['length'] - k + 1, i), np.arange(e['length'] - k + 1)], 1)
                    for i, e in enumerate(self.episodes)
                ]
            )
            if self.episodes
            else np.zeros((0, 2), int)
        )
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    @property
    def chunk_size(self) -> int:
        return int(self.index['chunk_size'])

    @property
    def cameras(self) -> list[str]:
        return list(self.index['cameras'])

    @property
    def instructions(self) -> list[str]:
        return list(self.index['instructions'])

    @property
    def stats(self) -> NormStats:
        """Min/max of every episode in the set (not only this subset): what the model uses."""
        return NormStats.from_dict(self.index['stats'])

    def __len__(self) -> int:
        return len(self._starts)

    def sample_ticks(self) -> np.ndarray:
        """The tick (within its episode) at which each sample starts, (len(self),)."""
        return self._starts[:, 1].copy()

    def episode_arrays(self, number: int) -> dict[str, np.ndarray]:
        """Memory-mapped arrays of episode `number` (opened once per process)."""
        if number not in self._arrays:
            folder = self.root / 'episodes' / self.episodes[number]['folder']
            self._arrays[number] = {
                stem: np.load(folder / f'{stem}.npy', mmap_mode='r')
                for stem in ('proprio', 'actions', *self.cameras)
            }
        return self._arrays[number]

    def sample(self, i: int) -> dict:
        """{'images': {camera: (H, W, 3) uint8}, 'proprio': (14,), 'actions': (K, 14),
        'instruction': str, 'episode': name, 'tick': t}"""
        number, t = (int(v) for v in self._starts[i])
        arrays = self.episode_arrays(number)
        return {
            'images': {cam: np.array(arrays[cam][t]) for cam in self.cameras},
            'proprio': np.array(arrays['proprio'][t]),
            'actions': np.array(arrays['actions'][t : t + self.chunk_size]),
            'instruction': self.episodes[number]['instruction'],
            'episode': self.episodes[number]['name'],
            'tick': t,
        }
