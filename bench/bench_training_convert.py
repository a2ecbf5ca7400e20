"""Conversion speed of `convert` as a multiple of real time, to the 224 px openvla-7b set:
4 rosbag2 (MCAP) episodes of 5 s, 3 cameras 480x640 rgb8 at 30 Hz + joint states 50 Hz +
commands 25 Hz; and a LeRobotDataset v3.0 of 2 episodes of 4 s as the hub's ALOHA sets are
(50 fps, 3 cameras 480x640 AV1, rendered by the MuJoCo ALOHA running its scripted demos). Each
with every core (episodes in parallel) and with one worker, side by side, each twice (the best
of the two counts: the first run can meet inputs the page cache let go). The inputs are in the
page cache, as right after recording: from disk, a raw-image bag is 83 MB per second of demo."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from aloha_sim.physics import AlohaSim
from aloha_sim.scenes import SCENES
from aloha_sim.scripted import ScriptedDemonstrator
from oft_policy_node import robot
from oft_training.convert import main as convert
from oft_training.data.lerobot_writer import LeRobotWriter
from oft_training.testing import BagSpec, write_bag

BAG_EPISODES, BAG_SECONDS = 4, 5.0
LEROBOT_EPISODES, LEROBOT_SECONDS, LEROBOT_FPS = 2, 4.0, 50


def timed_convert(inputs: list[str], out: Path, workers: int) -> float:
    args = [*inputs, '--out', str(out), '--preset', 'openvla-7b', '--overwrite']
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert convert([*args, '--workers', str(workers)]) == 0
    return time.perf_counter() - started


def side_by_side(inputs: list[str], out: Path, cores: int, recorded_s: float) -> dict:
    """1 worker and every core, alternating, twice; x real time of the best run of each."""
    walls: dict[int, list[float]] = {1: [], cores: []}
    for _ in range(2):
        for workers in walls:
            walls[workers].append(timed_convert(inputs, out, workers))
    best = {w: min(times) for w, times in walls.items()}
    return {
        'recorded_s': recorded_s,
        'wall_s': [round(t, 3) for t in walls[cores]],
        'wall_s_1_worker': [round(t, 3) for t in walls[1]],
        'real_time_factor': round(recorded_s / best[cores], 1),
        'real_time_factor_1_worker': round(recorded_s / best[1], 1),
        'parallel_speedup': round(best[1] / best[cores], 2),
    }


def joints_and_opening(sim: AlohaSim, arm: str) -> np.ndarray:
    """(7,) proprio of one arm: 6 joints and the finger opening 0..1."""
    position = sim.joint_state(arm).position  # robot.INTERBOTIX_JOINT_STATE_ORDER
    finger = position[robot.INTERBOTIX_JOINT_STATE_ORDER.index(robot.FINGER_JOINT)]
    return np.array([*position[:6], robot.finger_to_normalized(finger)])


def rendered_lerobot_dataset(root: Path) -> float:
    """Scripted put_x_into_pot episodes rendered at 50 fps into a LeRobotDataset; returns the
    seconds of demo written."""
    sim = AlohaSim('put_x_into_pot')
    demonstrator = ScriptedDemonstrator(SCENES['put_x_into_pot'], sim.model, LEROBOT_FPS)
    writer = LeRobotWriter(root, LEROBOT_FPS, (robot.IMAGE_HEIGHT, robot.IMAGE_WIDTH))
    steps = max(1, round(1.0 / (LEROBOT_FPS * sim.timestep)))
    frames = round(LEROBOT_SECONDS * LEROBOT_FPS)
    for seed in range(LEROBOT_EPISODES):
        episode = sim.reset(seed)
        plan = demonstrator.plan(episode)
        proprio, actions, images = [], [], {cam: [] for cam in robot.CAMERAS}
        for i in range(frames):
            proprio.append(np.concatenate([joints_and_opening(sim, arm) for arm in robot.ARMS]))
            actions.append(
                np.concatenate(
                    [
                        [
                            *plan.commands[arm][i][:6],
                            robot.motor_to_normalized(plan.commands[arm][i][6]),
                        ]
                        for arm in robot.ARMS
                    ]
                )
            )
            for cam in robot.CAMERAS:
                images[cam].append(sim.render(cam))
            for arm in robot.ARMS:
                sim.set_command(arm, plan.commands[arm][i])
            sim.step(steps)
        writer.add_episode(
            np.array(proprio),
            np.array(actions),
            {cam: np.stack(v) for cam, v in images.items()},
            episode.instruction,
        )
    writer.close()
    sim.close()
    return LEROBOT_EPISODES * (frames - 1) / LEROBOT_FPS


def run() -> dict:
    cores = os.cpu_count() or 1
    metrics: dict = {'cores': cores}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(BAG_EPISODES):
            write_bag(
                root / 'bags' / f'episode_{i}',
                BagSpec(seconds=BAG_SECONDS, image_shape=(480, 640)),
            )
        bag_mb = sum(f.stat().st_size for f in (root / 'bags').rglob('*.mcap')) / 1e6
        recorded_s = BAG_EPISODES * BAG_SECONDS
        metrics['rosbag'] = {
            'episodes': BAG_EPISODES,
            'bag_mb': round(bag_mb),
            **side_by_side([str(root / 'bags')], root / 'set', cores, recorded_s),
        }
        recorded_s = rendered_lerobot_dataset(root / 'lerobot')
        video_mb = sum(f.stat().st_size for f in (root / 'lerobot').rglob('*.mp4')) / 1e6
        metrics['lerobot'] = {
            'episodes': LEROBOT_EPISODES,
            'fps': LEROBOT_FPS,
            'video_mb': round(video_mb, 2),
            **side_by_side(['--lerobot', str(root / 'lerobot')], root / 'set', cores, recorded_s),
        }
    return metrics
