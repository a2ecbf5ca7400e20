"""Recording over real DDS into real rosbag2 MCAP files, read back with rosbags: exact counts
per topic, nothing lost and a readable bag after Ctrl-C while messages are still flowing, and
record_demos writing one bag per scripted episode with the expected message counts, and
record_graph (record:=true) recording the running graph's topics."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

from aloha_bringup.recording import (
    DEMO_TOPICS,
    LATCHED_TOPICS,
    demo_topics,
    graph_topics,
    header_stamp_ns,
)
from oft_policy_node import robot
from tests.bag_reading import bag_messages
from tests.ros_fixtures import spin_until, spinning_node

DEMO_LATCHED = [topic for topic in LATCHED_TOPICS if topic in DEMO_TOPICS]


def make_message(topic: str, seq: int, topics: dict[str, str] = DEMO_TOPICS):
    """A small message of the topic's type whose header stamp (sec) is `seq`."""
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Bool, String

    msgtype = topics[topic]
    if msgtype == 'sensor_msgs/msg/CompressedImage':
        msg = CompressedImage(format='rgb8; jpeg compressed bgr8', data=bytes(range(20)))
    elif msgtype == 'sensor_msgs/msg/Image':
        msg = Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(range(12)))
    elif msgtype == 'sensor_msgs/msg/JointState':
        msg = JointState(name=list(robot.INTERBOTIX_JOINT_STATE_ORDER), position=[0.1] * 9)
    elif msgtype == 'std_msgs/msg/Bool':
        return Bool(data=bool(seq % 2))
    elif msgtype == 'oft_msgs/msg/ActionChunk':
        from oft_policy_node.ros_conversions import action_chunk_msg, seconds_to_stamp

        return action_chunk_msg(
            seconds_to_stamp(seq), np.zeros((25, robot.ACTION_DIM)), seq + 1, 'task', 0.04, 0.1
        )
    elif msgtype == 'diagnostic_msgs/msg/DiagnosticArray':
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

        msg = DiagnosticArray(status=[DiagnosticStatus(name='/chunk_executor', message='running')])
    else:
        return String(data=f'{topic} {seq}')
    msg.header.stamp.sec = seq
    return msg


@pytest.fixture
def transport(request) -> str:
    return getattr(request, 'param', 'raw')


@pytest.fixture
def publishers(rclpy_context, transport):
    from aloha_bringup.recorder_node import RECORD_QOS, message_class
    from oft_policy_node.qos import LATCHED

    with spinning_node(rclpy_context, 'demo_source') as (node, executor):
        pubs = {
            topic: node.create_publisher(
                message_class(msgtype), topic, LATCHED if topic in LATCHED_TOPICS else RECORD_QOS
            )
            for topic, msgtype in demo_topics(transport).items()
        }
        yield pubs, executor


def start_recorder(spawn, executor, pubs, path, transport: str = 'raw'):
    recorder = spawn.python(
        '-m',
        'aloha_bringup.recorder_node',
        str(path),
        '--image-transport',
        transport,
        name='recorder',
    )
    matched = lambda: all(p.get_subscription_count() > 0 for p in pubs.values())  # noqa: E731
    assert spin_until(executor, matched, 30.0), spawn.output(recorder)
    return recorder


def wait_until_received(pubs: dict) -> None:
    """Until the recorder's DDS has acknowledged every message published so far (reliable)."""
    from rclpy.duration import Duration

    for topic, pub in pubs.items():
        assert pub.wait_for_all_acked(Duration(seconds=30)), f'{topic}: not acknowledged'


@pytest.mark.parametrize('transport', ['raw', 'compressed'], indirect=True)
def test_recorded_bag_has_every_message(publishers, spawn, tmp_path, transport):
    pubs, executor = publishers
    topics = demo_topics(transport)
    for topic in DEMO_LATCHED:  # latched before the recorder starts, like the sim's
        pubs[topic].publish(make_message(topic, 0))
    recorder = start_recorder(spawn, executor, pubs, tmp_path / 'bag', transport)
    sent = {topic: 1 for topic in DEMO_LATCHED}
    for seq in range(30):
        for topic, pub in pubs.items():
            if topic not in DEMO_LATCHED:
                pub.publish(make_message(topic, seq, topics))
                sent[topic] = sent.get(topic, 0) + 1
        time.sleep(0.005)
    wait_until_received(pubs)  # the tail too; the recorder writes what it received on Ctrl-C
    assert spawn.stop(recorder) == 0, spawn.output(recorder)
    got = bag_messages(tmp_path / 'bag')
    assert {topic: len(msgs) for topic, msgs in got.items()} == sent
    assert 'wrote' in spawn.output(recorder)


def test_ctrl_c_mid_stream_loses_nothing_before_it(publishers, spawn, tmp_path):
    pubs, executor = publishers
    for topic in DEMO_LATCHED:
        pubs[topic].publish(make_message(topic, 0))
    recorder = start_recorder(spawn, executor, pubs, tmp_path / 'bag')
    stamped = [t for t, m in DEMO_TOPICS.items() if m.startswith('sensor_msgs')]
    seq = 0
    while recorder.poll() is None and seq < 5000:
        for topic in stamped:
            pubs[topic].publish(make_message(topic, seq))
        seq += 1
        if seq == 100:
            wait_until_received(pubs)  # the first 100 reached the recorder
            recorder.send_signal(signal.SIGINT)  # Ctrl-C while the stream goes on
        time.sleep(0.002)
    assert recorder.wait(timeout=10) == 0, spawn.output(recorder)
    got = bag_messages(tmp_path / 'bag')  # opens: metadata was written on Ctrl-C
    for topic in stamped:
        seqs = [header_stamp_ns(cdr) // 1_000_000_000 for cdr in got[topic]]
        # Everything it had received before the signal, then in order what the drain took of
        # the stream that went on.
        assert seqs[:100] == list(range(100)), f'{topic}: gap in {seqs[:5]}...{seqs[95:100]}'
        assert seqs == sorted(set(seqs)), f'{topic}: out of order after the signal'
    for topic in DEMO_LATCHED:
        assert len(got[topic]) == 1


@pytest.mark.slow
def record_one_demo(spawn, out, scene: str, seed: int, *options: str) -> None:
    """record_demos of one episode at 32x48 cameras into `out`; it must exit 0."""
    rec = spawn.python(
        '-m',
        'aloha_bringup.record_demos',
        *('--scene', scene, '-n', '1', '--seed', str(seed), '-o', str(out)),
        *('--image-height', '32', '--image-width', '48', *options),
        name=f'record_demos_{out.name}',
    )
    assert rec.wait(timeout=180) == 0, spawn.output(rec)


def test_record_demos_writes_one_bag_per_episode(spawn, tmp_path):
    out = tmp_path / 'demos'
    record_one_demo(spawn, out, 'transfer_cube', 3, '--camera-rate', '10')
    summary = json.loads((out / 'summary.json').read_text())
    assert [s['success'] for s in summary] == [True]
    got = bag_messages(out / 'transfer_cube_0003')
    counts = {topic: len(msgs) for topic, msgs in got.items()}
    # 8 s of commands at 25 Hz, then 0.5 s of holding: the sim publishes over ~8.5 s. The
    # demonstrator sends only the newest due row, so when /clock arrives in bursts on a loaded
    # CPU a row can be skipped; what it did send is recorded in order, none twice.
    commands = got[robot.joint_positions_topic('left')]
    assert 190 <= len(commands) <= 200
    stamps = [header_stamp_ns(cdr) for cdr in commands]
    assert stamps == sorted(set(stamps))
    assert counts[robot.TASK_EPISODE_TOPIC] == counts[robot.TASK_INSTRUCTION_TOPIC] == 1
    for cam in robot.CAMERAS:
        assert counts[robot.camera_topic(cam)] == pytest.approx(10 * 8.5, abs=2)
    for arm in robot.ARMS:
        assert counts[robot.joint_states_topic(arm)] == pytest.approx(50 * 8.5, abs=3)
    assert summary[0]['messages'] == counts


def joint_series(bag, topic: str) -> tuple[np.ndarray, np.ndarray]:
    """Header stamps (N,) s and positions (N, 7 or 9) of a JointState topic in a bag."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState

    msgs = [deserialize_message(cdr, JointState) for cdr in bag_messages(bag)[topic]]
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in msgs])
    return stamps, np.array([m.position for m in msgs])


def tracking_error(bag) -> float:
    """Mean |measured - commanded| (rad) over the left arm's joints, each joint_states message
    against the command in force at its stamp, from the 2nd second on (the arm is moving)."""
    command_t, commands = joint_series(bag, robot.joint_positions_topic('left'))
    state_t, states = joint_series(bag, robot.joint_states_topic('left'))
    in_force = np.searchsorted(command_t, state_t, side='right') - 1
    late = (in_force >= 0) & (state_t >= state_t[0] + 2.0)
    return float(np.abs(states[late, :6] - commands[in_force[late], :6]).mean())


@pytest.mark.slow
def test_record_demos_tracking_noise_moves_the_arms_not_the_recorded_commands(spawn, tmp_path):
    from aloha_sim.physics import AlohaSim
    from aloha_sim.scripted import ScriptedDemonstrator

    sim = AlohaSim('transfer_cube', 32, 48)
    plan = ScriptedDemonstrator(sim.scene, sim.model).plan(sim.reset(3)).commands['left']
    sim.close()
    errors = {}
    for noise in (0.0, 0.05):
        out = tmp_path / f'noise_{noise}'
        record_one_demo(
            spawn,
            out,
            'transfer_cube',
            3,
            *('--camera-rate', '10', '--keep-failed', '--tracking-noise', str(noise)),
        )
        assert json.loads((out / 'summary.json').read_text())[0]['tracking_noise_rad'] == noise
        bag = out / 'transfer_cube_0003'
        errors[noise] = tracking_error(bag)
        # The bag holds rows of the demonstrator's clean plan, never a disturbed target.
        _, recorded = joint_series(bag, robot.joint_positions_topic('left'))
        distance = np.abs(recorded[:, None, :] - plan[None, :, :]).max(axis=2).min(axis=1)
        assert distance.max() < 1e-9
    # 0.05 rad std offsets dominate the servos' own lag behind a moving exact target.
    assert errors[0.05] > 2.0 * errors[0.0], errors


def test_record_demos_refuses_bad_tracking_noise(capsys):
    from aloha_bringup.record_demos import main

    for argv, message in (
        (['--tracking-noise', '-0.1'], 'must be a finite number >= 0'),
        (['--tracking-noise', 'inf'], 'must be a finite number >= 0'),
        (['--tracking-noise', '0.03', '--external-sim'], '--external-sim'),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(['record_demos', *argv])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_record_graph_records_the_running_graph_and_starts_nothing(rclpy_context, spawn, tmp_path):
    """record:=true's recorder: the graph's topics (chunks, commands, the instruction,
    /diagnostics), one bag, the instruction in its metadata; no simulation."""
    import yaml
    from std_msgs.msg import String

    from aloha_bringup.recorder_node import RECORD_QOS, message_class
    from oft_policy_node.qos import LATCHED

    cameras = [robot.camera_topic(c) for c in robot.CAMERAS]
    topics = graph_topics(cameras, 'raw', 'joint_positions')
    with spinning_node(rclpy_context, 'the_graph') as (node, executor):
        pubs = {
            topic: node.create_publisher(
                message_class(msgtype), topic, LATCHED if topic in LATCHED_TOPICS else RECORD_QOS
            )
            for topic, msgtype in topics.items()
        }
        pubs[robot.INSTRUCTION_TOPIC].publish(String(data='put green pepper into pot'))
        recorder = spawn.python(
            '-m',
            'aloha_bringup.graph_recorder',
            '--ros-args',
            '-p',
            f'output:={tmp_path / "rollout"}',
            '-p',
            'instruction:=put green pepper into pot',
            name='record_graph',
        )
        matched = lambda: all(p.get_subscription_count() > 0 for p in pubs.values())  # noqa: E731
        assert spin_until(executor, matched, 30.0), spawn.output(recorder)
        for seq in range(10):
            for topic, pub in pubs.items():
                if topic != robot.INSTRUCTION_TOPIC:
                    pub.publish(make_message(topic, seq, topics))
        wait_until_received(pubs)
        assert spawn.stop(recorder) == 0, spawn.output(recorder)
    got = {topic: len(msgs) for topic, msgs in bag_messages(tmp_path / 'rollout').items()}
    expected = {topic: 10 for topic in topics} | {robot.INSTRUCTION_TOPIC: 1}
    assert got == expected
    metadata = yaml.safe_load((tmp_path / 'rollout' / 'metadata.yaml').read_text())
    custom = metadata['rosbag2_bagfile_information']['custom_data']
    assert custom == {'instruction': 'put green pepper into pot', 'robot': 'aloha2'}
    print('\nrecord:=true bag:', *(f'{t}: {n}' for t, n in got.items()), sep='\n  ')


@pytest.mark.slow
def test_record_demos_miss_first_grasp_marks_the_retry_and_convert_trains_from_it(spawn, tmp_path):
    """--miss-first-grasp over DDS: the first grasp closes beside the pepper, the retry from
    there puts it in the pot; the bag holds the whole episode and marks where the retry
    starts, and convert keeps the ticks from the mark on."""
    import yaml
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import String

    from oft_training.convert import main as convert
    from oft_training.data.rosbag_episode import TRAIN_FROM_KEY

    out = tmp_path / 'retry'
    record_one_demo(
        spawn,
        out,
        'put_x_into_pot',
        1000,
        *('--instruction', 'put red pepper into pot', '--miss-first-grasp'),
    )
    summary = json.loads((out / 'summary.json').read_text())[0]
    assert summary['success'] and summary['retry_time'] is not None
    bag = out / 'put_x_into_pot_1000'
    metadata = yaml.safe_load((bag / 'metadata.yaml').read_text())
    mark = int(metadata['rosbag2_bagfile_information']['custom_data'][TRAIN_FROM_KEY])
    assert mark == round(summary['retry_time'] * 1e9)
    (episode,) = bag_messages(bag)[robot.TASK_EPISODE_TOPIC]
    start = json.loads(deserialize_message(episode, String).data)['start_time']
    # the miss is in the bag, before the mark: the retry starts once a /task/state from
    # after the 4.4 s check has come
    assert 4.4 <= mark / 1e9 - start < 4.4 + 0.5
    command_t, _ = joint_series(bag, robot.joint_positions_topic('left'))

    assert convert([str(out), '--out', str(tmp_path / 'set'), '--preset', 'tiny']) == 0
    index = json.loads((tmp_path / 'set' / 'index.json').read_text())
    ticks_after_mark = (command_t[-1] - mark / 1e9) * robot.CONTROL_RATE_HZ
    assert index['episodes'][0]['length'] == pytest.approx(ticks_after_mark, abs=15)
