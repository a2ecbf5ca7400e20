"""convert: recorded demos (rosbag2 MCAP/sqlite3 episodes, ALOHA HDF5 files) -> a training set.

    convert --bags demos/ --out datasets/pot
    convert --hdf5 aloha_demos/ --instruction "put green pepper into pot" --out datasets/pot
    convert demos/episode_0 demos/episode_1.mcap aloha/episode_3.hdf5 --out datasets/mixed

Each bag or HDF5 file is one episode. Episodes are resampled onto the 25 Hz control grid,
frames resized to the model's input size and written with per-dimension min/max statistics and
the instruction list (see oft_training.data.training_set for the layout). A bad episode (corrupt
or truncated file, missing topic, cameras out of sync, shorter than one action chunk) is skipped
with a message naming it; `--strict` stops at the first one instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tqdm import tqdm

from oft_policy_node import robot
from oft_policy_node.model.config import PRESETS, get_preset
from oft_training.data import topics
from oft_training.data.frames import to_model_size
from oft_training.data.hdf5_episode import Hdf5Options, convert_hdf5, is_hdf5
from oft_training.data.rosbag_episode import TIME_SOURCES, BagOptions, convert_bag, is_bag
from oft_training.data.training_set import EpisodeError, TrainingSetWriter


@dataclass
class Outcome:
    name: str
    kind: str
    ticks: int = 0
    seconds: float = 0.0
    instruction: str = ''
    error: str = ''


def find_episodes(paths: list[Path]) -> list[tuple[str, Path]]:
    """(kind, path) of every bag / HDF5 file at or below `paths`, in sorted order."""
    found: list[tuple[str, Path]] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f'input {path} does not exist')
        if is_bag(path):
            found.append(('rosbag2', path))
        elif is_hdf5(path):
            found.append(('hdf5', path))
        elif path.is_dir():
            found += find_episodes(sorted(path.iterdir()))
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='convert', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        'inputs',
        nargs='*',
        type=Path,
        help='bag folders, .mcap/.db3 files, .hdf5 files, or folders of them',
    )
    parser.add_argument('--bags', nargs='+', type=Path, default=[], help='more rosbag2 inputs')
    parser.add_argument('--hdf5', nargs='+', type=Path, default=[], help='more HDF5 inputs')
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
        default='sim',
        choices=topics.ACTION_SOURCES,
        help='which recorded commands are the actions: sim = the executor / '
        'scripted demonstrator commands (JointState on commands/'
        'joint_positions), interbotix = JointGroupCommand + '
        "JointSingleCommand, leader = the leader arms' joint_states "
        '(default: %(default)s)',
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
        default=50.0,
        metavar='HZ',
        help='recording rate of HDF5 episodes (default: %(default)s)',
    )
    parser.add_argument(
        '--hdf5-camera-order',
        nargs='+',
        metavar='CAM',
        help="camera order of /compress_len rows (default: ALOHA's "
        'cam_high cam_low cam_left_wrist cam_right_wrist, those present)',
    )
    parser.add_argument(
        '--strict',
        action='store_true',
        help='stop at the first bad episode instead of skipping it',
    )
    args = parser.parse_args(argv)
    if not (args.inputs or args.bags or args.hdf5):
        parser.error('no inputs: give bag / HDF5 paths or folders (see --help)')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = get_preset(args.preset)
    try:
        episodes = find_episodes([*args.inputs, *args.bags, *args.hdf5])
        writer = TrainingSetWriter(
            args.out,
            (config.image_size, config.image_size),
            chunk_size=config.chunk_size,
            overwrite=args.overwrite,
        )
        bag_options = BagOptions(
            action_source=args.action_source,
            leader_gripper=tuple(args.leader_gripper),
            joint_tolerance_s=args.joint_tolerance,
            image_tolerance_s=args.image_tolerance,
            camera_sync_s=args.camera_sync,
            time_source=args.time_source,
            instruction=args.instruction,
        )
        hdf5_options = Hdf5Options(
            source_rate_hz=args.hdf5_rate,
            instruction=args.instruction,
            recorded_camera_order=tuple(args.hdf5_camera_order or ()) or None,
        )
        hdf5_options.stride()
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f'convert: error: {exc}', file=sys.stderr)
        return 2
    if not episodes:
        print(
            'convert: error: no rosbag2 folders, .mcap/.db3 or .hdf5 files found in the inputs',
            file=sys.stderr,
        )
        return 2
    names = _unique_names([path for _, path in episodes])
    resize = partial(to_model_size, size=writer.image_size)
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    for (kind, path), name in zip(
        tqdm(episodes, desc='converting', unit='episode'), names, strict=True
    ):
        outcome = Outcome(name, kind)
        try:
            if kind == 'rosbag2':
                report = convert_bag(path, writer, bag_options, resize, name)
                outcome.ticks, outcome.seconds = report.ticks, report.duration_s
                outcome.instruction = report.instruction
                for warning in report.warnings:
                    tqdm.write(f'warning: {warning}')
            else:
                outcome.ticks, outcome.seconds, outcome.instruction = convert_hdf5(
                    path, writer, hdf5_options, resize, name
                )
        except EpisodeError as exc:
            if args.strict:
                print(f'convert: error: {exc}', file=sys.stderr)
                return 1
            outcome.error = str(exc)
            tqdm.write(f'warning: skipped episode {exc}')
        outcomes.append(outcome)
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
