"""export: recorded rosbag2 demos, or a training set, -> a LeRobotDataset v3.0 folder.

    export demos/put_x_into_pot --out lerobot/pot        # bags: 25 Hz, cameras as recorded
    export datasets/pot --out lerobot/pot_224            # a training set, at its image size
    export demos/ --out lerobot/pot --image-size 240 320 --vcodec h264

Bags go onto the 25 Hz control grid exactly as `convert` puts them (the same options), so the
dataset's fps is 25 and every proprio and action value is the one `convert` would store. The
folder is what LeRobot's recorder writes (see oft_training.data.lerobot_writer): load it with
`LeRobotDataset('local/pot', root='lerobot/pot')`, push it with LeRobot's tools, or convert
it back with `convert --lerobot lerobot/pot`. Videos are AV1 (SVT-AV1, LeRobot's default) or
H.264, a key frame every 2 frames, CRF 30. Bad bags are skipped with a message naming them.
(In a shell, `export` is a builtin: run `python -m oft_training.export` or `ros2 run
oft_training export`.)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from oft_policy_node import robot
from oft_training.convert import find_inputs, make_jobs
from oft_training.data import topics
from oft_training.data.frames import to_model_size
from oft_training.data.lerobot_episode import LeRobotOptions
from oft_training.data.lerobot_writer import LeRobotWriter
from oft_training.data.rosbag_episode import (
    TIME_SOURCES,
    BagOptions,
    convert_bag,
    first_frame_size,
)
from oft_training.data.training_set import INDEX, EpisodeError, TrainingSet, TrainingSetWriter
from oft_training.data.video import VIDEO_CODECS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='export', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        'inputs',
        nargs='+',
        type=Path,
        help='bag folders, .mcap/.db3 files, folders of them, '
        'or one training set folder (written by convert)',
    )
    parser.add_argument('--out', type=Path, required=True, help='LeRobotDataset folder to write')
    parser.add_argument('--overwrite', action='store_true', help='replace a non-empty --out')
    parser.add_argument(
        '--vcodec',
        default='libsvtav1',
        choices=VIDEO_CODECS,
        help="video codec: AV1 (LeRobot's default) or H.264 (default: %(default)s)",
    )
    parser.add_argument(
        '--image-size',
        nargs=2,
        type=int,
        metavar=('H', 'W'),
        help="resize the bags' frames to H x W (default: as recorded)",
    )
    parser.add_argument(
        '--instruction', help='instruction for every episode (overrides the bag metadata)'
    )
    parser.add_argument(
        '--action-source',
        default='sim',
        choices=topics.ACTION_SOURCES,
        help='which recorded commands are the actions, as for convert (default: %(default)s)',
    )
    parser.add_argument(
        '--time-source',
        default='header',
        choices=TIME_SOURCES,
        help='header stamps or bag receive time, as for convert (default: %(default)s)',
    )
    return parser.parse_args(argv)


def export_training_set(root: Path, args: argparse.Namespace) -> LeRobotWriter:
    """Every episode of a training set, at its image size and rate."""
    data = TrainingSet(root)
    writer = LeRobotWriter(
        args.out,
        round(data.index['control_rate_hz']),
        tuple(data.index['image_size']),
        tuple(data.cameras),
        args.vcodec,
        overwrite=args.overwrite,
    )
    for number, episode in enumerate(tqdm(data.episodes, desc='exporting', unit='episode')):
        arrays = data.episode_arrays(number)
        writer.add_episode(
            arrays['proprio'],
            arrays['actions'],
            {cam: arrays[cam] for cam in data.cameras},
            args.instruction or episode['instruction'],
        )
    return writer


def export_bags(inputs: list[Path], args: argparse.Namespace) -> LeRobotWriter:
    """Each bag through `convert_bag` into a staging training set (one episode at a time, next
    to --out), then into the dataset."""
    jobs = [
        job for job in make_jobs(find_inputs(inputs), LeRobotOptions()) if job.kind == 'rosbag2'
    ]
    if not jobs:
        raise FileNotFoundError('no rosbag2 folders or .mcap/.db3 files in the inputs')
    options = BagOptions(
        action_source=args.action_source,
        time_source=args.time_source,
        instruction=args.instruction,
    )
    size = tuple(args.image_size) if args.image_size else first_frame_size(jobs[0].path, options)
    writer = LeRobotWriter(
        args.out, round(robot.CONTROL_RATE_HZ), size, vcodec=args.vcodec, overwrite=args.overwrite
    )
    resize = partial(to_model_size, size=size)
    with tempfile.TemporaryDirectory(prefix='.export-', dir=writer.root.parent) as staging:
        for job in tqdm(jobs, desc='exporting', unit='episode'):
            episode = TrainingSetWriter(
                Path(staging) / job.name, size, chunk_size=1, overwrite=True
            )
            try:
                report = convert_bag(job.path, episode, options, resize, job.name)
            except EpisodeError as exc:
                tqdm.write(f'warning: skipped episode {exc}')
                continue
            for warning in report.warnings:
                tqdm.write(f'warning: {warning}')
            folder = episode.root / 'episodes' / episode.records[0].entry['folder']
            arrays = {
                stem: np.load(folder / f'{stem}.npy', mmap_mode='r')
                for stem in ('proprio', 'actions', *robot.CAMERAS)
            }
            writer.add_episode(
                arrays['proprio'],
                arrays['actions'],
                {cam: arrays[cam] for cam in robot.CAMERAS},
                report.instruction,
            )
            del arrays
            shutil.rmtree(episode.root)
    return writer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sets = [p for p in args.inputs if (p / INDEX).is_file()]
    try:
        if sets and len(args.inputs) > 1:
            raise ValueError('give one training set, or bags, not both')
        writer = export_training_set(sets[0], args) if sets else export_bags(args.inputs, args)
        info = writer.close()
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f'export: error: {exc}', file=sys.stderr)
        return 2
    video = info['features'][f'observation.images.{writer.cameras[0]}']['info']
    print(
        f'wrote {args.out}: LeRobotDataset v3.0, {info["total_episodes"]} episodes, '
        f'{info["total_frames"]} frames at {info["fps"]} fps, {info["total_tasks"]} task(s), '
        f'{len(writer.cameras)} cameras {video["video.width"]}x{video["video.height"]} '
        f'{video["video.codec"]}\n'
        f"load it in LeRobot: LeRobotDataset('local/{args.out.name}', root='{args.out}')"
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
