"""evaluate: per-dimension open-loop L1 in robot units on the run's held-out episodes, a plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oft_policy_node.model import OftPolicy
from oft_training.data.training_set import TrainingSet
from oft_training.evaluate import (
    CAMERAS_SWAPPED,
    INSTRUCTION_SWAPPED,
    evaluate_episode,
    predict_chunks,
    reliance_summary,
)
from oft_training.evaluate import main as evaluate
from oft_training.train import main as train


def test_evaluate_reports_l1_per_dimension_and_plots(training_set, tmp_path, capsys):
    run = tmp_path / 'run'
    assert (
        train(
            [
                '--data',
                str(training_set),
                '--out',
                str(run),
                '--preset',
                'tiny',
                '--steps',
                '2',
                '--batch-size',
                '2',
            ]
        )
        == 0
    )
    out = tmp_path / 'eval'
    assert (
        evaluate(
            [
                '--checkpoint',
                str(run / 'final'),
                '--data',
                str(training_set),
                '--run',
                str(run),
                '--out',
                str(out),
                '--every',
                '5',
            ]
        )
        == 0
    )
    report = json.loads((out / 'eval.json').read_text())
    assert list(report['episodes']) == ['episode_2']  # the seeded validation split
    assert len(report['l1_per_dimension']) == 14
    assert (out / 'episode_2.png').stat().st_size > 10_000

    # The reported numbers are the mean |predicted - recorded| in robot units.
    data = TrainingSet(training_set, ['episode_2'])
    result = evaluate_episode(OftPolicy.from_pretrained(run / 'final'), data, 0, 5)
    assert list(result['ticks']) == [0, 5, 10, 15, 20, 25]
    error = np.abs(result['predicted'] - result['recorded'])
    np.testing.assert_allclose(
        list(report['l1_per_dimension'].values()), error.reshape(-1, 14).mean(0), rtol=1e-5
    )
    assert 'open-loop L1' in capsys.readouterr().out

    assert (
        evaluate(
            [
                '--checkpoint',
                str(run / 'final'),
                '--data',
                str(training_set),
                '--episodes',
                'nope',
                '--out',
                str(out),
            ]
        )
        == 2
    )
    assert "episodes ['nope'] are not in" in capsys.readouterr().err


def test_input_reliance_reports_swapped_inputs(training_set, tmp_path, capsys):
    """eval.json's input_reliance is the L1 of the chunks predicted with another episode's
    cameras and with another instruction; the test set's frames depend only on the tick, so
    swapping cameras changes nothing and the summary says the cameras are ignored."""
    run = tmp_path / 'run'
    assert (
        train(
            [
                '--data',
                str(training_set),
                '--out',
                str(run),
                '--preset',
                'tiny',
                '--steps',
                '1',
                '--batch-size',
                '2',
                '--val-fraction',
                '0',
            ]
        )
        == 0
    )
    out = tmp_path / 'eval'
    assert (
        evaluate(
            [
                '--checkpoint',
                str(run / 'final'),
                '--data',
                str(training_set),
                '--out',
                str(out),
                '--every',
                '5',
            ]
        )
        == 0
    )
    reliance = json.loads((out / 'eval.json').read_text())['input_reliance']

    data = TrainingSet(training_set, None)
    policy = OftPolicy.from_pretrained(run / 'final')
    results = [evaluate_episode(policy, data, n, 5) for n in range(3)]
    for scope, rows in (('all_ticks', slice(None)), ('episode_start', slice(0, 1))):
        for key, name in (
            ('predicted', 'recorded_inputs'),
            (CAMERAS_SWAPPED, CAMERAS_SWAPPED),
            (INSTRUCTION_SWAPPED, INSTRUCTION_SWAPPED),
        ):
            expected = np.mean(
                [np.abs(r[key][rows] - r['recorded'][rows]).mean() for r in results]
            )
            assert reliance[scope][name] == pytest.approx(expected, rel=1e-5)
    # Same frames at the same tick in every test episode: the camera swap is a no-op ...
    np.testing.assert_array_equal(results[0][CAMERAS_SWAPPED], results[0]['predicted'])
    # ... while the instruction reaches the policy (the prompt is part of the Llama's input).
    assert not np.allclose(results[0][INSTRUCTION_SWAPPED], results[0]['predicted'])
    assert 'hardly reacts to its cameras' in capsys.readouterr().out


def test_predict_chunks_with_other_cameras_depends_on_the_vision_path(training_set, tmp_path):
    """Another episode's images change the chunks of a policy that sees them, and change nothing
    once the vision projector is zeroed (the probe measures the cameras, not noise)."""
    run = tmp_path / 'run'
    assert (
        train(
            [
                '--data',
                str(training_set),
                '--out',
                str(run),
                '--preset',
                'tiny',
                '--steps',
                '1',
                '--batch-size',
                '2',
            ]
        )
        == 0
    )
    policy = OftPolicy.from_pretrained(run / 'final')
    data = TrainingSet(training_set, None)
    arrays = data.episode_arrays(0)
    inverted = {cam: 255 - np.asarray(arrays[cam]) for cam in policy.config.camera_names}
    ticks = np.array([0, 7])
    text = data.episodes[0]['instruction']
    own = predict_chunks(policy, arrays, ticks, text)
    assert not np.allclose(predict_chunks(policy, arrays, ticks, text, inverted), own)
    with torch.no_grad():
        for param in policy.network.projector.parameters():
            param.zero_()
    own = predict_chunks(policy, arrays, ticks, text)
    np.testing.assert_array_equal(predict_chunks(policy, arrays, ticks, text, inverted), own)


def test_reliance_summary_flags_ignored_cameras_only_at_the_start():
    ignored = {
        'all_ticks': {'recorded_inputs': 0.02, CAMERAS_SWAPPED: 0.03},
        'episode_start': {'recorded_inputs': 0.1, CAMERAS_SWAPPED: 0.104},
    }
    assert 'x1.50' in reliance_summary(ignored)
    assert 'hardly reacts' in reliance_summary(ignored)
    ignored['episode_start'][CAMERAS_SWAPPED] = 0.2
    assert 'hardly reacts' not in reliance_summary(ignored)
