"""Grounding co-training: the head regresses positions from slot states; the grounding loss
reaches the Llama; grounding batches are a pure function of (seed, step);
a run with --grounding resumes exactly, head included, and --init-policy brings the
head along; bad grounding sets are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oft_policy_node import robot
from oft_policy_node.model.checkpoint import read_weights
from oft_policy_node.model.config import get_preset
from oft_policy_node.model.normalization import NormStats
from oft_training.grounding import GroundingBatches, GroundingHead, GroundingSet, split_views
from oft_training.train import main as train
from oft_training.training.loop import FINAL_DIR
from oft_training.training.metrics_log import METRICS_FILE
from oft_training.training.state import TRAINER_STATE

from .conftest import INSTRUCTIONS

TINY = get_preset('tiny')
COLOURS = ((230, 20, 20), (20, 20, 230))  # the two squares; instruction i names square i


def squares(count: int, seed: int = 0) -> GroundingSet:
    """Top views (56 px) with a red and a blue 8 px square at random places; wrist views grey."""
    rng = np.random.default_rng(seed)
    top = np.full((count, 56, 56, 3), 120, dtype=np.uint8)
    centres = rng.integers(8, 48, (count, 2, 2))  # (view, square, row/col)
    for image, view in zip(top, centres, strict=True):
        for (row, col), colour in zip(view, COLOURS, strict=True):
            image[row - 4 : row + 4, col - 4 : col + 4] = colour
    grey = np.full_like(top, 120)
    return GroundingSet(
        {robot.CAMERAS[0]: top, robot.CAMERAS[1]: grey, robot.CAMERAS[2]: grey},
        np.zeros((count, robot.ACTION_DIM), np.float32),
        (centres[..., ::-1] / 100.0).astype(np.float64),  # x = col, y = row
        ('red', 'blue'),
        INSTRUCTIONS[:2],
        (0, 1),
    )


def args(data: Path, out: Path, grounding: Path | None, *extra: str) -> list[str]:
    return [
        '--data',
        str(data),
        '--out',
        str(out),
        '--preset',
        'tiny',
        '--batch-size',
        '8',
        '--seed',
        '3',
        '--lr-decay-step',
        '1000',
        *extra,
        *(['--grounding', str(grounding)] if grounding else []),
    ]


def metrics(out: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != 'step_s'}
        for line in (out / METRICS_FILE).read_text().splitlines()
    ]


@pytest.fixture(scope='module')
def square_set(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('grounding') / 'squares.npz'
    squares(400).save(path)
    return path


def test_set_round_trips_and_batches_depend_only_on_seed_and_step(square_set):
    data = GroundingSet.load(square_set)
    reference = squares(400)
    assert data.objects == reference.objects and data.targets == reference.targets
    np.testing.assert_array_equal(
        data.images[robot.CAMERAS[0]], reference.images[robot.CAMERAS[0]]
    )
    train_views, val_views = split_views(data, 0.1)
    assert len(val_views) == 40 and not set(train_views) & set(val_views)

    def batches() -> GroundingBatches:
        stats = NormStats(np.zeros(14), np.ones(14), np.zeros(14), np.ones(14))
        return GroundingBatches(data, train_views, TINY, stats, 8, seed=5)

    one, other = batches(), batches()
    assert one.step_batch(7) == other.step_batch(7)
    assert one.step_batch(7) != one.step_batch(8)
    # Two processes take halves of the same global batch.
    assert one.step_batch(7, 0, 2) + one.step_batch(7, 1, 2) == one.step_batch(7)
    assert all(view in set(train_views) for view, _, _ in one.step_batch(7))
    batch = one.batch(one.step_batch(7))
    view, instruction, _ = one.step_batch(7)[0]
    torch.testing.assert_close(
        batch['targets'][0], torch.from_numpy(data.target_xy(view, instruction))
    )


def test_head_fits_positions_from_slot_states():
    """The head alone regresses positions from (B, K*D, H) states that carry them linearly,
    even when every state shares a large common part (as the Llama's slot states do)."""
    torch.manual_seed(0)
    common = torch.randn(1, 1, 64) * 10.0
    states = common + torch.randn(24, 30, 64)
    positions = states.mean(1)[:, :2].double() * 0.1 + 0.3
    head = GroundingHead(64, positions.mean(0).numpy(), positions.std(0).numpy())
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    _, before = head.loss(states, positions)
    for _ in range(200):
        loss, error = head.loss(states, positions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert error < 0.2 * before, (before, error)


@pytest.mark.slow
def test_run_with_grounding_resumes_exactly(training_set, square_set, tmp_path):
    reference, resumed = tmp_path / 'reference', tmp_path / 'resumed'
    assert (
        train(args(training_set, reference, square_set, '--steps', '4', '--val-every', '2')) == 0
    )
    assert train(args(training_set, resumed, square_set, '--steps', '2', '--val-every', '2')) == 0
    assert (
        train(
            args(training_set, resumed, square_set, '--steps', '4', '--val-every', '2', '--resume')
        )
        == 0
    )
    assert metrics(resumed) == metrics(reference)  # losses, grounding errors, validation
    assert all('grounding_cm' in m for m in metrics(reference))
    a, b = read_weights(resumed / FINAL_DIR), read_weights(reference / FINAL_DIR)
    assert all(torch.equal(a[k], b[k]) for k in b)
    # The grounding loss trains the policy itself, not only its head: without it the same
    # seed ends with other Llama weights.
    alone = tmp_path / 'alone'
    assert train(args(training_set, alone, None, '--steps', '4', '--val-every', '2')) == 0
    c = read_weights(alone / FINAL_DIR)
    llm = [k for k in b if k.startswith('llm.') and 'layers' in k]
    assert llm and any(not torch.equal(b[k], c[k]) for k in llm)
    assert all('grounding_cm' not in m for m in metrics(alone))
    # Another weight would change every step after the resume: refused.
    assert (
        train(
            args(
                training_set,
                resumed,
                square_set,
                '--steps',
                '6',
                '--resume',
                '--grounding-weight',
                '2',
            )
        )
        == 2
    )


def test_init_policy_brings_the_grounding_head_along(training_set, square_set, tmp_path):
    first, go_on = tmp_path / 'first', tmp_path / 'go_on'
    assert train(args(training_set, first, square_set, '--steps', '4', '--val-every', '2')) == 0
    step = first / 'checkpoints' / 'step_0000004'
    # At a learning rate this small the head's weights stay where they were loaded; a fresh,
    # randomly initialised head would not match.
    assert (
        train(
            args(
                training_set,
                go_on,
                square_set,
                '--steps',
                '1',
                '--val-every',
                '1',
                '--lr',
                '1e-12',
                '--init-policy',
                str(step),
            )
        )
        == 0
    )

    def head(run: Path) -> dict[str, torch.Tensor]:
        saved = torch.load(
            sorted((run / 'checkpoints').glob('step_*'))[-1] / TRAINER_STATE, weights_only=False
        )['grounding_head']
        return {k: v for k, v in saved.items() if 'running' not in k and 'batches' not in k}

    before, after = head(first), head(go_on)
    assert before and all(torch.allclose(after[k], v, atol=1e-9) for k, v in before.items())


def test_bad_grounding_sets_are_refused(training_set, square_set, tmp_path, capsys):
    out = tmp_path / 'run'
    assert train(args(training_set, out, tmp_path / 'missing.npz', '--steps', '1')) == 2
    assert 'no grounding set' in capsys.readouterr().err
    corrupt = tmp_path / 'corrupt.npz'
    corrupt.write_bytes(square_set.read_bytes()[:5000])
    assert train(args(training_set, out, corrupt, '--steps', '1')) == 2
    assert 'not a readable grounding set' in capsys.readouterr().err
    data = squares(10)
    foreign = tmp_path / 'foreign.npz'
    GroundingSet(
        data.images,
        data.proprio,
        data.positions,
        data.objects,
        ('stack the cups', INSTRUCTIONS[0]),
        (0, 1),
    ).save(foreign)
    assert train(args(training_set, out, foreign, '--steps', '1')) == 2
    assert 'stack the cups' in capsys.readouterr().err
    one_camera = tmp_path / 'one_camera.npz'
    GroundingSet(
        {robot.CAMERAS[0]: data.images[robot.CAMERAS[0]]},
        data.proprio,
        data.positions,
        data.objects,
        data.instructions,
        data.targets,
    ).save(one_camera)
    assert train(args(training_set, out, one_camera, '--steps', '1')) == 2
    assert 'lacks cameras' in capsys.readouterr().err
    with pytest.raises(ValueError, match='finite'):
        GroundingSet(
            data.images,
            np.full_like(data.proprio, np.nan),
            data.positions,
            data.objects,
            data.instructions,
            data.targets,
        )
    with pytest.raises(ValueError, match='index objects'):
        GroundingSet(
            data.images, data.proprio, data.positions, data.objects, data.instructions, (0, 2)
        )
    assert not (out / 'checkpoints').exists()
