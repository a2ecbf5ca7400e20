"""EpisodeRecorder without DDS: whichever order the executor hands over /task/episode and
/task/instruction, each episode's bag holds the instruction exactly once and the right one."""

from __future__ import annotations

import json

import pytest
from rclpy.serialization import serialize_message
from std_msgs.msg import String

from aloha_bringup.record_demos import EpisodeRecorder
from oft_policy_node import robot
from tests.bag_reading import bag_messages

pytestmark = pytest.mark.ros  # bags of rclpy-serialized messages


def episode_cdr(seed: int, instruction: str) -> bytes:
    return serialize_message(
        String(
            data=json.dumps(
                {
                    'scene': 'put_x_into_pot',
                    'seed': seed,
                    'instruction': instruction,
                    'episode': seed,
                    'start_time': 0.0,
                    'objects': {},
                }
            )
        )
    )


def instruction_cdr(instruction: str) -> bytes:
    return serialize_message(String(data=instruction))


@pytest.mark.parametrize('instruction_first', [True, False])
def test_each_bag_gets_its_instruction_exactly_once(tmp_path, instruction_first):
    recorder = EpisodeRecorder()
    episodes = [
        (1, 'put red pepper into pot'),
        (2, 'put red pepper into pot'),
        (3, 'put green pepper into pot'),
    ]
    for seed, instruction in episodes:
        recorder.arm(tmp_path / f'ep{seed}', seed)
        # The previous episode's latched instruction is still around, then the new pair arrives.
        order = [
            (robot.TASK_INSTRUCTION_TOPIC, instruction_cdr(instruction)),
            (robot.TASK_EPISODE_TOPIC, episode_cdr(seed, instruction)),
        ]
        for topic, cdr in order if instruction_first else order[::-1]:
            recorder.sink(topic, seed * 1000, cdr)
        # A stale repeat of the same latched instruction must not be written twice.
        recorder.sink(robot.TASK_INSTRUCTION_TOPIC, seed * 1000 + 1, instruction_cdr(instruction))
        counts = recorder.close()
        assert counts[robot.TASK_INSTRUCTION_TOPIC] == counts[robot.TASK_EPISODE_TOPIC] == 1
        got = bag_messages(tmp_path / f'ep{seed}')[robot.TASK_INSTRUCTION_TOPIC]
        assert got == [instruction_cdr(instruction)]


def test_a_held_instruction_of_another_task_is_not_written(tmp_path):
    recorder = EpisodeRecorder()
    recorder.arm(tmp_path / 'ep', 5)
    recorder.sink(robot.TASK_INSTRUCTION_TOPIC, 1, instruction_cdr('put red pepper into pot'))
    recorder.sink(robot.TASK_EPISODE_TOPIC, 2, episode_cdr(5, 'put green pepper into pot'))
    recorder.sink(robot.TASK_INSTRUCTION_TOPIC, 3, instruction_cdr('put green pepper into pot'))
    recorder.close()
    got = bag_messages(tmp_path / 'ep')[robot.TASK_INSTRUCTION_TOPIC]
    assert got == [instruction_cdr('put green pepper into pot')]
