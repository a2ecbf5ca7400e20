"""Conversion speed of `convert` as a multiple of real time: one 3-camera rosbag2 (MCAP) episode,
480x640 rgb8 at 30 Hz + joint states 50 Hz + commands 25 Hz, to the 224 px openvla-7b set."""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path

from oft_policy_node.model import get_preset
from oft_training.data.frames import to_model_size
from oft_training.data.rosbag_episode import BagOptions, convert_bag
from oft_training.data.training_set import TrainingSetWriter
from oft_training.testing import BagSpec, write_bag

SECONDS = 5.0


def run() -> dict:
    size = get_preset('openvla-7b').image_size
    with tempfile.TemporaryDirectory() as tmp:
        bag = write_bag(Path(tmp) / 'episode', BagSpec(seconds=SECONDS, image_shape=(480, 640)))
        bag_mb = sum(f.stat().st_size for f in bag.iterdir()) / 1e6
        writer = TrainingSetWriter(Path(tmp) / 'set', (size, size))
        started = time.perf_counter()
        report = convert_bag(bag, writer, BagOptions(), partial(to_model_size, size=(size, size)))
        writer.close()
        wall = time.perf_counter() - started
    return {
        'episode_s': round(report.duration_s, 3),
        'ticks': report.ticks,
        'bag_mb': round(bag_mb, 1),
        'image_size': size,
        'convert_wall_s': round(wall, 3),
        'real_time_factor': round(report.duration_s / wall, 2),
    }
