"""aloha_sim as a separate process over real DDS: every topic at its configured rate (in sim
time) with the right type, joint names and image format; commands move the arms; the reset
service starts the seeded episode; the simulation never runs faster than real time."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from oft_policy_node import robot
from oft_policy_node.rclpy_compat import subscribe_with_arrival
from tests.ros_fixtures import call_service, spin_until, spinning_node

RATES = {'camera': 15.0, 'joints': 50.0, 'clock': 100.0, 'success': 10.0}
HEIGHT, WIDTH = 48, 64
QUEUE = 1000  # > the messages of any topic in the test's window


def stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@pytest.fixture
def sim_and_probe(rclpy_context, spawn):
    sim = spawn.python(
        '-m',
        'aloha_sim.aloha_sim_node',
        '--ros-args',
        '-p',
        'scene:=transfer_cube',
        '-p',
        f'image_height:={HEIGHT}',
        '-p',
        f'image_width:={WIDTH}',
        '-p',
        f'camera_rate_hz:={RATES["camera"]}',
        '-p',
        f'joint_state_rate_hz:={RATES["joints"]}',
        '-p',
        f'clock_rate_hz:={RATES["clock"]}',
        '-p',
        f'success_rate_hz:={RATES["success"]}',
        '-p',
        'seed:=5',
        name='aloha_sim',
    )
    with spinning_node(rclpy_context, 'sim_probe') as (node, executor):
        yield node, executor, sim, spawn


def test_topics_rates_types_and_names(sim_and_probe):
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, String

    from oft_policy_node.qos import LATCHED

    node, executor, sim, spawn = sim_and_probe
    got: dict[str, list] = {}

    def collect(key):
        return lambda msg: got.setdefault(key, []).append(msg)

    # Queues deep enough for the whole window: a probe starved for a while still gets all.
    for cam in robot.CAMERAS:
        node.create_subscription(Image, robot.camera_topic(cam), collect(cam), QUEUE)
    for arm in robot.ARMS:
        node.create_subscription(JointState, robot.joint_states_topic(arm), collect(arm), QUEUE)
    received_ns: list[int] = []  # when DDS received each /clock: the sim's pace, not the probe's

    def on_clock(msg: Clock, ns: int) -> None:
        collect('clock')(msg)
        received_ns.append(ns or time.time_ns())

    subscribe_with_arrival(node, Clock, robot.CLOCK_TOPIC, on_clock, QUEUE)
    node.create_subscription(Bool, robot.TASK_SUCCESS_TOPIC, collect('success'), QUEUE)
    node.create_subscription(String, robot.TASK_EPISODE_TOPIC, collect('episode'), LATCHED)
    node.create_subscription(String, robot.TASK_INSTRUCTION_TOPIC, collect('instruction'), LATCHED)
    assert spin_until(executor, lambda: len(got.get('clock', [])) > 10, 30.0), spawn.output(sim)
    assert spin_until(executor, lambda: 'episode' in got and 'instruction' in got, 10.0)
    sim0 = stamp_s(got['clock'][-1].clock)
    for key in (*robot.CAMERAS, *robot.ARMS, 'clock', 'success'):
        got.pop(key, None)
    received_ns.clear()
    # 3.5 s of sim time, however long that takes on a loaded machine.
    assert spin_until(
        executor, lambda: got.get('clock') and stamp_s(got['clock'][-1].clock) >= sim0 + 3.5, 60.0
    ), spawn.output(sim)
    sim_elapsed = stamp_s(got['clock'][-1].clock) - stamp_s(got['clock'][0].clock)
    wall = (received_ns[-1] - received_ns[0]) * 1e-9
    assert sim_elapsed <= wall + 0.05, 'real-time factor must stay <= 1'

    # Rates in sim time: messages stamped within one window of whole sim seconds.
    t0 = np.ceil(stamp_s(got['clock'][0].clock))
    span = np.floor(stamp_s(got['clock'][-1].clock) - 0.2) - t0
    assert span >= 2.0, span
    # Topics are not ordered against each other: wait until each has passed the window's end.
    assert spin_until(
        executor,
        lambda: all(
            got.get(key) and stamp_s(got[key][-1].header.stamp) >= t0 + span
            for key in (*robot.CAMERAS, *robot.ARMS)
        ),
        60.0,
    ), spawn.output(sim)

    def count(msgs, key=lambda m: m.header.stamp):
        return sum(t0 <= stamp_s(key(m)) < t0 + span for m in msgs)

    assert count(got['clock'], key=lambda m: m.clock) == pytest.approx(
        RATES['clock'] * span, abs=1
    )
    for arm in robot.ARMS:
        assert count(got[arm]) == pytest.approx(RATES['joints'] * span, abs=1)
        msg = got[arm][-1]
        assert list(msg.name) == list(robot.INTERBOTIX_JOINT_STATE_ORDER)
        assert len(msg.position) == len(msg.velocity) == len(msg.effort) == 9
    for cam in robot.CAMERAS:
        assert count(got[cam]) == pytest.approx(RATES['camera'] * span, abs=1)
        image = got[cam][-1]
        assert (image.height, image.width, image.encoding, image.step) == (
            HEIGHT,
            WIDTH,
            'rgb8',
            WIDTH * 3,
        )
        assert len(image.data) == HEIGHT * WIDTH * 3
    # Bool has no stamp: between the window's count and what the sim can have published by the
    # newest /clock the probe took (plus 1 s for a queue behind the others).
    newest = stamp_s(got['clock'][-1].clock) - stamp_s(got['clock'][0].clock)
    assert (
        RATES['success'] * span - 2 <= len(got['success']) <= RATES['success'] * (newest + 1) + 2
    )
    assert json.loads(got['episode'][0].data)['seed'] == 5
    assert got['instruction'][0].data == 'transfer the red cube to the left arm'


def test_commands_move_the_arm_and_bad_ones_are_held(sim_and_probe):
    from sensor_msgs.msg import JointState

    node, executor, sim, spawn = sim_and_probe
    latest = {}
    node.create_subscription(
        JointState, robot.joint_states_topic('left'), lambda m: latest.update(left=m), 10
    )
    pub = node.create_publisher(JointState, robot.joint_positions_topic('left'), 10)
    target = [0.3, -0.6, 0.8, 0.0, 0.2, 0.1]
    good = JointState(
        name=[*robot.ARM_JOINTS, 'gripper'], position=[*target, robot.GRIPPER_MOTOR_OPEN]
    )
    bad = JointState(name=list(robot.ARM_JOINTS), position=[0.0] * 6)  # no gripper

    def reached():
        if 'left' not in latest:
            return False
        position = np.array(latest['left'].position)
        return (
            np.allclose(position[:6], target, atol=0.03)
            and robot.finger_to_normalized(position[7]) > 0.9
        )

    assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 30.0)
    deadline = time.monotonic() + 20.0
    while not reached() and time.monotonic() < deadline:
        pub.publish(good)
        pub.publish(bad)  # rejected: the sim keeps the good target
        spin_until(executor, lambda: False, 0.1)
    assert reached(), spawn.output(sim)
    assert 'rejected command for arm left' in spawn.output(sim)


def test_reset_service_uses_the_seed_parameter(sim_and_probe):
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from oft_policy_node.rclpy_compat import RemoteParameters
    from oft_policy_node.service_calls import call_until_answered

    node, executor, sim, spawn = sim_and_probe
    params = RemoteParameters(node, 'aloha_sim')
    client = node.create_client(Trigger, '/aloha_sim/reset')
    assert spin_until(executor, client.service_is_ready, 30.0), spawn.output(sim)

    def set_parameters(*parameters: object) -> object:
        return call_until_answered(
            params.client,
            lambda: params.set_parameters(list(parameters)),
            lambda done, timeout: spin_until(executor, done, timeout),
        )

    assert spin_until(executor, params.service_is_ready, 30.0), spawn.output(sim)
    refused = set_parameters(Parameter('instruction', value='juggle the cube'))
    assert not refused.results[0].successful
    assert 'juggle the cube' in refused.results[0].reason

    accepted = set_parameters(Parameter('seed', value=42))
    assert accepted.results[0].successful
    reset = call_service(executor, client, Trigger.Request())  # asked again if a reply is lost
    info = json.loads(reset.message)
    assert reset.success and info['seed'] == 42 and info['episode'] >= 2
    assert info['start_time'] > 0  # the clock continues across resets
