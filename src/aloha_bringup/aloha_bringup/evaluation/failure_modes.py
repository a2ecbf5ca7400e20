"""Why an episode failed, from the simulation's ground truth alone (no video needed).

Every episode gets one category, decided in the order a pick-and-place fails: no grasp point
ever came within the approach distance (5 cm) of an object ("nothing reached": a grasp aimed
far off, or arms that never left the start), the first object reached was the wrong one, the
gripper closed on or beside the target without lifting it, lifted it and lost it on the way,
released it beside the pot, or still held it when time ran out. Both evaluators
(quick_eval and eval_sim) record it, so the failure table of docs/results.md is counted, not
judged from videos, and the same counting applies to every checkpoint compared.

`still_seconds` answers the other question of a failed episode: the longest time both grasp
points stayed within a centimetre. Arms that stop while chunks keep coming
are a policy repeating one pose (its chunks say "stay"), not an executor that stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from aloha_sim.scenes import POT_INNER_RADIUS, PutXIntoPot, Scene

if TYPE_CHECKING:  # closed_loop_metrics calls this module
    from aloha_bringup.evaluation.closed_loop_metrics import Approach, StateSample

SUCCESS = 'success'
UNSTABLE = 'sim unstable'
NO_APPROACH = 'nothing reached'
WRONG_OBJECT = 'wrong object'
GRASP_MISSED = 'grasp missed'
DROPPED = 'dropped on the way'
BESIDE_POT = 'released beside the pot'
HELD_AT_TIME_OUT = 'held at time out'
HANDOVER_MISSED = 'handover missed'
# In the order of a pick-and-place: tables list the categories this way.
CATEGORIES = (
    SUCCESS,
    UNSTABLE,
    NO_APPROACH,
    WRONG_OBJECT,
    GRASP_MISSED,
    DROPPED,
    BESIDE_POT,
    HELD_AT_TIME_OUT,
    HANDOVER_MISSED,
)

# The target counts as lifted 3 cm above where it started: more than a push or a roll can
# raise a 3.6-4.4 cm thick vegetable or a 4 cm cube.
LIFT_HEIGHT = 0.03  # m
# Released within this of the pot's rim (its centre plus the inner radius) = beside the pot:
# the carry ended there, the drop missed.
BESIDE_POT_MARGIN = 0.05  # m
STILL_RADIUS = 0.01  # m


def failure_mode(
    scene: Scene,
    instruction: str,
    samples: Sequence[StateSample],
    success: bool,
    unstable: bool,
    approach: Approach | None,
    approach_distance: float,
) -> str:
    """The episode's category (one of CATEGORIES); samples in time order, `approach` the first
    object a grasp point came within `approach_distance` of (episode_measures has it)."""
    if success:
        return SUCCESS
    if unstable:
        return UNSTABLE
    if not samples:
        return NO_APPROACH
    target = scene.target_object(instruction)
    if isinstance(scene, PutXIntoPot):
        if approach is None:
            return NO_APPROACH
        if approach.object != target:
            return WRONG_OBJECT
    z = np.array([s.objects[target][2] for s in samples])
    lifted = z >= z[0] + LIFT_HEIGHT
    if not lifted.any():
        closest = min(
            float(np.linalg.norm(np.subtract(g, s.objects[target])))
            for s in samples
            for g in s.grasp.values()
        )
        return GRASP_MISSED if closest <= approach_distance else NO_APPROACH
    if lifted[-1]:
        return HELD_AT_TIME_OUT if isinstance(scene, PutXIntoPot) else HANDOVER_MISSED
    if not isinstance(scene, PutXIntoPot):
        return DROPPED
    last = samples[int(np.flatnonzero(lifted)[-1])]
    gap = np.linalg.norm(np.subtract(last.objects[target][:2], last.objects['pot'][:2]))
    return BESIDE_POT if gap <= POT_INNER_RADIUS + BESIDE_POT_MARGIN else DROPPED


def still_seconds(samples: Sequence[StateSample], radius: float = STILL_RADIUS) -> float:
    """The longest stretch (s) in which every grasp point stayed within `radius` of where it
    was at the stretch's start."""
    longest, start = 0.0, 0
    for i, sample in enumerate(samples):
        anchor = samples[start]
        moved = any(
            np.linalg.norm(np.subtract(sample.grasp[arm], anchor.grasp[arm])) > radius
            for arm in sample.grasp
        )
        if moved:
            start = i
        longest = max(longest, sample.t - samples[start].t)
    return round(longest, 3)
