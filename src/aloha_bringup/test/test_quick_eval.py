"""quick_eval: eval_sim's episodes and records, policy and MuJoCo in one process, on a random
`tiny` checkpoint; a broken checkpoint is refused with a clear message; real-time chunking
switches chunks with the executor's splice fade."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from aloha_bringup.evaluation.episodes import EpisodePlan
from aloha_bringup.evaluation.failure_modes import CATEGORIES, SUCCESS
from aloha_bringup.evaluation.quick_eval import main as quick_eval
from aloha_bringup.evaluation.quick_eval import run_episode
from aloha_sim.physics import START_JOINTS, AlohaSim
from aloha_sim.scenes import PutXIntoPot
from oft_policy_node import robot
from oft_policy_node.model.testing import make_tiny_checkpoint


def test_quick_eval_writes_eval_sim_records(tmp_path, capsys):
    scene = PutXIntoPot()
    checkpoint = make_tiny_checkpoint(tmp_path / 'tiny', instructions=scene.instructions())
    out = tmp_path / 'quick.json'
    assert (
        quick_eval(
            [
                '--checkpoint',
                str(checkpoint),
                '--scene',
                scene.name,
                '--episodes-per-instruction',
                '1',
                '--seed',
                '5',
                '--max-seconds',
                '1.2',
                '--image-height',
                '48',
                '--image-width',
                '64',
                '--out',
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result['seeds'] == [5, 6, 7]
    episodes = result['episodes']
    assert [e['instruction'] for e in episodes] == list(scene.instructions())
    for episode in episodes:
        assert not episode['success']  # random weights never succeed
        # Random targets jumping between the joint limits can make MuJoCo unstable (it then
        # resets the state, which once looked like a success): that episode ends there.
        if not episode['sim_unstable']:
            assert abs(episode['sim_seconds'] - 1.2) < 0.05
            assert episode['chunks'] == 2  # 25 rows each: ticks 0-24, then 25-29
        assert len(episode['inference_latencies_s']) == episode['chunks']
        assert episode['target_object'] == scene.target_object(episode['instruction'])
        assert isinstance(episode['followed_language'], bool)
        assert episode['failure_mode'] in CATEGORIES and episode['failure_mode'] != SUCCESS
    overall = result['overall']
    assert overall['episodes'] == 3
    assert sum(overall['failure_modes'].values()) == 3
    assert overall['followed_language'] == sum(e['followed_language'] for e in episodes)
    assert 'language following' in capsys.readouterr().out


def test_quick_eval_refuses_a_broken_checkpoint(tmp_path, capsys):
    broken = make_tiny_checkpoint(tmp_path / 'tiny')
    (broken / 'model.safetensors').write_bytes(b'not safetensors')
    assert quick_eval(['--checkpoint', str(broken), '--scene', 'put_x_into_pot']) == 2
    assert 'cannot load' in capsys.readouterr().err


class SteppingPolicy:
    """Chunk k: every arm joint at the start pose + 0.05 k from its first predicted row on, the
    given rows returned as they are (as OftPolicy does); grippers half open."""

    config = SimpleNamespace(camera_names=('cam_high',))

    def __init__(self) -> None:
        self.chunks = 0

    def predict_action_chunk(self, images, proprio, instruction, prefix=None):
        row = np.zeros(robot.ACTION_DIM)
        for arm in robot.ARMS:
            row[robot.arm_columns(arm)] = [*(START_JOINTS + 0.05 * self.chunks), 0.5]
        chunk = np.tile(row, (robot.CHUNK_SIZE, 1))
        if prefix is not None:
            chunk[: len(prefix)] = prefix
        self.chunks += 1
        return chunk


@pytest.mark.parametrize('splice_fade', [0.0, 0.16])
def test_quick_eval_fades_the_step_at_each_switch_as_the_executor(splice_fade):
    """With 3 rows of latency: chunk 0 plays rows 0-22 (the last 3 while chunk 1 is computed),
    chunk 1 takes over at its row 3 from chunk 0's row there, the 0.05 step fading out over
    splice_fade (4 rows), or at once with 0."""
    sim = AlohaSim('put_x_into_pot', 48, 64)
    sent = []
    set_command = sim.set_command

    def record(arm, command):
        if arm == 'left':
            sent.append(float(command[0]))
        set_command(arm, command)

    sim.set_command = record
    try:
        plan = EpisodePlan(0, PutXIntoPot().instructions()[0], 5)
        run_episode(sim, SteppingPolicy(), plan, 1.2, 0.05, prefix_rows=3, splice_fade=splice_fade)
    finally:
        sim.close()
    switch = [0.0, 0.0125, 0.025, 0.0375] if splice_fade else [0.05] * 4
    expected = [0.0] * 23 + switch + [0.05] * 3
    np.testing.assert_allclose(np.array(sent) - START_JOINTS[0], expected, atol=1e-9)
