"""evaluate: per-dimension open-loop L1 in robot units on the run's held-out episodes, a plot."""

from __future__ import annotations

import json

import numpy as np
from oft_policy_node.model import OftPolicy

from oft_training.data.training_set import TrainingSet
from oft_training.evaluate import evaluate_episode
from oft_training.evaluate import main as evaluate
from oft_training.train import main as train


def test_evaluate_reports_l1_per_dimension_and_plots(training_set, tmp_path, capsys):
    run = tmp_path / 'run'
    assert train(['--data', str(training_set), '--out', str(run), '--preset', 'tiny',
                  '--steps', '2', '--batch-size', '2']) == 0
    out = tmp_path / 'eval'
    assert evaluate(['--checkpoint', str(run / 'final'), '--data', str(training_set),
                     '--run', str(run), '--out', str(out), '--every', '5']) == 0
    report = json.loads((out / 'eval.json').read_text())
    assert list(report['episodes']) == ['episode_2']  # the seeded validation split
    assert len(report['l1_per_dimension']) == 14
    assert (out / 'episode_2.png').stat().st_size > 10_000

    # The reported numbers are the mean |predicted - recorded| in robot units.
    data = TrainingSet(training_set, ['episode_2'])
    result = evaluate_episode(OftPolicy.from_pretrained(run / 'final'), data, 0, 5)
    assert list(result['ticks']) == [0, 5, 10, 15, 20, 25]
    error = np.abs(result['predicted'] - result['recorded'])
    np.testing.assert_allclose(list(report['l1_per_dimension'].values()),
                               error.reshape(-1, 14).mean(0), rtol=1e-5)
    assert 'open-loop L1' in capsys.readouterr().out

    assert evaluate(['--checkpoint', str(run / 'final'), '--data', str(training_set),
                     '--episodes', 'nope', '--out', str(out)]) == 2
    assert "episodes ['nope'] are not in" in capsys.readouterr().err
