"""`make eval-sim` end to end: aloha_sim + policy_node + chunk_executor as separate processes
over real DDS, real MuJoCo, a random `tiny` checkpoint, one short episode per instruction."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys

import pytest

from aloha_bringup.evaluation.eval_sim import parse_args
from aloha_bringup.evaluation.failure_modes import CATEGORIES, SUCCESS
from aloha_sim.scenes import get_scene
from oft_policy_node import robot
from oft_policy_node.model.testing import make_tiny_checkpoint
from tests.ros_fixtures import REPO_ROOT

pytestmark = pytest.mark.ros  # the eval graph: sim, policy_node and chunk_executor over DDS

SCENE = 'put_x_into_pot'
SEED = 11
MAX_SECONDS = 2.0
REAL_TIME_FACTOR = 0.5  # capped below what this CPU reaches, so the cap is what it runs at
STATE_RATE_HZ = 25.0  # aloha_sim's default state_rate_hz
SUMMARY_KEYS = {
    'episodes',
    'successes',
    'success_rate',
    'approached',
    'followed_language',
    'language_following_rate',
    'target_closest_m_median',
    'stalled_ticks',
    'clamped_ticks',
    'waiting_ticks',
    'tracking_faults',
    'tracking_error_peak',
    'chunks',
    'inference_latency_s',
    'sim_seconds',
    'wall_seconds',
}


@pytest.fixture(scope='module')
def evaluation(tmp_path_factory):
    """Run the evaluation once; (eval.json, run directory, process output)."""
    tmp = tmp_path_factory.mktemp('eval_sim')
    scene = get_scene(SCENE)
    checkpoint = make_tiny_checkpoint(tmp / 'tiny', instructions=scene.instructions())
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'aloha_bringup.evaluation.eval_sim',
            '--checkpoint',
            str(checkpoint),
            '--scene',
            SCENE,
            '--episodes-per-instruction',
            '1',
            '--seed',
            str(SEED),
            '--max-seconds',
            str(MAX_SECONDS),
            '--image-height',
            '96',
            '--image-width',
            '128',
            '--real-time-factor',
            str(REAL_TIME_FACTOR),
            '--out',
            str(tmp / 'runs'),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, output
    (run_dir,) = (tmp / 'runs').iterdir()
    return json.loads((run_dir / 'eval.json').read_text()), run_dir, output


@pytest.mark.slow
def test_every_instruction_ran_on_a_freshly_reset_seeded_episode(evaluation):
    report, _, output = evaluation
    scene = get_scene(SCENE)
    episodes = report['episodes']
    assert report['complete'] is True and 'Traceback' not in output
    assert report['seeds'] == [SEED, SEED + 1, SEED + 2]
    # The bringup's prefix rule needs a policy trained with the prefix; this one was not.
    assert report['merge_rule'] == 'sync' and '--merge-rule sync' in report['command']
    assert [e['instruction'] for e in episodes] == list(scene.instructions())
    for episode in episodes:
        # The sim was reset with this episode's seed and instruction ...
        assert (episode['sim_seed'], episode['sim_instruction']) == (
            episode['seed'],
            episode['instruction'],
        )
        expected = scene.sample_layout(episode['seed']).positions
        assert episode['initial_objects'] == {k: list(v) for k, v in expected.items()}
        # ... and every chunk the episode ran on was predicted for its instruction.
        assert episode['chunk_instructions'] == [episode['instruction']]
    layouts = [json.dumps(e['initial_objects'], sort_keys=True) for e in episodes]
    assert len(set(layouts)) == len(episodes)  # different seeds, different object positions
    sim_episodes = [e['sim_episode'] for e in episodes]
    assert sim_episodes == list(range(sim_episodes[0], sim_episodes[0] + len(episodes)))


@pytest.mark.slow
def test_episode_measurements_are_complete_and_plausible(evaluation):
    report, run_dir, _ = evaluation
    for episode in report['episodes']:
        if not episode['success']:
            assert episode['sim_seconds'] == pytest.approx(MAX_SECONDS, abs=0.1)
            assert (run_dir / episode['video']).stat().st_size > 5_000
        else:
            assert episode['video'] is None
            assert 0.0 <= episode['success_time_s'] <= episode['sim_seconds']
        assert episode['state_samples'] == pytest.approx(
            STATE_RATE_HZ * episode['sim_seconds'], abs=3
        )
        assert episode['chunks'] == len(episode['inference_latencies_s']) >= 1
        assert 0.0 < episode['inference_latency_s']['p50'] <= episode['inference_latency_s']['max']
        assert isinstance(episode['stalled_ticks'], int) and episode['stalled_ticks'] >= 0
        assert isinstance(episode['clamped_ticks'], int) and episode['clamped_ticks'] >= 0
        assert isinstance(episode['waiting_ticks'], int) and episode['waiting_ticks'] >= 0
        # The safety layer measured tracking and never tripped on the simulated arms.
        assert episode['tracking_faults'] == 0
        assert 0.0 <= episode['tracking_error_peak'] < math.inf  # reported (a random policy
        # can drive a gripper far from where it measures: the bound clips, nothing trips)
        assert episode['tracking_error_peak_joint'] in robot.action_joint_names()
        # The sim got the cap: no episode ran faster than REAL_TIME_FACTOR x wall time.
        assert episode['wall_seconds'] >= 0.95 * episode['sim_seconds'] / REAL_TIME_FACTOR
        approach = episode['first_approach']
        assert episode['target_object'] == get_scene(SCENE).target_item(
            episode['instruction']
        ).name.replace(' ', '_')
        assert episode['followed_language'] == (
            approach is not None and approach['object'] == episode['target_object']
        )
        # How near the gripper got to the instructed object: never farther than its approach.
        assert 0.0 < episode['target_closest_m'] < 2.0
        if approach is not None and approach['object'] == episode['target_object']:
            assert episode['target_closest_m'] <= approach['distance'] + 1e-4
        if approach is not None:
            assert approach['distance'] <= report['approach_distance_m']
            assert 0.0 <= approach['t'] <= episode['sim_seconds']
        # Every episode is categorised, success exactly when it succeeded.
        assert episode['failure_mode'] in CATEGORIES
        assert (episode['failure_mode'] == SUCCESS) == episode['success']
        assert 0.0 <= episode['still_seconds'] <= episode['sim_seconds'] + 0.5
    assert sum(report['overall']['failure_modes'].values()) == len(report['episodes'])


@pytest.mark.slow
def test_rates_are_counts_over_episodes(evaluation):
    report, _, _ = evaluation
    episodes = report['episodes']
    overall = report['overall']
    assert SUMMARY_KEYS <= set(overall)
    assert report['chance_language_following'] == pytest.approx(1 / 3, abs=1e-4)
    assert overall['episodes'] == len(episodes) == 3
    assert overall['successes'] == sum(e['success'] for e in episodes)
    assert overall['success_rate'] == pytest.approx(overall['successes'] / 3, abs=1e-4)
    assert overall['followed_language'] == sum(e['followed_language'] for e in episodes)
    assert overall['language_following_rate'] == pytest.approx(
        overall['followed_language'] / 3, abs=1e-4
    )
    assert overall['stalled_ticks'] == sum(e['stalled_ticks'] for e in episodes)
    assert overall['clamped_ticks'] == sum(e['clamped_ticks'] for e in episodes)
    assert overall['waiting_ticks'] == sum(e['waiting_ticks'] for e in episodes)
    assert overall['tracking_faults'] == sum(e['tracking_faults'] for e in episodes)
    for instruction, summary in report['per_instruction'].items():
        (episode,) = [e for e in episodes if e['instruction'] == instruction]
        assert summary['episodes'] == 1
        assert summary['success_rate'] == float(episode['success'])
        assert summary['language_following_rate'] == float(episode['followed_language'])


@pytest.mark.slow
def test_command_reproduces_the_run(evaluation):
    report, _, _ = evaluation
    argv = shlex.split(report['command'])
    assert argv[:3] == ['python', '-m', 'aloha_bringup.evaluation.eval_sim']
    args = parse_args(argv[3:])
    assert (
        args.checkpoint,
        args.scene,
        args.episodes_per_instruction,
        args.seed,
        args.max_seconds,
        args.image_height,
        args.image_width,
        args.real_time_factor,
    ) == (report['checkpoint'], SCENE, 1, SEED, MAX_SECONDS, 96, 128, REAL_TIME_FACTOR)
    assert report['real_time_factor'] == REAL_TIME_FACTOR
