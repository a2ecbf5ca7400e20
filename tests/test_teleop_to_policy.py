"""Demonstrations by teleoperation, end to end, with the simulation as the followers and a
simulated leader (the scripted demonstrator publishing the leader arms' joint states): the
teleop node mirrors the leader through the chunk executor and records one bag per episode;
convert takes the leader's joint states as the actions (and says so); a tiny policy trains on
them and runs in the graph against the same simulation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from oft_policy_node import robot
from tests.bag_reading import bag_messages
from tests.ros_fixtures import REPO_ROOT, call_service, spin_until, spinning_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]
SCENE, EPISODES = 'put_x_into_pot', 2
SIM = ('image_height:=48', 'image_width:=64', 'camera_rate_hz:=10.0')


def ros_args(*settings: str) -> list[str]:
    return ['--ros-args', *(w for s in ('use_sim_time:=true', *settings) for w in ('-p', s))]


def run(*argv: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_teleoperated_demos_convert_train_and_run(rclpy_context, spawn, tmp_path):
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger

    from aloha_sim.scripted_demo_node import DemoRunner, instruction_for
    from oft_msgs.msg import ActionChunk
    from oft_msgs.srv import SetInstruction

    demos = tmp_path / 'demos'
    sim = spawn.python('-m', 'aloha_sim.aloha_sim_node', *ros_args(f'scene:={SCENE}', *SIM))
    teleop = spawn.python(
        '-m',
        'aloha_bringup.teleop_node',
        *ros_args(f'output_dir:={demos}', 'camera_rate_hz:=10.0', 'leader_bringup:=false'),
        name='teleop',
    )
    executor_args = ros_args('merge_rule:=newest', 'rate_hz:=50.0', 'realtime_priority:=0')
    with spinning_node(rclpy_context, 'operator') as (node, executor):
        commands = []
        node.create_subscription(
            JointState,
            robot.joint_positions_topic('left'),
            lambda msg: commands.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9),
            10,
        )
        start = node.create_client(SetInstruction, '/teleop/start_episode')
        end = node.create_client(Trigger, '/teleop/end_episode')
        runner = DemoRunner(node, executor, SCENE, leader=robot.ALOHA2_LEADER)
        runner.wait_for_sim(timeout=60.0)
        results = []
        for episode in range(EPISODES):
            instruction = instruction_for(SCENE, episode, None)
            follower = None

            def ready(instruction: str = instruction) -> None:
                nonlocal follower
                # a fresh executor per episode, from the reset pose (as eval_sim does)
                follower = spawn.python(
                    '-m', 'oft_policy_node.chunk_executor', *executor_args, name='executor'
                )
                count = len(commands)
                assert runner.spin_until(lambda: len(commands) > count + 10, 60.0), spawn.output(
                    follower
                )
                answer = call_service(
                    executor, start, SetInstruction.Request(instruction=instruction)
                )
                assert answer.success, answer.message

            results.append(runner.run_episode(100 + episode, instruction, ready=ready))
            answer = call_service(executor, end, Trigger.Request())
            assert answer.success, answer.message
            assert spawn.stop(follower) == 0, spawn.output(follower)
        print(f'\nteleoperated episodes: {[(r.instruction, r.success) for r in results]}')
        assert all(r.success for r in results), 'the followers did not carry the task out'

    bags = sorted(demos.iterdir())
    assert len(bags) == EPISODES
    counts = {topic: len(m) for topic, m in bag_messages(bags[0]).items()}
    print('one teleop bag:', *(f'{t}: {n}' for t, n in counts.items()), sep='\n  ')
    for topic in (
        robot.leader_joint_states_topic('left'),
        robot.joint_states_topic('right'),
        robot.joint_positions_topic('left'),
        robot.camera_topic('cam_high'),
        robot.ACTION_CHUNK_TOPIC,
    ):
        assert counts[topic] > 50, (topic, counts)
    assert counts[robot.TASK_INSTRUCTION_TOPIC] == 1 and counts[robot.TASK_EPISODE_TOPIC] == 1

    dataset, trained = tmp_path / 'dataset', tmp_path / 'train'
    converted = run(
        '-m', 'oft_training.convert', str(demos), '--out', str(dataset), '--preset', 'tiny'
    )
    assert converted.stdout.count("actions from the leader arms' joint states") == EPISODES
    index = json.loads((dataset / 'index.json').read_text())
    assert [e['instruction'] for e in index['episodes']] == [r.instruction for r in results]
    run(
        '-m', 'oft_training.train', '--data', str(dataset), '--out', str(trained),
        '--preset', 'tiny', '--steps', '2', '--batch-size', '2',
    )  # fmt: skip
    checkpoint = trained / 'final'
    assert (checkpoint / 'config.json').is_file()

    # The policy drives the followers in the graph: chunks from the sim's cameras, executed.
    policy = spawn.python(
        '-m',
        'oft_policy_node.policy_node',
        *ros_args(f'checkpoint:={checkpoint}', 'image_size:=[48,64]'),
        name='policy',
    )
    follower = spawn.python('-m', 'oft_policy_node.chunk_executor', *executor_args, name='run')
    with spinning_node(rclpy_context, 'watcher') as (node, executor):
        chunks = []
        node.create_subscription(ActionChunk, robot.ACTION_CHUNK_TOPIC, chunks.append, 10)
        moved = []
        node.create_subscription(JointState, robot.joint_positions_topic('left'), moved.append, 10)
        assert spin_until(executor, lambda: len(chunks) >= 3 and len(moved) >= 10, 180.0), (
            spawn.output(policy)
        )
    actions = np.asarray(chunks[-1].actions).reshape(chunks[-1].num_steps, robot.ACTION_DIM)
    assert np.isfinite(actions).all() and chunks[-1].instruction
    for proc in (policy, follower, teleop, sim):
        assert spawn.stop(proc) == 0, spawn.output(proc)
