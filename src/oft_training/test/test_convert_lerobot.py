"""convert on LeRobotDataset folders (v2.0/v2.1, v3.0; AV1 and H.264 videos, PNG images): which
frame every sample comes from, joint order from the names, and each bad input named.

The fixtures are written by lerobot_fixtures.py from LeRobot's own writing code (cited there).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oft_training.convert import main as convert
from oft_training.data.training_set import TrainingSet

from .lerobot_fixtures import LeRobotSpec, action, colour, frame_of, state, write_lerobot


def run(tmp_path: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> int:
    args = ['--lerobot', *map(str, inputs), '--out', str(tmp_path / 'set'), '--preset', 'tiny']
    return convert([*args, '--overwrite', *extra])


def check_episodes(tmp_path: Path, spec: LeRobotSpec, stride: int) -> None:
    """Tick k of episode e holds recorded frame stride * k: its state, its action, its colour
    (frames identified by their colour, at least 29 levels from any other frame's)."""
    data = TrainingSet(tmp_path / 'set')
    assert len(data.episodes) == len(spec.episodes())
    for number, e in enumerate(spec.episodes()):
        ticks = (spec.length(e) + stride - 1) // stride
        arrays = data.episode_arrays(number)
        frames = stride * np.arange(ticks)
        assert data.episodes[number]['instruction'] == spec.tasks[e % len(spec.tasks)]
        np.testing.assert_array_equal(arrays['proprio'], [state(e, f) for f in frames])
        np.testing.assert_array_equal(arrays['actions'], [action(e, f) for f in frames])
        for c, cam in enumerate(('cam_high', 'cam_left_wrist', 'cam_right_wrist')):
            pixels = np.asarray(arrays[cam], float)  # (T, S, S, 3)
            decoded = [frame_of(p, e, spec.length(e)) for p in pixels]
            assert decoded == frames.tolist(), cam
            expected = np.stack([colour(e, f, c) for f in frames])[:, None, None, :]
            assert np.abs(pixels - expected).max() <= 6  # the codec's error on flat colour


def test_v30_av1_at_50_fps_keeps_every_second_frame(tmp_path, capsys):
    spec = LeRobotSpec()  # v3.0, AV1 (SVT-AV1, LeRobot's default), 50 fps, names as the hub's
    root = write_lerobot(tmp_path / 'aloha_v30', spec)
    assert run(tmp_path, root) == 0
    check_episodes(tmp_path, spec, stride=2)
    out = capsys.readouterr().out
    assert 'aloha_v30_ep000000  lerobot  30' in out and 'aloha_v30_ep000001  lerobot  35' in out


def test_v21_h264_right_arm_first_names_are_reordered(tmp_path):
    spec = LeRobotSpec(
        version='v2.1', fps=25, lengths=(30, 41), vcodec='libx264', names='right_first'
    )
    assert run(tmp_path, write_lerobot(tmp_path / 'aloha_v21', spec)) == 0
    check_episodes(tmp_path, spec, stride=1)


def test_png_image_features_and_camera_mapping(tmp_path):
    spec = LeRobotSpec(
        version='v2.0',
        fps=50,
        camera_dtype='image',
        cameras=('top', 'cam_left_wrist', 'cam_right_wrist'),
    )
    root = write_lerobot(tmp_path / 'aloha_images', spec)
    assert run(tmp_path, root) == 2  # no observation.images.cam_high
    assert run(tmp_path, root, extra=('--lerobot-camera', 'cam_high=observation.images.top')) == 0
    check_episodes(tmp_path, spec, stride=2)


def test_unnamed_joints_warn_and_keep_their_order(tmp_path, capsys):
    spec = LeRobotSpec(names='generic', lengths=(50,))
    assert run(tmp_path, write_lerobot(tmp_path / 'generic', spec)) == 0
    assert "do not name the ALOHA joints; taking its columns in the stack's order" in (
        capsys.readouterr().err
    )
    check_episodes(tmp_path, spec, stride=2)


def test_whole_dataset_errors(tmp_path, capsys):
    no_wrist = write_lerobot(
        tmp_path / 'no_wrist', LeRobotSpec(cameras=('cam_high', 'cam_left_wrist'), lengths=(50,))
    )
    assert run(tmp_path, no_wrist) == 2
    assert "no feature ['observation.images.cam_right_wrist']" in capsys.readouterr().err
    at_30 = write_lerobot(tmp_path / 'at_30', LeRobotSpec(fps=30, lengths=(60,)))
    assert run(tmp_path, at_30) == 2
    assert 'fps 30 is no multiple of the 25 Hz control rate' in capsys.readouterr().err
    (tmp_path / 'newer/meta').mkdir(parents=True)
    (tmp_path / 'newer/meta/info.json').write_text(json.dumps({'codebase_version': 'v4.0'}))
    assert run(tmp_path, tmp_path / 'newer') == 2
    assert "codebase_version 'v4.0' is not one of" in capsys.readouterr().err


BAD_EPISODES = {
    # name: (spec, what to break after writing, episode skipped, message)
    'dropped_frame': (LeRobotSpec(drop_frames={1: 17}), None, 1, 'frame_index misses [17]'),
    'task_switch': (LeRobotSpec(task_switch=0), None, 0, 'the task changed during the episode'),
    'degrees': (LeRobotSpec(degrees=True, lengths=(60,)), None, 0, 'not radians (degrees?)'),
    'truncated_v21': (
        LeRobotSpec(version='v2.1'),
        'videos/chunk-000/observation.images.cam_left_wrist/episode_000001.mp4',
        1,
        'observation.images.cam_left_wrist: ',
    ),
    'truncated_v30': (
        LeRobotSpec(),
        'videos/observation.images.cam_high/chunk-000/file-000.mp4',
        1,
        'frames missing',
    ),
}


@pytest.mark.parametrize('case', sorted(BAD_EPISODES))
def test_bad_episode_is_skipped_naming_it(tmp_path, case, capsys):
    spec, cut, bad, message = BAD_EPISODES[case]
    root = write_lerobot(tmp_path / case, spec)
    if cut:  # keep the first 70 %: the file's end (and its index, for MP4) is gone
        path = root / cut
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.7)])
    expected = 0 if len(spec.episodes()) > 1 else 1
    assert run(tmp_path, root) == expected
    out = capsys.readouterr().out
    assert f'skipped episode {case}_ep{bad:06d}: ' in out and message in out, out
    if expected == 0:
        names = [e['name'] for e in TrainingSet(tmp_path / 'set').episodes]
        assert f'{case}_ep{bad:06d}' not in names and len(names) == len(spec.episodes()) - 1
    assert run(tmp_path, root, extra=('--strict',)) == 1


def test_episode_index_gap_warns_and_converts_the_rest(tmp_path, capsys):
    spec = LeRobotSpec(version='v2.1', lengths=(50, 50), skip_episodes=(1,))
    assert run(tmp_path, write_lerobot(tmp_path / 'gap', spec)) == 0
    assert 'gap: episode indices [1] are missing' in capsys.readouterr().err
    check_episodes(tmp_path, spec, stride=2)
