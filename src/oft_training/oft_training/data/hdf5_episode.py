"""One ALOHA HDF5 episode (the layout of ALOHA's `record_episodes.py`) -> one episode.

    /observations/qpos            (T, 14) follower joints, grippers already normalised 0..1
    /observations/images/<cam>    (T, H, W, 3) uint8, or JPEG bytes zero-padded to (T, L)
    /compress_len                 (num_cams, T) JPEG byte counts, rows in recording order
    /action                       (T, 14) leader targets, grippers normalised 0..1
    attrs: compress (bool), optionally instruction

ALOHA records at 50 Hz; the control grid is 25 Hz, so every `source_rate / 25`-th step is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np

from oft_policy_node import robot
from oft_training.data.training_set import EpisodeError, TrainingSetWriter

# Camera order of ALOHA's task configs; `compress_len` rows follow the recording's order.
ALOHA_CAMERA_ORDER = ('cam_high', 'cam_low', 'cam_left_wrist', 'cam_right_wrist')
# The camera datasets of each HDF5 writer: (the model's cameras robot.CAMERAS, in order; the
# order of /compress_len's rows). tonyzhaozh/aloha, Interbotix/aloha main and the authors'
# data name them cam_*; Interbotix/aloha 2.0 names them after config/robot/*.yaml's
# camera_instances and writes /compress_len in that list's order (scripts/record_episodes.py:
# camera_names), aloha_stationary.yaml: high, low, wrist_right, wrist_left.
HDF5_CAMERA_NAMES = {
    'aloha': (robot.CAMERAS, ALOHA_CAMERA_ORDER),
    'aloha_2_0': (
        ('camera_high', 'camera_wrist_left', 'camera_wrist_right'),
        ('camera_high', 'camera_low', 'camera_wrist_right', 'camera_wrist_left'),
    ),
}
JPEG_END = b'\xff\xd9'


@dataclass(frozen=True)
class Hdf5Options:
    source_rate_hz: float | None = None  # the files do not say (record_episodes.py: 50 Hz)
    rate_hz: float = robot.CONTROL_RATE_HZ
    # the file's datasets of the model's cameras, in order; None: the first of
    # HDF5_CAMERA_NAMES the file has
    cameras: tuple[str, ...] | None = None
    recorded_camera_order: tuple[str, ...] | None = None  # None: the writer's order
    instruction: str | None = None

    def stride(self) -> int:
        if self.source_rate_hz is None:
            raise ValueError(
                "the HDF5 episodes do not record their rate (ALOHA's and Trossen's "
                'record_episodes.py write only the attributes sim and compress): pass '
                "--hdf5-rate, 50 for their recordings (DT 0.02), 25 for the authors' "
                'openvla-oft ALOHA data (DT 0.04)'
            )
        ratio = self.source_rate_hz / self.rate_hz
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f'HDF5 rate {self.source_rate_hz} Hz is not a whole multiple of the '
                f'control rate {self.rate_hz} Hz; set --hdf5-rate'
            )
        return round(ratio)


def is_hdf5(path: Path) -> bool:
    return path.is_file() and path.suffix in ('.hdf5', '.h5')


def convert_hdf5(
    path: Path,
    writer: TrainingSetWriter,
    options: Hdf5Options,
    resize: Callable[[np.ndarray], np.ndarray],
    name: str | None = None,
) -> tuple[int, float, str]:
    """Write the file as one episode; returns (ticks, duration s, instruction)."""
    name = name or path.stem
    stride = options.stride()
    try:
        file = h5py.File(path, 'r')
    except OSError as exc:
        raise EpisodeError(f'{name}: cannot open HDF5 file {path}: {exc}') from exc
    with file:
        qpos = _matrix(file, '/observations/qpos', name)
        action = _matrix(file, '/action', name)
        if len(qpos) != len(action):
            raise EpisodeError(
                f'{name}: /observations/qpos has {len(qpos)} steps but /action {len(action)}'
            )
        steps = np.arange(0, len(qpos), stride)  # (T,) source steps on the control grid
        images = file.get('/observations/images')
        cameras, order = _camera_names(images, options, name, path)
        compressed = any(images[c].ndim == 2 for c in cameras)
        lengths = _compress_lengths(file, images, cameras, order, name) if compressed else {}
        instruction = options.instruction or _attr_text(file, 'instruction')
        source = f'hdf5:{path}'
        with writer.episode(name, len(steps), instruction, source) as sink:
            sink.proprio[:] = qpos[steps]
            sink.actions[:] = action[steps]
            for model_camera, cam in zip(robot.CAMERAS, cameras, strict=True):
                data = images[cam]
                if len(data) != len(qpos):
                    raise EpisodeError(
                        f'{name}: {cam} has {len(data)} frames for {len(qpos)} steps'
                    )
                for tick, step in enumerate(steps):
                    frame = (
                        _decode_jpeg(data[step], int(lengths[cam][step]), name, cam, step)
                        if cam in lengths
                        else _raw_frame(data[step], name, cam)
                    )
                    sink.put_image(model_camera, np.array([tick]), resize(frame))
    return len(steps), (len(steps) - 1) / options.rate_hz, instruction


def _matrix(file: h5py.File, key: str, name: str) -> np.ndarray:
    if key not in file:
        raise EpisodeError(f'{name}: no {key} dataset (not an ALOHA episode?)')
    values = np.asarray(file[key], dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != robot.ACTION_DIM:
        raise EpisodeError(
            f'{name}: {key} has shape {values.shape}, expected (T, {robot.ACTION_DIM})'
        )
    if not np.all(np.isfinite(values)):
        raise EpisodeError(f'{name}: {key} has non-finite values')
    return values


def _attr_text(file: h5py.File, key: str) -> str:
    value = file.attrs.get(key, '')
    return value.decode() if isinstance(value, bytes) else str(value)


def _camera_names(
    images: h5py.Group | None, options: Hdf5Options, name: str, path: Path
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The file's datasets of the model's cameras and the writer's camera order."""
    have = sorted(images) if images is not None else []
    known = list(HDF5_CAMERA_NAMES.values())
    if options.cameras:
        known = [(options.cameras, ALOHA_CAMERA_ORDER)]
    for cameras, order in known:
        if all(c in have for c in cameras):
            order = options.recorded_camera_order or tuple(c for c in order if c in have)
            return tuple(cameras), order
    raise EpisodeError(
        f'{name}: no /observations/images datasets {[c for c, _ in known]} in {path} (has '
        f'{have}); name them with --hdf5-cameras HIGH LEFT_WRIST RIGHT_WRIST'
    )


def _compress_lengths(
    file: h5py.File,
    images: h5py.Group,
    cameras: tuple[str, ...],
    order: tuple[str, ...],
    name: str,
) -> dict[str, np.ndarray]:
    """Camera -> (T,) JPEG byte counts, from /compress_len's rows in the recording's order."""
    if '/compress_len' not in file:
        raise EpisodeError(f'{name}: JPEG images but no /compress_len dataset')
    table = np.asarray(file['/compress_len'])  # (num_cams, T)
    unknown = sorted(set(images) - set(order))
    if unknown or len(order) != len(table):
        raise EpisodeError(
            f'{name}: cannot tell which /compress_len row ({len(table)} rows) '
            f"belongs to which camera {sorted(images)}; pass the recording's "
            'camera order with --hdf5-camera-order'
        )
    return {cam: table[order.index(cam)] for cam in cameras if images[cam].ndim == 2}


def _decode_jpeg(padded: np.ndarray, length: int, name: str, cam: str, step: int) -> np.ndarray:
    data = padded[:length]
    if length <= len(JPEG_END) or length > len(padded) or bytes(data[-2:]) != JPEG_END:
        raise EpisodeError(
            f'{name}: {cam} step {step}: compress_len {length} does not end a '
            'JPEG image (truncated file or wrong --hdf5-camera-order?)'
        )
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise EpisodeError(f'{name}: {cam} step {step}: JPEG data does not decode')
    # ALOHA encodes the RGB arrays it records with cv2.imencode as they are: bytes decode back
    # to that same channel order, so no colour swap here.
    return bgr


def _raw_frame(frame: np.ndarray, name: str, cam: str) -> np.ndarray:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise EpisodeError(
            f'{name}: {cam} frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}'
        )
    return frame
