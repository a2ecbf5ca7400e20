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


def test_the_bag_holds_the_episode_window_however_late_its_messages_come(tmp_path):
    from sensor_msgs.msg import JointState

    def state(stamp_s: float) -> bytes:
        msg = JointState(name=list(robot.INTERBOTIX_JOINT_STATE_ORDER), position=[0.0] * 9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), round(stamp_s % 1 * 1e9)
        return serialize_message(msg)

    left, right = robot.joint_states_topic('left'), robot.joint_states_topic('right')
    recorder = EpisodeRecorder()
    recorder.arm(tmp_path / 'ep', 1)
    recorder.sink(robot.TASK_EPISODE_TOPIC, 0, episode_cdr(1, 'put red pepper into pot'))
    for t in (0.0, 0.5, 1.0):
        recorder.sink(left, 0, state(t))
    recorder.finish(end_ns=1_000_000_000)
    assert not recorder.passed_end((left, right))  # right has said nothing yet
    for t in (0.5, 1.0, 1.5):  # right lagged: its window arrives after the end is known
        recorder.sink(right, 0, state(t))
    recorder.sink(left, 0, state(1.5))
    assert recorder.passed_end((left, right))
    counts = recorder.close()
    assert counts[left] == 3 and counts[right] == 2  # 1.5 s is past the end: dropped
    assert not recorder.passed_end((left,))  # the next episode starts afresh
