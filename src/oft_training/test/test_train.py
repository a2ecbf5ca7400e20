"""train with the tiny preset: the loss falls; an interrupted (Ctrl-C) and resumed run
reproduces the uninterrupted run exactly; two gloo processes make the same update as one; the
final checkpoint loads with OftPolicy.from_pretrained; bad settings are refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oft_policy_node.model import OftPolicy, get_preset
from oft_policy_node.model.checkpoint import read_weights
from oft_training.data.training_set import TrainingSet
from oft_training.train import main as train
from oft_training.training import precision
from oft_training.training.batches import (
    SampleDataset,
    StepBatches,
    collate,
    sample_seed,
    start_weighted_stream,
)
from oft_training.training.loop import FINAL_DIR
from oft_training.training.metrics_log import METRICS_FILE
from tests.python_snippet import run_python

from .conftest import INSTRUCTIONS


def args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        '--data',
        str(data),
        '--out',
        str(out),
        '--preset',
        'tiny',
        '--batch-size',
        '4',
        '--val-every',
        '4',
        '--seed',
        '3',
        *extra,
    ]


def metrics(out: Path) -> list[dict]:
    """Logged metrics per step, without the wall-clock step time."""
    lines = (out / METRICS_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != 'step_s'} for line in lines]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return read_weights(out / FINAL_DIR)


def test_loss_falls_and_checkpoint_loads(training_set, tmp_path):
    out = tmp_path / 'run'
    assert (
        train(
            args(training_set, out, '--steps', '24', '--lr-decay-step', '100', '--val-every', '8')
        )
        == 0
    )
    losses = [m['loss'] for m in metrics(out)]
    assert len(losses) == 24
    assert np.mean(losses[-8:]) < 0.75 * np.mean(losses[:3]), losses
    val = [m['val_l1'] for m in metrics(out) if 'val_l1' in m]
    assert len(val) == 3 and val[-1] < val[0], val
    assert list((out / 'tensorboard').glob('events.out.tfevents.*'))

    policy = OftPolicy.from_pretrained(out / FINAL_DIR, device='cpu')
    assert set(policy.instructions) == set(INSTRUCTIONS)
    data_stats = json.loads((training_set / 'index.json').read_text())['stats']
    np.testing.assert_allclose(policy.stats.action_min, data_stats['action_min'], rtol=1e-6)
    rng = np.random.default_rng(0)
    images = {
        cam: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        for cam in policy.config.camera_names
    }
    chunk = policy.predict_action_chunk(images, np.zeros(14), INSTRUCTIONS[0])
    assert chunk.shape == (25, 14)
    assert np.all(chunk >= policy.stats.action_min - 1e-5)
    assert np.all(chunk <= policy.stats.action_max + 1e-5)


def test_resume_with_other_steps_moves_the_lr_decay(training_set, tmp_path):
    """Resumed with more --steps, the x0.1 decay moves to 80 % of the new count, and a run
    resumed past its new decay step continues decayed (the saved scheduler held the first
    run's milestone)."""
    longer, shorter = tmp_path / 'longer', tmp_path / 'shorter'
    for out in (longer, shorter):  # 8 steps: decay after step 6
        assert train(args(training_set, out, '--steps', '8', '--save-every', '4')) == 0
    assert [m['lr'] for m in metrics(longer)][5:7] == pytest.approx([5e-4, 5e-5])

    assert (
        train(args(training_set, longer, '--steps', '20', '--save-every', '4', '--resume')) == 0
    )  # decay after step 16
    rates = {m['step']: m['lr'] for m in metrics(longer)[8:]}
    assert rates == pytest.approx({step: 5e-4 if step <= 16 else 5e-5 for step in range(9, 21)})

    assert (
        train(args(training_set, shorter, '--steps', '10', '--save-every', '4', '--resume')) == 0
    )  # decay after step 8: already passed
    assert metrics(shorter)[8]['lr'] == pytest.approx(5e-5)


def test_resume_accepts_the_same_data_by_another_path(training_set, tmp_path, monkeypatch, capsys):
    """--data given relative at first and absolute on resume (or the other way round) is the
    same training set; another folder is refused."""
    out = tmp_path / 'run'
    monkeypatch.chdir(training_set.parent)
    assert train(args(Path(training_set.name), out, '--steps', '4', '--save-every', '4')) == 0
    assert (
        train(args(training_set.resolve(), out, '--steps', '6', '--save-every', '4', '--resume'))
        == 0
    )
    assert len(metrics(out)) == 6
    other = tmp_path / 'other'
    shutil.copytree(training_set, other)
    assert train(args(other, out, '--steps', '8', '--resume')) == 2
    assert 'settings changed' in capsys.readouterr().err


@pytest.mark.slow
def test_interrupted_run_resumes_exactly(training_set, tmp_path):
    settings = ('--steps', '8', '--lr-decay-step', '5', '--save-every', '100')
    reference = tmp_path / 'reference'
    assert train(args(training_set, reference, *settings)) == 0

    # Ctrl-C as step 2's metrics line is written, sent by the run itself: where a signal from
    # outside lands (or whether the run has already finished) depends on how busy the machine is.
    interrupted = tmp_path / 'interrupted'
    result = run_python(
        f"""
        import os, signal, sys
        from oft_training.train import main
        from oft_training.training.metrics_log import MetricsLogger

        log = MetricsLogger.log

        def log_then_ctrl_c(self, metrics):
            log(self, metrics)
            if metrics['step'] == 2:
                os.kill(os.getpid(), signal.SIGINT)

        MetricsLogger.log = log_then_ctrl_c
        sys.exit(main({list(args(training_set, interrupted, *settings))!r}))
        """,
        timeout=300,
    )
    assert result.returncode == 130, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(metrics(interrupted)) == 2  # the step the signal came in is finished and saved
    assert not (interrupted / FINAL_DIR).exists()

    assert train(args(training_set, interrupted, *settings, '--resume')) == 0
    assert metrics(interrupted) == metrics(reference)  # every loss, lr and val_l1, bit for bit
    resumed, uninterrupted = weights(interrupted), weights(reference)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


@pytest.mark.slow
def test_two_gloo_processes_match_one(training_set, tmp_path):
    one = tmp_path / 'one'
    assert train(args(training_set, one, '--steps', '2', '--grad-accumulation', '2')) == 0
    two = tmp_path / 'two'
    run = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--standalone',
            '--nproc-per-node',
            '2',
            '-m',
            'oft_training.train',
            *args(training_set, two, '--steps', '2', '--device', 'cpu'),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # Same global batch of 4 in micro-batches of 2: one process accumulates two, two processes
    # all-reduce one each. Only the summation order differs.
    for a, b in zip(metrics(one), metrics(two), strict=True):
        assert a['loss'] == pytest.approx(b['loss'], abs=1e-6)
    w1, w2 = weights(one), weights(two)
    moved = [
        k
        for k in w1
        if not torch.equal(w1[k], read_weights(one / 'checkpoints' / 'step_0000002' / 'policy')[k])
    ]
    assert not moved  # the final checkpoint is the last step's weights
    # Adam divides each step by the gradient's own RMS, so where gradients are tiny (LoRA B on
    # its first steps) a summation-order difference moves a weight by a visible share of the
    # 5e-4 step: seen 3.4e-6 on a CPU with AMX. 1e-5 is 2 % of one step; a wrong all-reduce
    # (a missing or doubled micro-batch) moves weights by whole steps.
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], atol=1e-5, rtol=1e-5, msg=key)


def test_bad_settings(training_set, tmp_path, capsys):
    out = tmp_path / 'run'
    assert train(args(training_set, out, '--steps', '1')) == 0
    assert train(args(training_set, out, '--steps', '2')) == 2
    assert 'pass --resume' in capsys.readouterr().err
    assert train(args(training_set, out, '--steps', '2', '--resume', '--lr', '1e-3')) == 2
    assert "'lr': (0.0005, 0.001)" in capsys.readouterr().err
    assert train(args(tmp_path / 'nothing', tmp_path / 'x', '--steps', '1')) == 2
    assert 'index.json not found' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(args(training_set, out, '--batch-size', '0'))
    assert (
        train(args(training_set, tmp_path / 'y', '--batch-size', '3', '--grad-accumulation', '2'))
        == 2
    )
    assert 'must be a multiple of processes' in capsys.readouterr().err


def test_no_film_ablation_trains_without_film_maps(training_set, tmp_path):
    out = tmp_path / 'nofilm'
    assert train(args(training_set, out, '--steps', '2', '--no-film')) == 0
    assert not [k for k in weights(out) if '_film.' in k]
    policy = OftPolicy.from_pretrained(out / FINAL_DIR, device='cpu')
    assert policy.config.use_film is False
    rng = np.random.default_rng(1)
    images = {
        cam: rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        for cam in policy.config.camera_names
    }
    chunks = [policy.predict_action_chunk(images, np.zeros(14), text) for text in INSTRUCTIONS]
    # The instruction still reaches the actions through the LLM prompt.
    assert not np.allclose(chunks[0], chunks[1])
    # FiLM on/off is part of the run's identity: a resumed run cannot switch it.
    assert train(args(training_set, out, '--steps', '3', '--resume')) == 2


def test_zero_action_slots_reach_the_checkpoint_and_are_frozen_on_resume(training_set, tmp_path):
    out = tmp_path / 'zeros'
    assert train(args(training_set, out, '--steps', '2', '--action-slots', 'zeros')) == 0
    assert 'action_slots' not in weights(out)
    assert OftPolicy.from_pretrained(out / FINAL_DIR).config.action_slots == 'zeros'
    resumed = args(training_set, out, '--steps', '3', '--resume', '--action-slots', 'learned')
    assert train(resumed) == 2


def test_start_repeats_draw_episode_starts_more_often(training_set):
    ticks = TrainingSet(training_set).sample_ticks()
    assert ticks.min() == 0 and (np.diff(ticks) != 1).sum() == 2  # three episodes, in order
    stream = start_weighted_stream(ticks, start_ticks=5, repeats=4)
    assert len(stream) == len(ticks) + 3 * 5 * 3  # 5 early samples per episode, 3 extra copies
    batches = StepBatches(len(ticks), 4, seed=0, start_step=0, num_steps=200, stream=stream)
    drawn = np.array(
        [i for step in range(-(-len(stream) // 4)) for i, _ in batches.step_keys(step)]
    )[: len(stream)]
    # One epoch of the stream: every sample at least once, the early ones exactly 4 times.
    counts = np.bincount(drawn, minlength=len(ticks))
    np.testing.assert_array_equal(counts, np.where(ticks < 5, 4, 1))
    with pytest.raises(ValueError, match='sample stream'):
        StepBatches(len(ticks), 4, 0, 0, 10, stream=np.array([len(ticks)]))
    with pytest.raises(ValueError, match='repeats=0'):
        start_weighted_stream(ticks, 5, 0)


def test_start_repeats_reach_the_sampler_and_are_frozen_on_resume(training_set, tmp_path):
    out = tmp_path / 'run'
    assert train(args(training_set, out, '--steps', '2', '--start-repeats', '3')) == 0
    assert train(args(training_set, out, '--steps', '3', '--resume')) == 2  # 1 != 3: refused
    assert train(args(training_set, out, '--steps', '3', '--start-repeats', '3', '--resume')) == 0


def test_init_policy_starts_from_a_trained_policy(training_set, tmp_path, capsys):
    first = tmp_path / 'first'
    assert train(args(training_set, first, '--steps', '4')) == 0
    trained = weights(first)
    # A learning rate this small leaves the loaded weights as they were, so the second run's
    # final shows what it started from.
    go_on = tmp_path / 'go_on'
    assert (
        train(
            args(
                training_set,
                go_on,
                '--steps',
                '1',
                '--lr',
                '1e-12',
                '--init-policy',
                str(first / FINAL_DIR),
            )
        )
        == 0
    )
    assert all(torch.allclose(weights(go_on)[k], v, atol=1e-9) for k, v in trained.items())
    fresh = tmp_path / 'fresh'
    assert train(args(training_set, fresh, '--steps', '1', '--lr', '1e-12')) == 0
    assert any(not torch.allclose(weights(fresh)[k], v, atol=1e-9) for k, v in trained.items())
    # A training checkpoint works too.
    step = first / 'checkpoints' / 'step_0000004'
    assert (
        train(
            args(
                training_set,
                tmp_path / 'from_step',
                '--steps',
                '1',
                '--lr',
                '1e-12',
                '--init-policy',
                str(step),
            )
        )
        == 0
    )
    capsys.readouterr()

    nofilm = tmp_path / 'nofilm'
    assert train(args(training_set, nofilm, '--steps', '1', '--no-film')) == 0
    assert (
        train(
            args(
                training_set,
                tmp_path / 'a',
                '--steps',
                '1',
                '--init-policy',
                str(nofilm / FINAL_DIR),
            )
        )
        == 2
    )
    assert 'use_film=False' in capsys.readouterr().err
    assert (
        train(
            args(
                training_set,
                tmp_path / 'b',
                '--steps',
                '1',
                '--init-policy',
                str(tmp_path / 'missing'),
            )
        )
        == 2
    )
    assert 'neither a policy folder' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(
            args(
                training_set,
                tmp_path / 'c',
                '--init-policy',
                str(first / FINAL_DIR),
                '--init-vision',
                str(tmp_path / 'backbone.pt'),
            )
        )
    # The starting point is part of the run: resuming with another one is refused.
    assert train(args(training_set, go_on, '--steps', '2', '--resume')) == 2
    assert 'init_policy' in capsys.readouterr().err


def test_bf16_autocast_trains_float32_weights_and_changes_the_arithmetic(
    training_set, tmp_path, monkeypatch
):
    # Any CPU runs bf16 autocast (emulated where it lacks AVX-512 BF16 / AMX); `train` refuses
    # it only there, because it is slow, so the test pretends the flags are present.
    monkeypatch.setattr(precision, 'cpu_bf16_flags', lambda: ['avx512_bf16'])
    runs = {}
    for name in ('float32', 'bfloat16'):
        out = tmp_path / name
        assert train(args(training_set, out, '--steps', '2', '--precision', name)) == 0
        runs[name] = out
    losses = {name: [m['loss'] for m in metrics(out)] for name, out in runs.items()}
    assert all(np.isfinite(v).all() for v in losses.values())
    assert losses['float32'] != losses['bfloat16']  # bf16 matmuls round differently
    assert losses['float32'] == pytest.approx(losses['bfloat16'], rel=0.05)  # but barely
    assert {t.dtype for t in weights(runs['bfloat16']).values()} == {torch.float32}


def test_precision_rules(monkeypatch):
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert precision.resolve('auto', cpu) == 'float32'
    assert precision.resolve('auto', cuda) == 'bfloat16'
    monkeypatch.setattr(precision, 'cpu_bf16_flags', list)  # a CPU without bf16 arithmetic
    with pytest.raises(ValueError, match='without AVX-512 BF16 or AMX'):
        precision.resolve('bfloat16', cpu)
    assert precision.resolve('bfloat16', cuda) == 'bfloat16'
    with pytest.raises(ValueError, match="precision='fp8'"):
        precision.resolve('fp8', cpu)


@pytest.mark.slow
def test_a_compiled_run_makes_the_same_steps_as_an_eager_one(training_set, tmp_path):
    runs = {}
    for name, extra in (('eager', ()), ('compiled', ('--compile',))):
        out = tmp_path / name
        assert train(args(training_set, out, '--steps', '2', *extra)) == 0
        runs[name] = out
    eager, compiled = ([m['loss'] for m in metrics(runs[n])] for n in ('eager', 'compiled'))
    assert compiled == pytest.approx(eager, rel=1e-4)  # fused kernels, the same arithmetic
    w_eager, w_compiled = weights(runs['eager']), weights(runs['compiled'])
    assert w_eager.keys() == w_compiled.keys()  # no `_orig_mod.` prefix in the checkpoint


def test_prefix_steps_draw_d_per_sample_with_zero_in_the_mix(training_set):
    data = TrainingSet(training_set)
    policy = OftPolicy(get_preset('tiny').replace(prefix_steps=4), stats=data.stats)
    dataset = SampleDataset(data, policy.config, data.stats, prefix_steps=4)
    drawn = [dataset[(0, sample_seed(3, step, 0))]['prefix_steps'] for step in range(400)]
    counts = np.bincount(drawn, minlength=5)
    assert len(counts) == 5 and counts.min() > 50  # every d of 0..4, about 80 times each
    assert dataset[(0, None)]['prefix_steps'] == 0  # validation views are given nothing
    batch = collate([dataset[(i, sample_seed(3, 7, i))] for i in range(3)])
    assert batch['prefix_steps'].shape == (3,) and batch['prefix_steps'].dtype == torch.long


def test_init_policy_without_a_prefix_gains_one_and_keeps_the_rest(training_set, tmp_path):
    first = tmp_path / 'plain'
    assert train(args(training_set, first, '--steps', '2')) == 0
    go_on = tmp_path / 'prefix'
    extra = ('--steps', '2', '--lr', '1e-12', '--init-policy', str(first / FINAL_DIR))
    assert train(args(training_set, go_on, *extra, '--prefix-steps', '5')) == 0
    before, after = weights(first), weights(go_on)
    assert set(after) - set(before) == {'action_prefix.given', 'action_prefix.value'}
    assert all(torch.allclose(after[k], v, atol=1e-9) for k, v in before.items())
    assert OftPolicy.from_pretrained(go_on / FINAL_DIR).config.prefix_steps == 5
    # Settings a resumed run shares; and a prefix policy cannot silently lose its prefix.
    assert train(args(training_set, go_on, '--steps', '3', '--resume', *extra[2:])) == 2
    back = ('--steps', '1', '--init-policy', str(go_on / FINAL_DIR))
    assert train(args(training_set, tmp_path / 'lost', *back)) == 2


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason='this torch has CUDA')
def test_a_device_that_is_not_there_is_one_line(tmp_path, capsys):
    from oft_training.train import main

    code = main(['--data', str(tmp_path), '--out', str(tmp_path / 'run'), '--device', 'cuda:3'])
    err = capsys.readouterr().err
    assert code == 2 and 'Traceback' not in err
    assert err.startswith("train: error: device 'cuda:3': this torch (") and 'without CUDA' in err


def test_gradient_checkpointing_makes_the_same_steps(training_set, tmp_path):
    """Recomputing the ViT blocks and Llama layers in backward gives the same gradients: the
    same losses and weights as keeping the activations (float32, one process)."""
    plain, recomputed = tmp_path / 'plain', tmp_path / 'recomputed'
    assert train(args(training_set, plain, '--steps', '3')) == 0
    assert train(args(training_set, recomputed, '--steps', '3', '--gradient-checkpointing')) == 0
    for a, b in zip(metrics(plain), metrics(recomputed), strict=True):
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-6)
    w1, w2 = weights(plain), weights(recomputed)
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], atol=1e-6, rtol=1e-5, msg=key)


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(training_set, tmp_path):
    """Checkpoints written before --trainable-dtype existed hold no such setting: they trained
    float32 weights, the default, so resuming them must not count it as a change."""
    out = tmp_path / 'old'
    assert train(args(training_set, out, '--steps', '1')) == 0
    state_file = out / 'checkpoints' / 'step_0000001' / 'trainer_state.pt'
    saved = torch.load(state_file, weights_only=False)
    del saved['config']['trainable_dtype']
    torch.save(saved, state_file)
    assert train(args(training_set, out, '--steps', '2', '--resume')) == 0
    # A saved value that differs still counts as a change.
    state_file = out / 'checkpoints' / 'step_0000002' / 'trainer_state.pt'
    saved = torch.load(state_file, weights_only=False)
    saved['config']['trainable_dtype'] = 'bfloat16'
    torch.save(saved, state_file)
    assert train(args(training_set, out, '--steps', '3', '--resume')) == 2
