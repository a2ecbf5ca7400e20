"""quick_eval: eval_sim's episodes and records, policy and MuJoCo in one process, on a random
`tiny` checkpoint; a broken checkpoint is refused with a clear message."""

from __future__ import annotations

import json

from aloha_bringup.evaluation.failure_modes import CATEGORIES, SUCCESS
from aloha_bringup.evaluation.quick_eval import main as quick_eval
from aloha_sim.scenes import PutXIntoPot
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
