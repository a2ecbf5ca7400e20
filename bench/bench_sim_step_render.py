"""MuJoCo ALOHA simulation cost: physics step time per scene and render time per camera
(480x640 rgb8, EGL off-screen, no shadows / multisampling), with the real-time factor the sim
can reach with all three cameras at 30 Hz on this machine."""

from __future__ import annotations

import time

import numpy as np

from aloha_sim.physics import AlohaSim
from aloha_sim.scenes import SCENES
from oft_policy_node import robot

STEPS = 2000
RENDERS = 20
CAMERA_RATE_HZ = 30.0


def run() -> dict:
    metrics: dict = {'image': f'{robot.IMAGE_HEIGHT}x{robot.IMAGE_WIDTH}', 'scenes': {}}
    for name in SCENES:
        sim = AlohaSim(name)
        sim.reset(seed=0)
        start = time.perf_counter()
        for _ in range(STEPS):
            sim.step()
        step_ms = (time.perf_counter() - start) / STEPS * 1e3
        render_ms = {}
        for cam in robot.CAMERAS:
            sim.render(cam)  # warm-up: GL context and textures
            times = []
            for _ in range(RENDERS):
                sim.step(17)  # something moves between frames
                start = time.perf_counter()
                sim.render(cam)
                times.append(time.perf_counter() - start)
            render_ms[cam] = round(float(np.median(times)) * 1e3, 2)
        sim.close()
        # One sim second: 1/timestep physics steps plus 30 renders of each camera.
        cost_s = (step_ms / sim.timestep + CAMERA_RATE_HZ * sum(render_ms.values())) / 1e3
        metrics['scenes'][name] = {
            'physics_step_ms': round(step_ms, 4),
            'physics_timestep_s': sim.timestep,
            'render_ms_median': render_ms,
            'max_real_time_factor_3cams_30hz': round(min(1.0, 1.0 / cost_s), 3),
        }
    return metrics
