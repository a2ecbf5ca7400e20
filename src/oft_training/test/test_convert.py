"""convert on rosbag2 (MCAP, sqlite3) and ALOHA HDF5 episodes: exact sample counts, which
message every sample comes from, statistics; and every bad input named in a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oft_policy_node import robot
from oft_training.convert import main as convert
from oft_training.data.sync import NS_PER_S
from oft_training.data.training_set import TrainingSet
from oft_training.testing import (
    ALOHA_2_0_HDF5_NAMES,
    ALOHA_HDF5_CAMERAS,
    BagSpec,
    command_row,
    frame_colour,
    state_row,
    write_aloha_hdf5,
    write_bag,
)

# BagSpec defaults: 2 s from t0, joint states 50 Hz, commands 25 Hz, cameras 30 Hz. The grid
# starts at t0 and ends at the last frame (frame 60 at 1.99999998 s): ticks 0..49.
TICKS = 50
K = robot.CHUNK_SIZE


def expected_bag_episode() -> dict[str, np.ndarray]:
    """What tick k must hold: joint state 2k (20 ms apart), command k (40 ms apart), and frame
    floor(1.2 k) (the newest 33.3 ms frame at or before 40 k ms)."""
    ticks = np.arange(TICKS)
    return {
        'proprio': np.stack([state_row(2 * k) for k in ticks]),
        'actions': np.stack([command_row(k) for k in ticks]),
        'frames': (6 * ticks) // 5,
    }


HDF5_50_HZ = ('--hdf5-rate', '50')  # ALOHA's record_episodes.py rate


def run_convert(tmp_path: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> int:
    return convert(
        [
            *map(str, inputs),
            '--out',
            str(tmp_path / 'set'),
            '--preset',
            'tiny',
            '--overwrite',
            *extra,
        ]
    )


def check_episode(
    root: Path,
    name: str,
    frames_of: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    colour_atol: int = 0,
) -> None:
    folder = root / 'episodes' / name
    np.testing.assert_allclose(np.load(folder / 'proprio.npy'), expected['proprio'], atol=1e-6)
    np.testing.assert_allclose(np.load(folder / 'actions.npy'), expected['actions'], atol=1e-6)
    for cam, colours in frames_of.items():
        frames = np.load(folder / f'{cam}.npy')  # (T, S, S, 3)
        assert frames.shape == (len(colours), 56, 56, 3)
        np.testing.assert_allclose(
            frames, np.broadcast_to(colours[:, None, None, :], frames.shape), atol=colour_atol
        )


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_exact_alignment_counts_and_stats(tmp_path, storage, capsys):
    write_bag(tmp_path / 'demo_a', BagSpec(), storage)
    write_bag(
        tmp_path / 'demo_b',
        BagSpec(instruction='put red pepper into pot', instruction_in=('topic',), encoding='bgr8'),
        storage,
    )
    assert run_convert(tmp_path, tmp_path / 'demo_a', tmp_path / 'demo_b') == 0

    root = tmp_path / 'set'
    expected = expected_bag_episode()
    colours = {
        cam: np.array([frame_colour(i, c) for i in expected['frames']])
        for c, cam in enumerate(robot.CAMERAS)
    }
    for name in ('demo_a', 'demo_b'):
        check_episode(root, name, colours, expected)
    index = json.loads((root / 'index.json').read_text())
    assert [e['length'] for e in index['episodes']] == [TICKS, TICKS]
    assert index['instructions'] == ['put green pepper into pot', 'put red pepper into pot']
    np.testing.assert_allclose(index['stats']['action_min'], expected['actions'].min(0), atol=1e-6)
    np.testing.assert_allclose(index['stats']['action_max'], expected['actions'].max(0), atol=1e-6)
    np.testing.assert_allclose(
        index['stats']['proprio_min'], expected['proprio'].min(0), atol=1e-6
    )
    np.testing.assert_allclose(
        index['stats']['proprio_max'], expected['proprio'].max(0), atol=1e-6
    )

    data = TrainingSet(root)
    assert len(data) == 2 * (TICKS - K + 1)
    sample = data.sample(TICKS - K + 1 + 3)  # demo_b, tick 3
    assert sample['episode'] == 'demo_b' and sample['tick'] == 3
    np.testing.assert_allclose(sample['actions'], expected['actions'][3 : 3 + K], atol=1e-6)
    np.testing.assert_allclose(sample['proprio'], expected['proprio'][3], atol=1e-6)
    assert sample['instruction'] == 'put red pepper into pot'
    out = capsys.readouterr().out
    assert '2 of 2 episodes converted' in out and 'real time' in out


def test_a_recovery_demo_trains_from_its_mark(tmp_path, capsys):
    """A bag marked with train_from_ns (record_demos --miss-first-grasp: where the retry
    starts) converts from the first tick at or after the mark; its ticks are the unmarked
    bag's from there. The mark is on the header clock: --time-source receive is refused, and
    a mark past the end or not a number leaves the bag out with the reason."""
    from oft_training.data.rosbag_episode import TRAIN_FROM_KEY

    mark = BagSpec().start_ns + 20 * 40_000_000 - 1  # just before tick 20
    write_bag(tmp_path / 'retry', BagSpec(custom_data={TRAIN_FROM_KEY: str(mark)}))
    assert run_convert(tmp_path, tmp_path / 'retry') == 0
    expected = {k: v[20:] for k, v in expected_bag_episode().items()}
    colours = {
        cam: np.array([frame_colour(i, c) for i in expected['frames']])
        for c, cam in enumerate(robot.CAMERAS)
    }
    check_episode(tmp_path / 'set', 'retry', colours, expected)
    capsys.readouterr()

    assert run_convert(tmp_path, tmp_path / 'retry', extra=('--time-source', 'receive')) != 0
    assert 'convert it with --time-source header' in capsys.readouterr().out
    for name, bad, reason in (
        ('late', str(BagSpec().start_ns + 5 * NS_PER_S), 'no control tick after'),
        ('word', 'soon', 'is not an integer'),
    ):
        write_bag(tmp_path / name, BagSpec(custom_data={TRAIN_FROM_KEY: bad}))
        assert run_convert(tmp_path, tmp_path / name) != 0
        assert reason in capsys.readouterr().out


@pytest.mark.parametrize('image_format, colour_atol', [('png', 0), ('jpeg', 2)])
def test_compressed_cameras_convert_like_raw_ones(tmp_path, image_format, colour_atol):
    """Bags recorded with image_transport compressed: the cameras on <topic>/compressed."""
    write_bag(tmp_path / 'compressed', BagSpec(image_format=image_format))
    assert run_convert(tmp_path, tmp_path / 'compressed') == 0
    expected = expected_bag_episode()
    colours = {
        cam: np.array([frame_colour(i, c) for i in expected['frames']])
        for c, cam in enumerate(robot.CAMERAS)
    }
    check_episode(tmp_path / 'set', 'compressed', colours, expected, colour_atol)


def test_interbotix_commands_are_actions(tmp_path):
    write_bag(tmp_path / 'ibx', BagSpec(action_source='interbotix'))
    assert run_convert(tmp_path, tmp_path / 'ibx', extra=('--action-source', 'interbotix')) == 0
    expected = expected_bag_episode()
    np.testing.assert_allclose(
        np.load(tmp_path / 'set/episodes/ibx/actions.npy'), expected['actions'], atol=1e-6
    )


def check_hdf5_episode(tmp_path: Path, steps: int, colour_atol: int) -> None:
    """The converted write_aloha_hdf5 episode of `steps` 50 Hz steps: every second one."""
    ticks = np.arange(0, steps, 2)
    expected = {
        'proprio': np.stack([state_row(i) for i in ticks]),
        'actions': np.stack([command_row(i) for i in ticks]),
    }
    colours = {
        cam: np.array([frame_colour(i, ALOHA_HDF5_CAMERAS.index(cam)) for i in ticks])
        for cam in robot.CAMERAS
    }
    check_episode(tmp_path / 'set', 'episode_0', colours, expected, colour_atol=colour_atol)


@pytest.mark.parametrize('compress', [True, False])
def test_aloha_hdf5_50hz_to_25hz(tmp_path, compress):
    write_aloha_hdf5(
        tmp_path / 'episode_0.hdf5',
        steps=100,
        compress=compress,
        instruction='put green pepper into pot',
    )
    assert run_convert(tmp_path, tmp_path / 'episode_0.hdf5', extra=HDF5_50_HZ) == 0
    # JPEG of a flat colour decodes to within 2 levels of it.
    check_hdf5_episode(tmp_path, 100, colour_atol=2 if compress else 0)
    assert len(TrainingSet(tmp_path / 'set')) == 50 - K + 1


def test_aloha_2_0_hdf5_camera_names_and_row_order(tmp_path):
    write_aloha_hdf5(
        tmp_path / 'episode_0.hdf5', steps=60, instruction='x', names=ALOHA_2_0_HDF5_NAMES
    )
    assert run_convert(tmp_path, tmp_path / 'episode_0.hdf5', extra=HDF5_50_HZ) == 0
    check_hdf5_episode(tmp_path, 60, colour_atol=2)


def test_hdf5_without_a_rate_is_refused_saying_which_to_pass(tmp_path, capsys):
    write_aloha_hdf5(tmp_path / 'episode_0.hdf5', steps=60, instruction='x')
    assert run_convert(tmp_path, tmp_path / 'episode_0.hdf5') == 2
    err = capsys.readouterr().err
    assert 'the HDF5 episodes do not record their rate' in err
    assert "pass --hdf5-rate, 50 for their recordings (DT 0.02), 25 for the authors'" in err


def test_actions_come_from_the_leader_arms_when_recorded_and_convert_says_so(tmp_path, capsys):
    write_bag(tmp_path / 'teleop', BagSpec(action_source='leader', camera_set='aloha_2_0'))
    write_bag(tmp_path / 'rollout', BagSpec(action_source='interbotix'))
    assert run_convert(tmp_path, tmp_path / 'teleop', tmp_path / 'rollout') == 0
    out = capsys.readouterr().out
    assert "teleop: actions from the leader arms' joint states" in out
    assert 'rollout: actions from the Interbotix commands' in out
    expected = expected_bag_episode()
    for name in ('teleop', 'rollout'):
        np.testing.assert_allclose(
            np.load(tmp_path / f'set/episodes/{name}/actions.npy'), expected['actions'], atol=1e-6
        )


BAD_BAGS = {
    'missing_topic': (
        BagSpec(omit_topics=(robot.joint_positions_topic('right'),)),
        "no actions in the bag: none of the leader arms' joint states",
    ),
    'missing_camera': (
        BagSpec(omit_topics=(robot.camera_topic('cam_left_wrist'),)),
        "no messages on ['/cam_left_wrist/camera/color/image_rect_raw']",
    ),
    # 12 Hz frames are never older than the 0.1 s tolerance, but up to 83 ms off the others.
    'unsynced_cameras': (BagSpec(camera_rates_hz={'cam_left_wrist': 12.0}), 'cameras out of sync'),
    'camera_gap': (
        BagSpec(camera_gap=('cam_high', 0.5, 0.9)),
        '/cam_high/camera/color/image_rect_raw: 9 tick(s) from tick 15',
    ),
    'too_short': (BagSpec(seconds=0.9), 'fewer than one action chunk (25)'),
    'no_instruction': (BagSpec(instruction_in=()), 'no instruction'),
    'unstamped': (BagSpec(stamp_zero=True), 'unstamped messages'),
}


@pytest.mark.parametrize('case', sorted(BAD_BAGS))
def test_bad_bag_is_skipped_with_a_reason(tmp_path, case, capsys):
    spec, reason = BAD_BAGS[case]
    write_bag(tmp_path / 'good', BagSpec())
    write_bag(tmp_path / case, spec)
    assert run_convert(tmp_path, tmp_path / 'good', tmp_path / case) == 0
    out = capsys.readouterr().out
    assert f'skipped episode {case}: ' in out and reason in out, out
    assert [e['name'] for e in TrainingSet(tmp_path / 'set').episodes] == ['good']
    assert not (tmp_path / 'set/episodes' / case).exists()  # no half-written episode left
    assert run_convert(tmp_path, tmp_path / case, extra=('--strict',)) == 1
    assert reason in capsys.readouterr().err


def test_corrupt_and_truncated_bags(tmp_path, capsys):
    truncated = write_bag(tmp_path / 'truncated', BagSpec())
    mcap = next(truncated.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    garbage = write_bag(tmp_path / 'garbage', BagSpec())
    next(garbage.glob('*.mcap')).write_bytes(b'not an mcap file at all' * 100)
    assert run_convert(tmp_path, truncated, garbage) == 1  # nothing usable: an error
    captured = capsys.readouterr()
    assert 'skipped episode truncated: ' in captured.out
    assert 'skipped episode garbage: ' in captured.out
    assert 'no episode could be converted' in captured.err


def test_bad_hdf5(tmp_path, capsys):
    short = write_aloha_hdf5(tmp_path / 'short.hdf5', steps=40, instruction='x')
    no_text = write_aloha_hdf5(tmp_path / 'no_text.hdf5', steps=60)
    cut = write_aloha_hdf5(tmp_path / 'cut.hdf5', steps=60, instruction='x')
    import h5py

    with h5py.File(cut, 'a') as f:
        f['compress_len'][0, 8] -= 10  # cam_high step 8 points into the middle of its JPEG
    assert run_convert(tmp_path, short, no_text, cut, extra=HDF5_50_HZ) == 1
    out = capsys.readouterr().out
    assert 'short: 20 ticks on the control grid, fewer than one action chunk' in out
    assert 'no_text: no instruction' in out
    assert 'cut: cam_high step 8: compress_len' in out


def test_cli_errors(tmp_path, capsys):
    assert run_convert(tmp_path, tmp_path / 'nowhere') == 2
    assert 'nowhere does not exist' in capsys.readouterr().err
    (tmp_path / 'empty').mkdir()
    assert run_convert(tmp_path, tmp_path / 'empty') == 2
    assert 'no rosbag2 folders' in capsys.readouterr().err
    write_bag(tmp_path / 'good', BagSpec())
    (tmp_path / 'taken').mkdir()
    (tmp_path / 'taken/file').write_text('x')
    assert convert([str(tmp_path / 'good'), '--out', str(tmp_path / 'taken')]) == 2
    assert 'pass --overwrite' in capsys.readouterr().err
