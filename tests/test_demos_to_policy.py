"""The data path end to end, as `make train-sim` runs it: a vision backbone pretrained on
rendered layouts, scripted demos recorded through the real graph (aloha_sim over DDS -> rosbag2
MCAP), converted into a training set, trained from that backbone, evaluated open loop and
installed as a checkpoint that loads as a policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.ros_fixtures import REPO_ROOT

pytestmark = pytest.mark.ros  # demos recorded over DDS into bags, and the graph


@pytest.fixture(scope='module')
def vision(tmp_path_factory) -> Path:
    """A tiny pretrain_vision backbone folder, shared by the recipes' runs."""
    vision = tmp_path_factory.mktemp('vision')
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'aloha_bringup.recipes.pretrain_vision',
            '--scene',
            'put_x_into_pot',
            '--preset',
            'tiny',
            '--layouts',
            '20',
            '--steps',
            '4',
            '--batch-size',
            '4',
            '--out',
            str(vision),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pretrained = json.loads((vision / 'pretrain_vision.json').read_text())
    assert set(pretrained['error_cm']) == {'pot', 'green_pepper', 'red_pepper', 'yellow_corn'}
    assert pretrained['val_images'] == 2 and (vision / 'localisation.png').stat().st_size > 0
    return vision


@pytest.mark.slow
def test_train_sim_records_converts_trains_evaluates_and_installs(tmp_path, vision):
    from oft_policy_node.model import OftPolicy

    out, installed = tmp_path / 'run', tmp_path / 'checkpoints' / 'put_x_into_pot'
    command = [
        sys.executable,
        '-m',
        'aloha_bringup.recipes.train_sim',
        '--scene',
        'put_x_into_pot',
        '--episodes',
        '2',
        '--demo-seed',
        '1',
        '--preset',
        'tiny',
        '--steps',
        '3',
        '--batch-size',
        '2',
        '--val-every',
        '3',
        '--out',
        str(out),
        '--install',
        str(installed),
        '--init-vision',
        str(vision / 'backbone.pt'),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / 'train_sim.json').read_text())
    assert list(summary['stages']) == ['record', 'convert', 'train', 'evaluate']
    assert summary['vision'] == str(vision / 'backbone.pt')
    assert f'vision backbone from {vision / "backbone.pt"}' in result.stdout
    assert all(stage['exit'] == 0 for stage in summary['stages'].values())
    dataset_written = (out / 'dataset' / 'index.json').stat().st_mtime_ns

    # Resuming (here: two more steps) neither records nor converts again.
    result = subprocess.run(
        [
            *command[: command.index('--steps') + 1],
            '5',
            *command[command.index('--steps') + 2 :],
            '--resume',
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resumed = json.loads((out / 'train_sim.json').read_text())
    assert list(resumed['stages']) == ['train', 'evaluate']
    assert (out / 'dataset' / 'index.json').stat().st_mtime_ns == dataset_written
    assert (out / 'train' / 'checkpoints' / 'step_0000005').is_dir()

    recorded = json.loads((out / 'demos' / 'summary.json').read_text())
    assert [r['seed'] for r in recorded] == [1, 2] and all(r['success'] for r in recorded)
    index = json.loads((out / 'dataset' / 'index.json').read_text())
    # The bags' metadata carries the instruction the demonstrator was given.
    assert {e['name']: e['instruction'] for e in index['episodes']} == {
        r['bag']: r['instruction'] for r in recorded
    }
    # A 25 Hz grid over the ~9 s scripted episodes.
    assert all(200 < e['length'] < 300 for e in index['episodes'])
    # One of the two episodes is held out, and evaluate scored exactly that one.
    evaluation = json.loads((out / 'evaluate' / 'eval.json').read_text())
    assert len(evaluation['episodes']) == 1

    policy = OftPolicy.from_pretrained(installed, device='cpu')
    assert set(policy.instructions) == {r['instruction'] for r in recorded}
    images = {cam: np.zeros((120, 160, 3), np.uint8) for cam in policy.config.camera_names}
    chunk = policy.predict_action_chunk(
        images, np.zeros(14, np.float32), recorded[0]['instruction']
    )
    assert chunk.shape == (25, 14) and np.isfinite(chunk).all()


def test_train_sim_json_names_the_vision_backbone_each_recipe_starts_from():
    from aloha_bringup.recipes.train_sim import parse_args, vision_source

    # The grounded recipe pretrains its backbone unless given one; the plain one starts random.
    assert vision_source(parse_args(['--recipe', 'grounded'])) == 'pretrained'
    assert vision_source(parse_args(['--recipe', 'grounded', '--init-vision', 'b.pt'])) == 'b.pt'
    assert vision_source(parse_args(['--pretrain-vision'])) == 'pretrained'
    assert vision_source(parse_args([])) == 'random'


@pytest.mark.slow
def test_grounded_recipe_chains_its_stages_and_resumes_past_finished_ones(tmp_path, vision):
    out = tmp_path / 'grounded'
    command = [
        sys.executable,
        '-m',
        'aloha_bringup.recipes.train_sim',
        '--scene',
        'put_x_into_pot',
        '--recipe',
        'grounded',
        '--episodes',
        '4',
        '--start-episodes',
        '3',
        '--demo-seed',
        '1',
        '--preset',
        'tiny',
        '--recipe-steps',
        '2',
        '3',
        '2',
        '2',
        '2',
        '--batch-size',
        '2',
        '--val-every',
        '1',
        '--grounding-layouts',
        '6',
        '--out',
        str(out),
        '--init-vision',
        str(vision / 'backbone.pt'),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / 'train_sim.json').read_text())
    assert list(summary['stages']) == [
        'record',
        'render_grounding',
        'convert',
        'convert_start',
        'train_ground',
        'train_ground_more',
        'train_demos',
        'train_unfrozen',
        'train',
        'evaluate',
    ]
    assert all(stage['exit'] == 0 for stage in summary['stages'].values())
    stages = {name: stage['command'] for name, stage in summary['stages'].items()}

    # The first stage trains on the first demos only; the later ones on all of them.
    def episodes(dataset: str) -> list[str]:
        return [
            e['name'] for e in json.loads((out / dataset / 'index.json').read_text())['episodes']
        ]

    # (three, so that every instruction is among them, as train requires for grounding)
    assert episodes('dataset-start') == [f'put_x_into_pot_000{seed}' for seed in (1, 2, 3)]
    assert len(episodes('dataset')) == 4
    # Each stage starts from the previous one's last checkpoint; only the last two train vision,
    # the last at a lower learning rate.
    ground = out / 'train-ground' / 'checkpoints'
    assert '--steps 3' in stages['train_ground_more'] and '--resume' in stages['train_ground_more']
    assert f'--init-policy {ground / "step_0000003"}' in stages['train_demos']
    assert '--freeze-vision' in stages['train_demos'] and '--lr 2.5e-4' in stages['train_demos']
    assert (
        f'--init-policy {out / "train-demos" / "checkpoints" / "step_0000002"}'
        in stages['train_unfrozen']
    )
    assert (
        f'--init-policy {out / "train-unfrozen" / "checkpoints" / "step_0000002"}'
        in stages['train']
    )
    for stage in ('train_unfrozen', 'train'):
        assert '--freeze-vision' not in stages[stage] and '--grounding ' in stages[stage]
    assert '--lr 2.5e-4' in stages['train_unfrozen'] and '--lr 1e-4' in stages['train']
    assert (out / 'train' / 'final' / 'model.safetensors').is_file()
    assert result.stdout.count('train: all weights from') == 3

    # Everything finished: --resume re-runs nothing but the evaluation.
    result = subprocess.run(
        [*command, '--resume'], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(json.loads((out / 'train_sim.json').read_text())['stages']) == ['evaluate']
