"""The data path end to end: a scripted demo recorded through the real graph (aloha_sim over
DDS -> rosbag2 MCAP) converts into a training set, trains, and loads as a policy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.ros_fixtures import REPO_ROOT


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, '-m', *args], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_recorded_demo_trains_a_loadable_policy(tmp_path):
    from oft_policy_node.model import OftPolicy

    _run('aloha_bringup.record_demos', '--scene', 'put_x_into_pot', '-n', '1', '--seed', '1',
         '--image-height', '120', '--image-width', '160', '-o', str(tmp_path / 'demos'))
    (recorded,) = json.loads((tmp_path / 'demos' / 'summary.json').read_text())
    assert recorded['success'] and recorded['seed'] == 1
    _run('oft_training.convert', '--bags', str(tmp_path / 'demos'), '--out',
         str(tmp_path / 'data'), '--preset', 'tiny', '--strict')
    index = json.loads((tmp_path / 'data' / 'index.json').read_text())
    (episode,) = index['episodes']
    # The bag's metadata carries the instruction the demonstrator was given.
    assert episode['instruction'] == recorded['instruction']
    assert episode['name'] == recorded['bag']
    # A 25 Hz grid over the ~9 s scripted episode.
    assert 200 < episode['length'] < 300

    _run('oft_training.train', '--data', str(tmp_path / 'data'), '--out', str(tmp_path / 'run'),
         '--preset', 'tiny', '--steps', '3', '--batch-size', '2', '--val-fraction', '0')
    policy = OftPolicy.from_pretrained(tmp_path / 'run' / 'final', device='cpu')
    assert policy.instructions == (recorded['instruction'],)
    images = {cam: np.zeros((120, 160, 3), np.uint8) for cam in policy.config.camera_names}
    chunk = policy.predict_action_chunk(images, np.zeros(14, np.float32),
                                        recorded['instruction'])
    assert chunk.shape == (25, 14) and np.isfinite(chunk).all()
