"""A tracking disturbance on the arm joints, for recording demos the policy can recover from.

A policy cloned from clean demos only ever saw states on the demonstrator's path; its own
small errors take it off that path, where it has no data and errs more (compounding error).
DART (Laskey et al., CoRL 2017) injects noise while demonstrating, so the demos visit states
near the path, and records the demonstrator's *clean* command as the action there: the label
says "from here, go back to the plan". Here the noise sits between the command and the
servos: the simulation tracks `command + offset`, the recorded command stays clean.

The offset is an Ornstein-Uhlenbeck process per joint: stationary standard deviation `std`
(rad), correlation time `correlation_time` (s), so it drifts smoothly like a tracking error
instead of shaking. It is exact for any step length and seeded per episode (reproducible demos).
"""

from __future__ import annotations

import math

import numpy as np

from oft_policy_node import robot


class TrackingNoise:
    def __init__(self, std: float, correlation_time: float = 0.5) -> None:
        if not (math.isfinite(std) and std >= 0.0):
            raise ValueError(f'tracking noise std {std!r} must be a finite number >= 0 (rad)')
        if not (math.isfinite(correlation_time) and correlation_time > 0.0):
            raise ValueError(
                f'tracking noise correlation time {correlation_time!r} must be a '
                'finite number > 0 (s)'
            )
        self.std = std
        self.correlation_time = correlation_time
        self._rng = np.random.default_rng(0)
        self.offsets = {arm: np.zeros(len(robot.ARM_JOINTS)) for arm in robot.ARMS}

    def reset(self, seed: int) -> None:
        """A new episode: offsets back to zero (the arms start where commanded), new draws."""
        self._rng = np.random.default_rng(seed)
        for offset in self.offsets.values():
            offset[:] = 0.0

    def advance(self, dt: float) -> None:
        """Move the offsets `dt` seconds on (the exact OU transition for that step)."""
        decay = math.exp(-dt / self.correlation_time)
        spread = self.std * math.sqrt(1.0 - decay * decay)
        for offset in self.offsets.values():
            offset *= decay
            offset += spread * self._rng.standard_normal(offset.shape)
