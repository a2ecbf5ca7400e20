"""The DART tracking disturbance: its statistics, and that the simulated arms really track
`command + offset` while the command (what demos record) stays clean."""

from __future__ import annotations

import numpy as np
import pytest

from aloha_sim.physics import AlohaSim
from aloha_sim.tracking_noise import TrackingNoise
from oft_policy_node import robot

STD, TAU = 0.03, 0.5
POSE = [0.0, -0.5, 0.5, 0.0, 0.3, 0.0, robot.normalized_to_motor(1.0)]


def test_offsets_have_the_configured_std_and_correlation_time():
    noise = TrackingNoise(STD, TAU)
    noise.reset(7)
    dt, samples = 0.04, []
    for _ in range(20000):  # 800 s: ~1600 correlation times
        noise.advance(dt)
        samples.append(noise.offsets['left'].copy())
    samples = np.array(samples)  # (N, 6)
    assert samples.std(axis=0) == pytest.approx(np.full(6, STD), rel=0.15)
    lag = round(TAU / dt)  # one correlation time apart: correlation exp(-1)
    corr = np.mean([np.corrcoef(samples[:-lag, j], samples[lag:, j])[0, 1] for j in range(6)])
    assert corr == pytest.approx(np.exp(-1.0), abs=0.1)


def test_reset_zeroes_the_offsets_and_replays_the_same_draws():
    noise = TrackingNoise(STD, TAU)
    runs = []
    for _ in range(2):
        noise.reset(3)
        assert all(not offset.any() for offset in noise.offsets.values())
        noise.advance(0.1)
        runs.append(np.concatenate(list(noise.offsets.values())))
    np.testing.assert_array_equal(runs[0], runs[1])
    noise.reset(4)
    noise.advance(0.1)
    assert not np.array_equal(np.concatenate(list(noise.offsets.values())), runs[0])


@pytest.mark.parametrize(
    'std, tau', [(-0.01, 0.5), (float('nan'), 0.5), (0.03, 0.0), (0.03, float('inf'))]
)
def test_bad_settings_are_refused(std, tau):
    with pytest.raises(ValueError, match='tracking noise'):
        TrackingNoise(std, tau)


def settled_joints(sim: AlohaSim, seed: int) -> np.ndarray:
    sim.reset(seed)
    sim.set_command('left', POSE)
    for _ in range(50):  # 2 s in control ticks: the servos settle on the (moving) target
        sim.step(20)
    return sim.joint_state('left').position[:6]


def test_the_arm_tracks_the_disturbed_target_and_the_command_stays_clean():
    # A slow drift (5 s) so the servos' own lag behind a moving target stays small here.
    noisy = AlohaSim('put_x_into_pot', 48, 64, TrackingNoise(0.1, 5.0))
    exact = AlohaSim('put_x_into_pot', 48, 64)
    try:
        reached = settled_joints(noisy, seed=5)
        np.testing.assert_allclose(noisy.command('left'), POSE, atol=1e-9)
        offset = noisy.tracking_noise.offsets['left']
        assert np.abs(offset).max() > 0.05  # a 0.1 rad std process, 2 s in
        # The servos follow command + offset (with their own lag), not the command.
        to_disturbed = np.linalg.norm(reached - np.add(POSE[:6], offset))
        to_command = np.linalg.norm(reached - POSE[:6])
        assert to_disturbed < 0.4 * to_command and to_command > 0.05
        np.testing.assert_allclose(settled_joints(exact, seed=5), POSE[:6], atol=0.02)
        # The same seed disturbs the same way: demos stay reproducible.
        np.testing.assert_allclose(settled_joints(noisy, seed=5), reached, atol=1e-9)
    finally:
        noisy.close()
        exact.close()
