"""convert: recorded demos (rosbag2 MCAP/sqlite3 episodes, ALOHA HDF5 files, LeRobotDataset
folders v2.0/v2.1/v3.0) -> a training set.

    convert --bags demos/ --out datasets/pot
    convert --hdf5 aloha_demos/ --instruction "put green pepper into pot" --out datasets/pot
    convert --lerobot hub/aloha_static_cups_open --out datasets/cups
    convert demos/episode_0 demos/episode_1.mcap aloha/episode_3.hdf5 --out datasets/mixed

Each bag or HDF5 file is one episode, a LeRobotDataset holds many. Episodes are resampled onto
the 25 Hz control grid, frames resized to the model's input size and written with per-dimension
min/max statistics and the instruction list (see oft_training.data.training_set for the layout),
several episodes at once (--workers). A bad episode (corrupt or truncated file or video, missing
topic, cameras out of sync, frames missing, shorter than one action chunk) is skipped with a
message naming it; `--strict` stops at the first one instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from oft_policy_node import robot
from oft_policy_node.model.config import PRESETS, get_preset
from oft_training.data import topics
from oft_training.data.frames import to_model_size
from oft_training.data.hdf5_episode import Hdf5Options, convert_hdf5, is_hdf5
from oft_training.data.lerobot_episode import (
    DEFAULT_CAMERA_KEYS,
    DatasetPlan,
    LeRobotOptions,
    convert_lerobot_episode,
    plan_dataset,
)
from oft_training.data.lerobot_format import LeRobotSource, is_lerobot_dataset
from oft_training.data.rosbag_episode import TIME_SOURCES, BagOptions, convert_bag, is_bag
from oft_training.data.training_set import EpisodeError, EpisodeRecord, TrainingSetWriter


@dataclass(frozen=True)
class Job:
    """One episode to convert: a bag, an HDF5 file, or episode `index` of a LeRobotDataset."""

    kind: str
    path: Path
    name: str = ''
    index: int | None = None


@dataclass
class Outcome:
    name: str
    kind: str
    ticks: int = 0
    seconds: float = 0.0
    instruction: str = ''
    error: str = ''
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was taken from where
    records: list[EpisodeRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    """What every episode's conversion needs; handed to each worker process once."""

    root: Path
    image_size: tuple[int, int]
    chunk_size: int
    bag: BagOptions
    hdf5: Hdf5Options
    lerobot: LeRobotOptions


def find_inputs(paths: list[Path]) -> list[tuple[str, Path]]:
    """(kind, path) of every bag, HDF5 file and LeRobotDataset at or below `paths`, sorted."""
    found: list[tuple[str, Path]] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f'input {path} does not exist')
        if is_bag(path):
            found.append(('rosbag2', path))
        elif is_hdf5(path):
            found.append(('hdf5', path))
        elif is_lerobot_dataset(path):
            found.append(('lerobot', path))
        elif path.is_dir():
            found += find_inputs(sorted(path.iterdir()))
    return found


@cache
def lerobot_dataset(root: Path, options: LeRobotOptions) -> tuple[LeRobotSource, DatasetPlan]:
    """The dataset's metadata and plan, read once per process (workers forked after the main
    process read them inherit them)."""
    source = LeRobotSource(root)
    return source, plan_dataset(source, options)


def make_jobs(inputs: list[tuple[str, Path]], options: LeRobotOptions) -> list[Job]:
    """One job per episode; names unique across the inputs."""
    jobs = []
    for kind, path in inputs:
        if kind == 'lerobot':
            source, plan = lerobot_dataset(path, options)
            for warning in plan.warnings:
                print(f'warning: {warning}', file=sys.stderr)
            jobs += [
                Job(kind, path, f'{source.name}_ep{e.index:06d}', e.index) for e in source.episodes
            ]
        else:
            jobs.append(Job(kind, path))
    names = _unique_names([job.path for job in jobs if job.kind != 'lerobot'])
    unnamed = iter(names)
    return [job if job.name else Job(job.kind, job.path, next(unnamed)) for job in jobs]


_settings: Settings | None = None


def _start_worker(settings: Settings, threads: int) -> None:
    global _settings
    _settings = settings
    # Episodes run side by side, one per core: torch's own threads would only compete.
    torch.set_num_threads(threads)


def convert_job(job: Job) -> Outcome:
    """Convert one episode into the training set folder; an EpisodeError becomes the outcome's
    error, so one bad episode never stops the others."""
    settings = _settings
    writer = TrainingSetWriter.attached(settings.root, settings.image_size, settings.chunk_size)
    resize = partial(to_model_size, size=writer.image_size)
    outcome = Outcome(job.name, job.kind)
    try:
        if job.kind == 'rosbag2':
            report = convert_bag(job.path, writer, settings.bag, resize, job.name)
            outcome.ticks, outcome.seconds = report.ticks, report.duration_s
            outcome.instruction, outcome.warnings = report.instruction, report.warnings
            outcome.notes = [f'actions from {report.actions_from}']
        elif job.kind == 'hdf5':
            outcome.ticks, outcome.seconds, outcome.instruction = convert_hdf5(
                job.path, writer, settings.hdf5, resize, job.name
            )
        else:
            source, plan = lerobot_dataset(job.path, settings.lerobot)
            report = convert_lerobot_episode(
                source, job.index, plan, writer, settings.lerobot, resize, job.name
            )
            outcome.ticks, outcome.seconds = report.ticks, report.duration_s
            outcome.instruction, outcome.warnings = report.instruction, report.warnings
    except EpisodeError as exc:
        outcome.error = str(exc)
    outcome.records = writer.records
    return outcome


def run_jobs(jobs: list[Job], settings: Settings, workers: int) -> Iterator[Outcome]:
    """Outcomes in job order, from `workers` processes (forked: they inherit what the main
    process has read) or from this one."""
    if workers <= 1:
        _start_worker(settings, torch.get_num_threads())
        yield from map(convert_job, jobs)
        return
    with ProcessPoolExecutor(
        workers, mp_context=get_context('fork'), initializer=_start_worker, initargs=(settings, 1)
    ) as pool:
        try:
            yield from pool.map(convert_job, jobs)
        finally:
            pool.shutdown(cancel_futures=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='convert', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        'inputs',
        nargs='*',
        type=Path,
        help='bag folders, .mcap/.db3 files, .hdf5 files, LeRobotDataset folders, or '
        'folders of them',
    )
    parser.add_argument('--bags', nargs='+', type=Path, default=[], help='more rosbag2 inputs')
    parser.add_argument('--hdf5', nargs='+', type=Path, default=[], help='more HDF5 inputs')
    parser.add_argument(
        '--lerobot',
        nargs='+',
        type=Path,
        default=[],
        help='more LeRobotDataset folders (with meta/info.json)',
    )
    parser.add_argument('--out', type=Path, required=True, help='training set folder to write')
    parser.add_argument('--overwrite', action='store_true', help='replace a non-empty --out')
    parser.add_argument(
        '--preset',
        default='openvla-7b',
        choices=sorted(PRESETS),
        help='model preset whose image size and chunk size K the set is built '
        'for (default: %(default)s)',
    )
    parser.add_argument(
        '--instruction',
        help='instruction for every episode (overrides the '
        f'bag metadata and {robot.INSTRUCTION_TOPIC}; needed for HDF5 files '
        'without an "instruction" attribute)',
    )
    parser.add_argument(
        '--action-source',
        default='auto',
        choices=topics.ACTION_SOURCES,
        help="which recorded topics are the actions: leader = the leader arms' joint_states "
        "(the authors' definition: what the operator commanded), interbotix = "
        'JointGroupCommand + JointSingleCommand, sim = the executor / scripted demonstrator '
        'commands (JointState on commands/joint_positions); auto (default) takes the first '
        'of these the bag has and says which',
    )
    parser.add_argument(
        '--camera-topic',
        action='append',
        default=[],
        metavar='CAM=TOPIC',
        help='the raw image topic of a camera in the bags, e.g. '
        'cam_high=/top/image_raw (<topic>/compressed is read too); default: the first '
        'camera set the bag has (' + ', '.join(robot.CAMERA_SETS) + ')',
    )
    parser.add_argument(
        '--leader-gripper',
        nargs=2,
        type=float,
        metavar=('CLOSED', 'OPEN'),
        default=(topics.LEADER_GRIPPER_CLOSED, topics.LEADER_GRIPPER_OPEN),
        help='leader gripper joint angle (rad) closed and open (default: %(default)s)',
    )
    parser.add_argument(
        '--time-source',
        default='header',
        choices=TIME_SOURCES,
        help='header stamps (sim time in simulation) or bag receive time',
    )
    parser.add_argument(
        '--joint-tolerance',
        type=float,
        default=0.1,
        metavar='S',
        help='max age of a joint state / command at a tick (default: %(default)s s)',
    )
    parser.add_argument(
        '--image-tolerance',
        type=float,
        default=0.1,
        metavar='S',
        help='max age of a camera frame at a tick (default: %(default)s s)',
    )
    parser.add_argument(
        '--camera-sync',
        type=float,
        default=0.05,
        metavar='S',
        help='max stamp spread of the 3 frames of one tick (default: %(default)s s)',
    )
    parser.add_argument(
        '--hdf5-rate',
        type=float,
        metavar='HZ',
        help='recording rate of the HDF5 episodes, which do not record it: 50 for '
        "ALOHA's and Trossen's record_episodes.py (DT 0.02), 25 for the authors' "
        'openvla-oft ALOHA data (DT 0.04); required with HDF5 inputs',
    )
    parser.add_argument(
        '--hdf5-cameras',
        nargs=3,
        metavar=('HIGH', 'LEFT_WRIST', 'RIGHT_WRIST'),
        help="the HDF5 camera datasets of the model's cameras (default: cam_high "
        "cam_left_wrist cam_right_wrist, or Interbotix/aloha 2.0's camera_high "
        'camera_wrist_left camera_wrist_right, whichever the file has)',
    )
    parser.add_argument(
        '--hdf5-camera-order',
        nargs='+',
        metavar='CAM',
        help="camera order of /compress_len rows (default: ALOHA's "
        'cam_high cam_low cam_left_wrist cam_right_wrist, those present)',
    )
    parser.add_argument(
        '--lerobot-state',
        default=LeRobotOptions.state_key,
        metavar='KEY',
        help='LeRobot feature of the 14 follower joints (default: %(default)s)',
    )
    parser.add_argument(
        '--lerobot-action',
        default=LeRobotOptions.action_key,
        metavar='KEY',
        help='LeRobot feature of the 14 joint targets (default: %(default)s)',
    )
    parser.add_argument(
        '--lerobot-camera',
        action='append',
        default=[],
        metavar='CAM=KEY',
        help='LeRobot feature of a camera, e.g. cam_high=observation.images.top (default: '
        'observation.images.<cam> for ' + ', '.join(robot.CAMERAS) + ')',
    )
    parser.add_argument(
        '--lerobot-tolerance',
        type=float,
        default=LeRobotOptions.tolerance_s,
        metavar='S',
        help="max distance of a video frame from a row's timestamp, and of consecutive "
        "timestamps from 1 / fps (LeRobot's own default: %(default)s s)",
    )
    parser.add_argument(
        '--workers',
        type=int,
        default=0,
        metavar='N',
        help='episodes converted at once, one process each (default: one per core, at most '
        'one per episode)',
    )
    parser.add_argument(
        '--strict',
        action='store_true',
        help='stop at the first bad episode instead of skipping it',
    )
    args = parser.parse_args(argv)
    if not (args.inputs or args.bags or args.hdf5 or args.lerobot):
        parser.error('no inputs: give bag / HDF5 / LeRobotDataset paths or folders (see --help)')
    if args.workers < 0:
        parser.error(f'--workers must be >= 0, got {args.workers}')
    try:
        args.lerobot_options = LeRobotOptions(
            state_key=args.lerobot_state,
            action_key=args.lerobot_action,
            camera_keys=_camera_keys(args.lerobot_camera),
            tolerance_s=args.lerobot_tolerance,
            instruction=args.instruction,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _pairs(pairs: list[str], cameras: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    """CAM=VALUE options as (camera, value), CAM one of `cameras`."""
    parsed = []
    for pair in pairs:
        cam, sep, value = pair.partition('=')
        if not sep or cam not in cameras or not value:
            raise ValueError(f'{option} {pair!r}: give CAM=VALUE with CAM one of {list(cameras)}')
        parsed.append((cam, value))
    return parsed


def _camera_keys(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    keys = dict(DEFAULT_CAMERA_KEYS)
    keys.update(_pairs(pairs, tuple(keys), '--lerobot-camera'))
    return tuple(keys.items())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = get_preset(args.preset)
    try:
        inputs = find_inputs([*args.inputs, *args.bags, *args.hdf5, *args.lerobot])
        jobs = make_jobs(inputs, args.lerobot_options)
        writer = TrainingSetWriter(
            args.out,
            (config.image_size, config.image_size),
            chunk_size=config.chunk_size,
            overwrite=args.overwrite,
        )
        settings = Settings(
            writer.root,
            writer.image_size,
            writer.chunk_size,
            BagOptions(
                action_source=args.action_source,
                leader_gripper=tuple(args.leader_gripper),
                joint_tolerance_s=args.joint_tolerance,
                image_tolerance_s=args.image_tolerance,
                camera_sync_s=args.camera_sync,
                time_source=args.time_source,
                instruction=args.instruction,
                camera_topics=dict(_pairs(args.camera_topic, robot.CAMERAS, '--camera-topic')),
            ),
            Hdf5Options(
                source_rate_hz=args.hdf5_rate,
                instruction=args.instruction,
                recorded_camera_order=tuple(args.hdf5_camera_order or ()) or None,
                cameras=tuple(args.hdf5_cameras or ()) or None,
            ),
            args.lerobot_options,
        )
        if any(job.kind == 'hdf5' for job in jobs):
            settings.hdf5.stride()
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # FormatError included
        print(f'convert: error: {exc}', file=sys.stderr)
        return 2
    if not jobs:
        print(
            'convert: error: no rosbag2 folders, .mcap/.db3 or .hdf5 files or LeRobotDataset '
            'folders found in the inputs',
            file=sys.stderr,
        )
        return 2
    workers = min(args.workers or os.cpu_count() or 1, len(jobs))
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    progress = tqdm(total=len(jobs), desc=f'converting ({workers} at once)', unit='episode')
    for outcome in run_jobs(jobs, settings, workers):
        progress.update()
        outcomes.append(outcome)
        for warning in outcome.warnings:
            tqdm.write(f'warning: {warning}')
        for note in outcome.notes:
            tqdm.write(f'{outcome.name}: {note}')
        for record in outcome.records:
            writer.add(record)
        if outcome.error:
            if args.strict:
                progress.close()
                print(f'convert: error: {outcome.error}', file=sys.stderr)
                return 1
            tqdm.write(f'warning: skipped episode {outcome.error}')
    progress.close()
    try:
        index = writer.close()
    except EpisodeError as exc:
        print_summary(outcomes, time.perf_counter() - started, writer.chunk_size)
        print(f'convert: error: {exc}', file=sys.stderr)
        return 1
    print_summary(outcomes, time.perf_counter() - started, writer.chunk_size)
    print(
        f'wrote {args.out}: {len(index["episodes"])} episodes, '
        f'{len(index["instructions"])} instruction(s), image size '
        f'{index["image_size"][0]}x{index["image_size"][1]}, K = {index["chunk_size"]}'
    )
    return 0


def _unique_names(paths: list[Path]) -> list[str]:
    """Episode names from file names; a repeated stem gets its parent folder prefixed."""
    stems = [p.stem for p in paths]
    return [f'{p.parent.name}_{p.stem}' if stems.count(p.stem) > 1 else p.stem for p in paths]


def print_summary(outcomes: list[Outcome], wall_s: float, chunk_size: int) -> None:
    rows = [('episode', 'kind', 'ticks', 'seconds', 'samples', 'instruction / problem')]
    for o in outcomes:
        rows.append(
            (
                o.name,
                o.kind,
                str(o.ticks) if not o.error else '-',
                f'{o.seconds:.1f}' if not o.error else '-',
                str(max(o.ticks - chunk_size + 1, 0)) if not o.error else '-',
                o.instruction if not o.error else f'SKIPPED: {o.error}',
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            '  '.join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + '  ' + row[-1]
        )
    converted = [o for o in outcomes if not o.error]
    recorded_s = sum(o.seconds for o in converted)
    print(
        f'{len(converted)} of {len(outcomes)} episodes converted, {recorded_s:.1f} s of demos '
        f'in {wall_s:.1f} s ({recorded_s / max(wall_s, 1e-9):.1f}x real time)'
    )
    if len(converted) < len(outcomes):
        print(f'warning: {len(outcomes) - len(converted)} episode(s) skipped, see above')


if __name__ == '__main__':
    sys.exit(main())
