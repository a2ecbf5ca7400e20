"""Recovery demos: the first grasp aimed beside the object on purpose, then the scripted retry
from where the arms are and the objects lie then.

A policy trained only on clean demos has never seen a grasp that closed on nothing: after one
it plays the rest of the task with an empty gripper (docs/results.md, "Why episodes fail").
These demos show the way back. Only the retry trains: record_demos marks in the bag where it
starts and the converter drops the deliberate miss before it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from aloha_sim.physics import Episode
from aloha_sim.scenes import Layout, Scene
from aloha_sim.scripted import ScriptedDemonstrator, Trajectory

# Scripted grasps aimed 3.5 cm off still lift the pepper and 5-7 cm offsets miss, so the
# deliberate miss is aimed 6 cm beside the object (it missed on 23 of 24 pot layouts).
MISS_DISTANCE = 0.06  # m
# Every scene's script has closed on and lifted its first object by 4.2 s (scripted.py).
LIFT_CHECK_S = 4.4  # s after the plan starts
LIFTED_RISE = 0.03  # m above where it started: the object is in the gripper


def aimed_beside(episode: Episode, scene: Scene, rng: np.random.Generator) -> Episode:
    """The episode with its target object moved MISS_DISTANCE in a random horizontal
    direction, for planning a grasp that misses. The direction keeps the object on its side
    of the table (x sign), so the arm that would pick it is the one that misses it."""
    target = scene.target_object(episode.instruction)
    x, y, z = episode.layout.positions[target]
    while True:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        dx, dy = MISS_DISTANCE * np.cos(angle), MISS_DISTANCE * np.sin(angle)
        if x == 0.0 or np.sign(x + dx) == np.sign(x):
            break
    positions = dict(episode.layout.positions)
    positions[target] = (x + dx, y + dy, z)
    return dataclasses.replace(episode, layout=Layout(positions))


def lifted(
    episode: Episode, scene: Scene, objects_now: Mapping[str, tuple[float, float, float]]
) -> bool:
    """Whether the episode's target object is held up (LIFTED_RISE above its start)."""
    target = scene.target_object(episode.instruction)
    return objects_now[target][2] > episode.layout.positions[target][2] + LIFTED_RISE


def retry(
    demonstrator: ScriptedDemonstrator,
    episode: Episode,
    objects_now: Mapping[str, tuple[float, float, float]],
    joints_now: Mapping[str, np.ndarray],
) -> Trajectory | None:
    """At LIFT_CHECK_S: None when the first grasp lifted the target anyway, else the plan
    that starts over from `joints_now` (each arm's last command) with the objects where
    they lie now (a miss may have pushed the target)."""
    if lifted(episode, demonstrator.scene, objects_now):
        return None
    here = Layout({name: tuple(objects_now[name]) for name in episode.layout.positions})
    return demonstrator.plan(dataclasses.replace(episode, layout=here), joints_now)
