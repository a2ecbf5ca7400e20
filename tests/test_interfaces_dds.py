"""oft_msgs over real DDS between two processes: every ActionChunk field arrives exactly, and
SetInstruction round-trips both an accepted and a rejected request."""

from __future__ import annotations

import numpy as np
import pytest

from tests.peers import reference_messages as ref
from tests.ros_fixtures import call_service, spin_until, spinning_node


@pytest.fixture
def peer_node(rclpy_context, spawn):
    peer = spawn.python('-m', 'tests.peers.interface_peer', name='interface_peer')
    with spinning_node(rclpy_context, 'interface_test') as (node, executor):
        yield node, executor, peer, spawn


def test_action_chunk_arrives_exactly(peer_node):
    from oft_msgs.msg import ActionChunk

    node, executor, peer, spawn = peer_node
    received: list[ActionChunk] = []
    node.create_subscription(ActionChunk, ref.CHUNK_TOPIC, received.append, 10)
    assert spin_until(executor, lambda: bool(received), timeout=20.0), spawn.output(peer)

    msg = received[0]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == ref.STAMP
    assert msg.header.frame_id == ''
    assert msg.chunk_id == ref.CHUNK_ID
    assert msg.instruction == ref.INSTRUCTION
    assert list(msg.joint_names) == ref.JOINT_NAMES
    assert msg.period == ref.PERIOD
    assert msg.num_steps == ref.K
    actions = np.asarray(msg.actions, dtype=np.float32).reshape(
        msg.num_steps, len(msg.joint_names)
    )
    np.testing.assert_array_equal(actions, ref.ACTIONS)
    assert msg.inference_latency == np.float32(ref.LATENCY)


def test_set_instruction_round_trip(peer_node):
    from oft_msgs.srv import SetInstruction

    node, executor, peer, spawn = peer_node
    client = node.create_client(SetInstruction, ref.SERVICE)
    assert spin_until(executor, client.service_is_ready, timeout=20.0), spawn.output(peer)

    def call(instruction: str) -> SetInstruction.Response:
        return call_service(executor, client, SetInstruction.Request(instruction=instruction))

    accepted = call('put red pepper into pot')
    assert accepted.success
    assert accepted.active_instruction == 'put red pepper into pot'
    assert accepted.seen_in_training

    rejected = call('juggle the pot')
    assert not rejected.success
    assert 'juggle the pot' in rejected.message
    assert rejected.active_instruction == 'put red pepper into pot'
