"""Scripted demonstrators' success rate: 50 seeded episodes per scene on MuJoCo physics,
without ROS (the same plans scripted_demo drives through the ROS graph)."""

from __future__ import annotations

import time

from aloha_sim.physics import AlohaSim
from aloha_sim.scenes import SCENES
from aloha_sim.scripted import ScriptedDemonstrator, run_episode
from aloha_sim.scripted_demo_node import instruction_for

EPISODES = 50


def run() -> dict:
    metrics = {'episodes_per_scene': EPISODES, 'scenes': {}}
    for name in SCENES:
        sim = AlohaSim(name, 48, 64)
        demonstrator = ScriptedDemonstrator(sim.scene, sim.model)
        start = time.perf_counter()
        wins = [
            run_episode(sim, demonstrator, seed, instruction_for(name, seed, None))
            for seed in range(EPISODES)
        ]
        sim.close()
        metrics['scenes'][name] = {
            'success_rate': sum(wins) / EPISODES,
            'failed_seeds': [seed for seed, ok in enumerate(wins) if not ok],
            'seconds_per_episode': round((time.perf_counter() - start) / EPISODES, 3),
        }
    return metrics
