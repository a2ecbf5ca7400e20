"""export: bags and training sets -> LeRobotDataset v3.0. The round trip bags -> LeRobotDataset
-> training set keeps every proprio and action value and the images within the codec's error,
and each file has the layout LeRobot v0.4.4 writes (src/lerobot/datasets/utils.py
create_empty_dataset_info and DEFAULT_FEATURES, lerobot_dataset.py _save_episode_data,
_save_episode_video and LeRobotDatasetMetadata._save_episode_metadata, compute_stats.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oft_training.convert import main as convert
from oft_training.data.training_set import TrainingSet
from oft_training.data.video import VideoWriter, realtime_threads
from oft_training.export import main as export
from oft_training.testing import BagSpec, write_bag

CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
# create_empty_dataset_info's keys (v0.4.4), in its order.
INFO_KEYS = [
    'codebase_version',
    'robot_type',
    'total_episodes',
    'total_frames',
    'total_tasks',
    'chunks_size',
    'data_files_size_in_mb',
    'video_files_size_in_mb',
    'fps',
    'splits',
    'data_path',
    'video_path',
    'features',
]
STATS = ['min', 'max', 'mean', 'std', 'count', 'q01', 'q10', 'q50', 'q90', 'q99']


@pytest.fixture(scope='module')
def exported(tmp_path_factory) -> Path:
    """Two bags (2 s and 3 s, two instructions, one bgr8) exported with the defaults."""
    root = tmp_path_factory.mktemp('export')
    write_bag(root / 'bags/a', BagSpec())
    write_bag(
        root / 'bags/b',
        BagSpec(seconds=3.0, instruction='put red pepper into pot', encoding='bgr8'),
    )
    assert export([str(root / 'bags'), '--out', str(root / 'lerobot')]) == 0
    return root


def test_round_trip_keeps_values_exactly_and_images_within_codec_error(exported, tmp_path):
    assert (
        convert([str(exported / 'bags'), '--out', str(tmp_path / 'direct'), '--preset', 'tiny'])
        == 0
    )
    assert (
        convert(
            [
                '--lerobot',
                str(exported / 'lerobot'),
                '--out',
                str(tmp_path / 'back'),
                '--preset',
                'tiny',
            ]
        )
        == 0
    )
    direct, back = TrainingSet(tmp_path / 'direct'), TrainingSet(tmp_path / 'back')
    assert [e['instruction'] for e in back.episodes] == [e['instruction'] for e in direct.episodes]
    assert [e['length'] for e in back.episodes] == [50, 75]
    worst = 0.0
    for number in range(2):
        a, b = direct.episode_arrays(number), back.episode_arrays(number)
        np.testing.assert_array_equal(b['proprio'], a['proprio'])
        np.testing.assert_array_equal(b['actions'], a['actions'])
        for cam in CAMERAS:
            error = np.abs(np.asarray(b[cam], float) - np.asarray(a[cam], float))
            assert error.mean() < 2.0
            worst = max(worst, error.max())
    assert worst <= 8  # AV1 at CRF 30 on flat colours, then resizing
    assert back.stats.to_dict() == direct.stats.to_dict()


def test_layout_as_lerobot_writes_it(exported):
    root = exported / 'lerobot'
    info = json.loads((root / 'meta/info.json').read_text())
    assert list(info) == INFO_KEYS
    assert info['codebase_version'] == 'v3.0' and info['fps'] == 25
    assert (info['total_episodes'], info['total_frames'], info['total_tasks']) == (2, 125, 2)
    assert info['splits'] == {'train': '0:2'}
    assert info['data_path'] == 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
    assert info['video_path'] == (
        'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
    )
    features = info['features']
    assert features['observation.state']['names'][:2] == ['left_waist', 'left_shoulder']
    video = features['observation.images.cam_high']
    assert video['shape'] == [48, 64, 3] and video['names'] == ['height', 'width', 'channels']
    assert video['info'] == {
        'video.height': 48,
        'video.width': 64,
        'video.codec': 'av1',
        'video.pix_fmt': 'yuv420p',
        'video.is_depth_map': False,
        'video.fps': 25,
        'video.channels': 3,
        'has_audio': False,
    }
    assert [k for k in features if features[k]['shape'] == [1]] == [
        'timestamp',
        'frame_index',
        'episode_index',
        'index',
        'task_index',
    ]

    # The frame table: the datasets Features of get_hf_features_from_features, one row group
    # per episode (one write_table per save_episode).
    data = pq.ParquetFile(root / 'data/chunk-000/file-000.parquet')
    schema = data.schema_arrow
    assert schema.names == [
        'observation.state',
        'action',
        'timestamp',
        'frame_index',
        'episode_index',
        'index',
        'task_index',
    ]
    assert schema.field('action').type == pa.list_(pa.float32(), 14)
    assert schema.field('timestamp').type == pa.float32()
    assert data.metadata.num_row_groups == 2
    table = data.read()
    np.testing.assert_array_equal(table['index'].to_numpy(), np.arange(125))
    np.testing.assert_allclose(
        table['timestamp'].to_numpy()[50:], np.arange(75) / 25, rtol=0, atol=1e-6
    )

    episodes = pq.read_table(root / 'meta/episodes/chunk-000/file-000.parquet').to_pylist()
    assert [e['tasks'] for e in episodes] == [
        ['put green pepper into pot'],
        ['put red pepper into pot'],
    ]
    assert [(e['dataset_from_index'], e['dataset_to_index']) for e in episodes] == [
        (0, 50),
        (50, 125),
    ]
    key = 'videos/observation.images.cam_left_wrist'
    assert [(e[f'{key}/from_timestamp'], e[f'{key}/to_timestamp']) for e in episodes] == [
        (0.0, 2.0),
        (2.0, 5.0),
    ]
    assert [k.split('/')[-1] for k in episodes[0] if k.startswith('stats/action/')] == STATS
    assert np.array(episodes[0]['stats/observation.images.cam_high/mean']).shape == (3, 1, 1)

    tasks = pq.read_table(root / 'meta/tasks.parquet')
    assert json.loads(tasks.schema.metadata[b'pandas'])['index_columns'] == ['task']
    assert tasks['task'].to_pylist() == ['put green pepper into pot', 'put red pepper into pot']
    stats = json.loads((root / 'meta/stats.json').read_text())
    assert list(stats['action']) == STATS and stats['action']['count'] == [125]

    # Frame n of a camera's file is shown at n / fps: episode 1 starts at its from_timestamp.
    with av.open(str(root / f'{key}/chunk-000/file-000.mp4')) as file:
        stream = file.streams.video[0]
        shown = [float(f.pts * stream.time_base) for f in file.decode(stream)]
    np.testing.assert_allclose(shown, np.arange(125) / 25, atol=1e-9)


def test_training_set_export_and_errors(exported, tmp_path, capsys):
    assert (
        convert([str(exported / 'bags'), '--out', str(tmp_path / 'set'), '--preset', 'tiny']) == 0
    )
    assert export([str(tmp_path / 'set'), '--out', str(tmp_path / 'lr'), '--vcodec', 'h264']) == 0
    info = json.loads((tmp_path / 'lr/meta/info.json').read_text())
    video = info['features']['observation.images.cam_right_wrist']
    assert video['shape'] == [56, 56, 3] and video['info']['video.codec'] == 'h264'
    assert (
        convert(
            [
                '--lerobot',
                str(tmp_path / 'lr'),
                '--out',
                str(tmp_path / 'back'),
                '--preset',
                'tiny',
            ]
        )
        == 0
    )
    back, start = TrainingSet(tmp_path / 'back'), TrainingSet(tmp_path / 'set')
    np.testing.assert_array_equal(
        back.episode_arrays(1)['actions'], start.episode_arrays(1)['actions']
    )
    capsys.readouterr()
    assert export([str(tmp_path / 'set'), '--out', str(tmp_path / 'lr')]) == 2
    assert 'pass --overwrite' in capsys.readouterr().err
    assert export([str(tmp_path / 'nothing'), '--out', str(tmp_path / 'lr2')]) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_encoding_leaves_every_thread_at_normal_scheduling(tmp_path):
    """Where it may (root here), SVT-AV1 moves the encoding thread and its workers to SCHED_FIFO
    99: the nodes a test started afterwards inherited it and starved each other."""
    before = realtime_threads()
    writer = VideoWriter(tmp_path / 'v.mp4', 25, 48, 64)
    for i in range(6):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    assert realtime_threads() == before
    writer.close()
    assert realtime_threads() == before and os.sched_getscheduler(0) == os.SCHED_OTHER
