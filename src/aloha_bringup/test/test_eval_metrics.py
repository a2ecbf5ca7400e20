"""The ROS-free closed-loop metrics: first approach, language following, summaries, plans."""

from __future__ import annotations

import pytest

from aloha_bringup.evaluation.closed_loop_metrics import (
    Approach,
    LanguageTask,
    StateSample,
    closest_distance,
    episode_measures,
    first_approach,
    followed_language,
    language_task,
    summarize,
    summarize_by_instruction,
)
from aloha_bringup.evaluation.episodes import EpisodePlan, episode_plans
from aloha_sim.scenes import get_scene

ITEMS = ('green_pepper', 'red_pepper', 'yellow_corn')
OBJECTS = {
    'pot': (0.0, 0.7, 0.0),
    'green_pepper': (-0.1, 0.5, 0.02),
    'red_pepper': (0.1, 0.5, 0.02),
    'yellow_corn': (0.2, 0.45, 0.02),
}


def sample(t: float, left: tuple, right: tuple, objects: dict = OBJECTS) -> StateSample:
    return StateSample(t, {'left': left, 'right': right}, objects)


def test_first_approach_is_the_earliest_sample_within_the_distance():
    far = (0.0, 0.0, 0.3)
    samples = [
        sample(0.0, far, far),
        sample(0.04, (-0.1, 0.5, 0.09), far),  # 7 cm above green: not yet
        sample(0.08, far, (0.1, 0.5, 0.06)),  # 4 cm above red: the first approach
        sample(0.12, (-0.1, 0.5, 0.02), far),
    ]  # on green, but later
    assert first_approach(samples, ITEMS, 0.05) == Approach(0.08, 'right', 'red_pepper', 0.04)


def test_closest_distance_is_the_minimum_over_samples_and_arms():
    far = (0.0, 0.0, 0.3)
    samples = [
        sample(0.0, far, far),
        sample(0.04, (-0.1, 0.5, 0.09), far),  # 7 cm above green
        sample(0.08, far, (-0.1, 0.53, 0.06)),  # 5 cm from green (3-4-5), right arm
        sample(0.12, (-0.1, 0.5, 0.08), far),
    ]  # 6 cm: it moved away again
    assert closest_distance(samples, 'green_pepper') == pytest.approx(0.05, abs=1e-9)
    # Red pepper: nearest to the right grasp point at 0.08, (0.2, 0.03, 0.04) away.
    assert closest_distance(samples, 'red_pepper') == round(0.0425**0.5, 4)
    assert closest_distance([], 'green_pepper') is None


def test_episode_measures_name_a_target_in_every_scene():
    """The pot scene gets following and the target's distance; transfer_cube, which has no
    language choice, still gets how near a grasp point came to its cube."""
    far = (0.0, 0.0, 0.3)
    pot = [sample(0.0, far, far), sample(0.04, far, (0.1, 0.5, 0.05))]  # 3 cm above red
    measures = episode_measures(
        get_scene('put_x_into_pot'), 'put red pepper into pot', pot, success=False
    )
    assert measures == {
        'target_object': 'red_pepper',
        'first_approach': {'t': 0.04, 'arm': 'right', 'object': 'red_pepper', 'distance': 0.03},
        'target_closest_m': 0.03,
        'followed_language': True,
        'failure_mode': 'grasp missed',  # reached, never lifted
        'still_seconds': 0.0,
    }
    cube = [
        sample(0.0, far, far, {'box': (0.1, 0.5, 0.02)}),
        sample(0.04, far, (0.1, 0.5, 0.06), {'box': (0.1, 0.5, 0.02)}),
    ]
    scene = get_scene('transfer_cube')
    assert episode_measures(scene, scene.default_instruction, cube, success=False) == {
        'target_object': 'box',
        'first_approach': None,
        'target_closest_m': 0.04,
        'followed_language': None,
        'failure_mode': 'grasp missed',
        'still_seconds': 0.0,
    }
    with pytest.raises(ValueError):  # an instruction the scene does not know
        episode_measures(scene, 'put red pepper into pot', cube, success=False)


def test_closest_pair_wins_when_two_are_within_reach_in_one_sample():
    samples = [sample(1.0, (-0.1, 0.5, 0.05), (0.2, 0.45, 0.04))]  # green 3 cm, corn 2 cm
    assert first_approach(samples, ITEMS, 0.05) == Approach(1.0, 'right', 'yellow_corn', 0.02)


def test_pot_is_not_a_candidate_and_no_approach_gives_none():
    samples = [sample(0.0, (0.0, 0.7, 0.0), (0.0, 0.0, 0.5))]  # left grasp point at the pot
    assert first_approach(samples, ITEMS, 0.05) is None
    assert first_approach([], ITEMS, 0.05) is None


def test_objects_are_followed_where_they_are_now():
    moved = {**OBJECTS, 'red_pepper': (0.0, 0.4, 0.02)}  # pushed away from its start
    samples = [sample(0.5, (0.1, 0.5, 0.02), (0.0, 0.0, 0.5), moved)]
    assert first_approach(samples, ITEMS, 0.05) is None


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match='approach_distance must be > 0'):
        first_approach([], ITEMS, 0.0)
    partial = {'pot': (0, 0, 0), 'red_pepper': (0, 0, 0)}
    with pytest.raises(ValueError, match=r"no position for \['green_pepper', 'yellow_corn'\]"):
        first_approach([sample(0.0, (1, 1, 1), (1, 1, 1), partial)], ITEMS, 0.05)


def test_language_task_of_the_scenes():
    task = language_task(get_scene('put_x_into_pot'), 'put red pepper into pot')
    assert task == LanguageTask(ITEMS, 'red_pepper')
    assert task.chance == pytest.approx(1 / 3)
    assert (
        language_task(get_scene('transfer_cube'), 'transfer the red cube to the left arm') is None
    )
    with pytest.raises(ValueError, match='Did you mean'):
        language_task(get_scene('put_x_into_pot'), 'put red peper into pot')


def test_followed_language():
    task = LanguageTask(ITEMS, 'red_pepper')
    assert followed_language(task, Approach(1.0, 'left', 'red_pepper', 0.01)) is True
    assert followed_language(task, Approach(1.0, 'left', 'green_pepper', 0.01)) is False
    assert followed_language(task, None) is False
    assert followed_language(None, None) is None


def record(
    instruction: str,
    success: bool,
    approached: str | None,
    target: str,
    latencies: list[float],
    stalls: int = 0,
    closest: float | None = None,
    peak: float | None = None,
    mode: str = 'grasp missed',
) -> dict:
    return {
        'instruction': instruction,
        'success': success,
        'failure_mode': 'success' if success else mode,
        'still_seconds': 1.5 if stalls else 0.5,
        'first_approach': None if approached is None else {'object': approached},
        'followed_language': approached == target,
        'stalled_ticks': stalls,
        'target_closest_m': closest,
        'clamped_ticks': 1,
        'waiting_ticks': 2,
        'chunks': len(latencies),
        'tracking_faults': None if peak is None else int(peak > 0.2),
        'tracking_error_peak': peak,
        'stale_events': None if peak is None else 0,
        'future_chunks': None if peak is None else 1,
        'held_ticks': None if peak is None else 3,
        # The executor's chunking figures (None: no executor, as quick_eval).
        'ticks': None if peak is None else 52,
        'starting_ticks': None if peak is None else 2,
        'fresh_ticks': None if peak is None else 45,
        'splices': None if peak is None else 4,
        'late_splices': None if peak is None else 1,
        'restarts': None if peak is None else 0,
        'chunk_switches': None if peak is None else 5,
        'switch_step_max': None if peak is None else peak / 2,
        'chunk_step_max': None if peak is None else 0.1,
        'inference_latencies_s': latencies,
        'sim_seconds': 2.0,
        'wall_seconds': 3.5,
    }


def test_summaries_are_counts_over_episodes():
    episodes = [
        record(
            'a', True, 'red_pepper', 'red_pepper', [0.1, 0.2], stalls=2, closest=0.01, peak=0.1
        ),
        record('a', False, 'green_pepper', 'red_pepper', [0.3], closest=0.12, peak=0.3),
        record('b', False, None, 'yellow_corn', [], closest=0.2, mode='nothing reached'),
        record('b', False, 'yellow_corn', 'yellow_corn', [0.4], stalls=1, closest=0.03),
    ]
    overall = summarize(episodes)
    assert overall == {
        'episodes': 4,
        'successes': 1,
        'success_rate': 0.25,
        'approached': 3,
        'followed_language': 2,
        'language_following_rate': 0.5,
        'target_closest_m_median': 0.075,
        'failure_modes': {'grasp missed': 2, 'success': 1, 'nothing reached': 1},
        'still_seconds_max': 1.5,
        'stalled_ticks': 3,
        'clamped_ticks': 4,
        'waiting_ticks': 8,
        'tracking_faults': 1,
        'tracking_error_peak': 0.3,
        'stale_events': 0,
        'future_chunks': 2,
        'held_ticks': 6,
        'ticks': 104,
        'starting_ticks': 4,
        'fresh_ticks': 90,
        'splices': 8,
        'late_splices': 2,
        'restarts': 0,
        'chunk_switches': 10,
        'switch_step_max': 0.15,
        'chunk_step_max': 0.1,
        'fresh_targets_per_s': 22.06,  # 90 of the 102 fresh, stalled, waiting or held ticks
        'chunks': 4,
        'inference_latency_s': {'p50': 0.25, 'p95': 0.385, 'max': 0.4},
        'sim_seconds': 8.0,
        'wall_seconds': 14.0,
    }
    per = summarize_by_instruction(episodes, ['a', 'b', 'c'])
    assert (per['a']['success_rate'], per['a']['language_following_rate']) == (0.5, 0.5)
    assert (per['b']['success_rate'], per['b']['language_following_rate']) == (0.0, 0.5)
    assert per['c']['episodes'] == 0 and per['c']['success_rate'] is None
    # Episodes without an executor (quick_eval) report no tracking figures at all.
    assert per['b']['tracking_faults'] is None and per['b']['tracking_error_peak'] is None


def test_scene_without_language_choice_has_no_following_rate():
    episode = {**record('x', True, None, 'none', [0.1]), 'followed_language': None}
    summary = summarize([episode])
    assert summary['success_rate'] == 1.0
    assert summary['language_following_rate'] is None and summary['approached'] is None


def test_episode_plans_interleave_instructions_with_one_seed_each():
    assert episode_plans(('a', 'b'), 2, 7) == [
        EpisodePlan(0, 'a', 7),
        EpisodePlan(1, 'b', 8),
        EpisodePlan(2, 'a', 9),
        EpisodePlan(3, 'b', 10),
    ]


def test_sim_state_is_the_ground_truth_the_metric_reads():
    """AlohaSim.state() (what /task/state carries): objects where the seed put them, and a grasp
    point per arm that moves with that arm only (real MuJoCo, no rendering)."""
    import numpy as np

    from aloha_sim.physics import AlohaSim

    sim = AlohaSim('put_x_into_pot', 16, 16)
    episode = sim.reset(seed=4)
    state = sim.state()
    assert set(state['objects']) == set(episode.layout.positions)
    for name, position in episode.layout.positions.items():
        np.testing.assert_allclose(state['objects'][name], position, atol=1e-9)
    left, right = (np.array(state['grasp'][arm]) for arm in ('left', 'right'))
    assert left[0] < 0.0 < right[0]  # each gripper on its own side of the table
    sim.set_command('right', [0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # turn the right waist
    sim.step(250)  # 0.5 s
    moved = sim.state()['grasp']
    assert np.linalg.norm(np.subtract(moved['left'], left)) < 0.01  # settles a few mm at most
    assert np.linalg.norm(np.subtract(moved['right'], right)) > 0.03
    sim.close()
