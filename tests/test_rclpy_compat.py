"""rclpy_compat over real DDS: the receive time of a message where rclpy passes the message info
(Jazzy, Kilted) and the callback's time where it does not (Humble). Humble's dispatch is
tests/humble_rclpy (no Humble wheels exist); the first test shows that it fails a callback
that needs the message info, as Humble does, so the tests that run nodes under it prove
something."""

from __future__ import annotations

import os
import time

import pytest

from tests.python_snippet import run_python
from tests.ros_fixtures import REPO_ROOT, spin_until, spinning_node

HUMBLE_RCLPY = REPO_ROOT / 'tests' / 'humble_rclpy'


def humble_rclpy_env() -> dict[str, str]:
    """The environment that gives a process (and the processes it starts) Humble's dispatch."""
    path = [str(HUMBLE_RCLPY), *filter(None, [os.environ.get('PYTHONPATH')])]
    return {'PYTHONPATH': os.pathsep.join(path)}


PUBLISH_TO_A_TWO_ARGUMENT_CALLBACK = """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    rclpy.init()
    node = rclpy.create_node('two_argument_callback')
    got = []
    node.create_subscription(String, '/compat_probe', lambda msg, info: got.append(info), 10)
    publisher = node.create_publisher(String, '/compat_probe', 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        for _ in range(200):
            publisher.publish(String(data='x'))
            executor.spin_once(timeout_sec=0.05)
            if got:
                print('INFO', sorted(got[0]))
                break
    except TypeError as error:
        print('TypeError', error)
"""


@pytest.mark.ros
def test_humble_dispatch_fails_a_callback_that_needs_the_message_info():
    installed = run_python(PUBLISH_TO_A_TWO_ARGUMENT_CALLBACK)
    assert "INFO ['publication_sequence_number'" in installed.stdout, installed
    assert 'received_timestamp' in installed.stdout
    humble = run_python(PUBLISH_TO_A_TWO_ARGUMENT_CALLBACK, env=humble_rclpy_env())
    assert 'TypeError' in humble.stdout and 'info' in humble.stdout, humble


@pytest.mark.parametrize('passes_info', [True, False], ids=['installed', 'humble'])
def test_arrival_is_the_dds_receive_time_or_the_callback_time(
    rclpy_context, monkeypatch, passes_info
):
    """With the message info, the receive time DDS reports (between publish and callback);
    without it 0, and the caller takes the time its callback runs."""
    from std_msgs.msg import String

    from oft_policy_node import rclpy_compat

    if not passes_info:
        monkeypatch.setattr(rclpy_compat, 'subscriptions_pass_message_info', lambda: False)
    elif not rclpy_compat.subscriptions_pass_message_info():
        pytest.skip('this rclpy passes no message info (Humble)')
    with spinning_node(rclpy_context, 'arrival_probe') as (node, executor):
        received: list[tuple[int, int]] = []
        rclpy_compat.subscribe_with_arrival(
            node, String, '/arrival_probe', lambda _, ns: received.append((ns, time.time_ns())), 10
        )
        publisher = node.create_publisher(String, '/arrival_probe', 10)
        assert spin_until(executor, lambda: publisher.get_subscription_count() > 0, 10.0)
        published = time.time_ns()
        publisher.publish(String(data='x'))
        assert spin_until(executor, lambda: received, 10.0)
    dds_ns, callback_ns = received[0]
    if passes_info:
        assert published <= dds_ns <= callback_ns
    else:
        assert dds_ns == 0
