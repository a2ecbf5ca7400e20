"""End to end over real DDS: a peer process publishes a demo on the robot's topics, this test
records it to a rosbag2 MCAP (serialized messages as they arrive, like `ros2 bag record`), and
convert turns it into exactly the samples the stamps dictate."""

from __future__ import annotations

import time

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from oft_policy_node import robot
from oft_training.convert import main as convert
from oft_training.data.rosbag_episode import make_typestore
from oft_training.data.training_set import TrainingSet
from oft_training.testing import command_row, demo_messages, frame_colour, state_row
from tests.ros_fixtures import spin_until, spinning_node

from .demo_publisher import QOS, SPEC, message_class


def test_bag_recorded_over_dds_converts_exactly(rclpy_context, spawn, tmp_path):
    expected_messages = demo_messages(SPEC)
    topic_types = {m.topic: m.msgtype for m in expected_messages}
    received: list[tuple[int, str, bytes]] = []
    with spinning_node(rclpy_context, 'demo_recorder') as (node, executor):
        for topic, msgtype in topic_types.items():
            node.create_subscription(
                message_class(msgtype),
                topic,
                lambda raw, topic=topic: received.append((time.time_ns(), topic, raw)),
                QOS,
                raw=True,
            )
        peer = spawn.python('src/oft_training/test/demo_publisher.py', name='demo_publisher')
        assert spin_until(
            executor, lambda: len(received) == len(expected_messages), timeout=40.0
        ), (len(received), spawn.output(peer))

    bag = tmp_path / 'dds_demo'
    store = make_typestore()
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {
            t: writer.add_connection(t, ty, typestore=store) for t, ty in topic_types.items()
        }
        for receive_ns, topic, raw in received:
            writer.write(connections[topic], receive_ns, raw)

    assert convert([str(bag), '--out', str(tmp_path / 'set'), '--preset', 'tiny', '--strict']) == 0
    data = TrainingSet(tmp_path / 'set')
    (episode,) = data.episodes
    assert episode['length'] == 50 and episode['instruction'] == SPEC.instruction
    arrays = data.episode_arrays(0)
    ticks = np.arange(50)
    np.testing.assert_allclose(arrays['proprio'], [state_row(2 * k) for k in ticks], atol=1e-6)
    np.testing.assert_allclose(arrays['actions'], [command_row(k) for k in ticks], atol=1e-6)
    for c, cam in enumerate(robot.CAMERAS):
        colours = np.array([frame_colour(i, c) for i in (6 * ticks) // 5])  # (T, 3)
        np.testing.assert_array_equal(arrays[cam][:, 0, 0], colours)
