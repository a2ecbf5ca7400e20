"""What closed-loop evaluation measures, without ROS: which object a gripper approached first
(language following), and the per-instruction / overall summaries of episode records.

Language following is the paper's measure for "put X into pot": the policy follows the
instruction when the first object a gripper goes for is the instructed one, whether or not it
then finishes the task. "Goes for" = the grasp point (between the fingertips) of either gripper
comes within `approach_distance` of an object's centre, with both taken from the simulation's
ground truth (/task/state). Chance is 1 / number of candidate objects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from aloha_bringup.evaluation.demo_report import latency_stats
from aloha_bringup.evaluation.failure_modes import failure_mode, still_seconds
from aloha_sim.scenes import POT_ITEMS, PutXIntoPot, Scene, body_name
from oft_policy_node import robot

# A vegetable is 3.6-7.6 cm long and the fingers open 6 cm: a grasp point within 5 cm of an
# item's centre is touching it or about to close on it.
DEFAULT_APPROACH_DISTANCE = 0.05  # m


@dataclass(frozen=True)
class StateSample:
    """One /task/state message: sim time (s), grasp point per arm and object centres, (3,)."""

    t: float
    grasp: Mapping[str, Sequence[float]]
    objects: Mapping[str, Sequence[float]]


@dataclass(frozen=True)
class Approach:
    """The first time a gripper came within the approach distance of a candidate object."""

    t: float  # s, sim time
    arm: str
    object: str
    distance: float  # m


@dataclass(frozen=True)
class LanguageTask:
    """The candidate objects of an instruction and the one it names."""

    candidates: tuple[str, ...]
    target: str

    @property
    def chance(self) -> float:
        return 1.0 / len(self.candidates)


def language_task(scene: Scene, instruction: str) -> LanguageTask | None:
    """The objects the instruction chooses between, or None for a scene with one instruction
    (transfer_cube, insertion): there language following is not defined."""
    if not isinstance(scene, PutXIntoPot):
        return None
    return LanguageTask(
        tuple(body_name(item) for item in POT_ITEMS), scene.target_object(instruction)
    )


def first_approach(
    samples: Iterable[StateSample],
    candidates: Sequence[str],
    approach_distance: float = DEFAULT_APPROACH_DISTANCE,
) -> Approach | None:
    """The earliest sample in which a grasp point is within `approach_distance` of a candidate
    (the closest pair when several are within it at once); None when none ever is.

    Samples must be in time order. Raises ValueError when a candidate is missing from a sample
    or the distance is not positive, since either would silently turn into "not followed".
    """
    if not approach_distance > 0:
        raise ValueError(f'approach_distance must be > 0 m, got {approach_distance}')
    for sample in samples:
        missing = [name for name in candidates if name not in sample.objects]
        if missing:
            raise ValueError(
                f'state at t={sample.t} has no position for {missing}; objects: '
                f'{sorted(sample.objects)}'
            )
        best: Approach | None = None
        for arm, grasp in sample.grasp.items():
            for name in candidates:
                distance = float(np.linalg.norm(np.subtract(grasp, sample.objects[name])))
                if distance <= approach_distance and (best is None or distance < best.distance):
                    best = Approach(sample.t, arm, name, round(distance, 4))
        if best is not None:
            return best
    return None


def closest_distance(samples: Iterable[StateSample], target: str) -> float | None:
    """The smallest distance (m) from either grasp point to `target` over an episode, or None
    without samples. Why: the approach distance says whether a gripper went for an object, this
    says how near it got, which is what a grasp needs (about 1-2 cm here)."""
    distances = [
        float(np.linalg.norm(np.subtract(grasp, sample.objects[target])))
        for sample in samples
        for grasp in sample.grasp.values()
    ]
    return round(min(distances), 4) if distances else None


def followed_language(task: LanguageTask | None, approach: Approach | None) -> bool | None:
    """True when the first approached object is the instructed one; None when undefined."""
    if task is None:
        return None
    return approach is not None and approach.object == task.target


def approach_record(approach: Approach | None) -> dict | None:
    return None if approach is None else asdict(approach)


def episode_measures(
    scene: Scene,
    instruction: str,
    samples: Sequence[StateSample],
    success: bool,
    approach_distance: float = DEFAULT_APPROACH_DISTANCE,
    unstable: bool = False,
) -> dict:
    """The per-episode keys eval_sim and quick_eval share. Every scene has an object the robot
    must reach first (transfer_cube: the cube), so how near a grasp point came to it is
    measured everywhere: it shows progress towards a grasp before any success does. The first
    approach and language following exist only where the instruction chooses an object. Every
    episode gets its failure category (failure_modes) and its longest still stretch."""
    task = language_task(scene, instruction)
    approach = first_approach(samples, task.candidates, approach_distance) if task else None
    target = scene.target_object(instruction)
    return {
        'target_object': target,
        'first_approach': approach_record(approach),
        'target_closest_m': closest_distance(samples, target),
        'followed_language': followed_language(task, approach),
        'failure_mode': failure_mode(
            scene, instruction, samples, success, unstable, approach, approach_distance
        ),
        'still_seconds': still_seconds(samples),
    }


# The executor's chunking figures of an episode record (demo_report.chunking_at_or_after).
CHUNKING_KEYS = (
    'ticks',
    'starting_ticks',
    'fresh_ticks',
    'splices',
    'late_splices',
    'restarts',
    'chunk_switches',
    'switch_step_max',
    'chunk_step_max',
)


def _rate(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def summarize(episodes: Sequence[Mapping]) -> dict:
    """Counts and rates over episode records (the dicts eval_sim writes per episode).

    Rates are counts / episodes. Language following counts every episode in the denominator:
    one in which no object was approached did not follow the instruction. Episodes of a scene
    without language choice (followed_language None) give None rates.
    """
    total = len(episodes)
    successes = sum(bool(e['success']) for e in episodes)
    defined = [e for e in episodes if e['followed_language'] is not None]
    approached = sum(e['first_approach'] is not None for e in defined)
    followed = sum(bool(e['followed_language']) for e in defined)
    latencies = [v for e in episodes for v in e['inference_latencies_s']]
    closest = [e['target_closest_m'] for e in episodes if e['target_closest_m'] is not None]
    return {
        'episodes': total,
        'successes': successes,
        'success_rate': _rate(successes, total),
        'approached': approached if defined else None,
        'followed_language': followed if defined else None,
        'language_following_rate': _rate(followed, len(defined)) if defined else None,
        'target_closest_m_median': round(float(np.median(closest)), 4) if closest else None,
        # Episodes per failure_modes category, the most frequent first.
        'failure_modes': dict(Counter(e['failure_mode'] for e in episodes).most_common()),
        'still_seconds_max': _max_known(e['still_seconds'] for e in episodes),
        'stalled_ticks': sum(e['stalled_ticks'] for e in episodes),
        'clamped_ticks': sum(e['clamped_ticks'] for e in episodes),
        'waiting_ticks': sum(e['waiting_ticks'] for e in episodes),
        # None where nothing measured them (quick_eval has no executor).
        'tracking_faults': _sum_known(e['tracking_faults'] for e in episodes),
        'tracking_error_peak': _max_known(e['tracking_error_peak'] for e in episodes),
        'stale_events': _sum_known(e['stale_events'] for e in episodes),
        'future_chunks': _sum_known(e['future_chunks'] for e in episodes),
        'held_ticks': _sum_known(e['held_ticks'] for e in episodes),
        **{k: _sum_known(e[k] for e in episodes) for k in CHUNKING_KEYS[:7]},
        **{k: _max_known(e[k] for e in episodes) for k in CHUNKING_KEYS[7:]},
        'fresh_targets_per_s': _fresh_rate(episodes),
        'chunks': sum(e['chunks'] for e in episodes),
        'inference_latency_s': latency_stats(latencies),
        'sim_seconds': round(sum(e['sim_seconds'] for e in episodes), 3),
        'wall_seconds': round(sum(e['wall_seconds'] for e in episodes), 3),
    }


def _fresh_rate(episodes: Sequence[Mapping]) -> float | None:
    """Fresh targets per second once a chunk had come: the control rate times the fresh share
    of the ticks that were fresh, stalled, waiting or held, over the episodes the executor
    measured (the starting ticks, and those before the executor's first command, are none)."""
    measured = [e for e in episodes if e['fresh_ticks'] is not None]
    running = sum(
        e['fresh_ticks'] + e['stalled_ticks'] + e['waiting_ticks'] + (e['held_ticks'] or 0)
        for e in measured
    )
    fresh = sum(e['fresh_ticks'] for e in measured)
    return round(robot.CONTROL_RATE_HZ * fresh / running, 2) if running else None


def _sum_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _max_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def summarize_by_instruction(
    episodes: Sequence[Mapping], instructions: Sequence[str]
) -> dict[str, dict]:
    return {
        instruction: summarize([e for e in episodes if e['instruction'] == instruction])
        for instruction in instructions
    }
