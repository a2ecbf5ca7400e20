"""record_bag: record the demo topic set to a rosbag2 MCAP bag until Ctrl-C.

Messages are taken off DDS still serialised and written as they are; on Ctrl-C (SIGINT) or
SIGTERM what DDS has already received is written too (the queues are drained), then the bag is
closed with its metadata, so every message received before the signal is in the bag and
`ros2 bag info` reads it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from aloha_bringup.recording import (
    DEMO_TOPICS,
    IMAGE_TYPES,
    LATCHED_TOPICS,
    BagWriter,
    demo_topics,
)
from oft_policy_node import robot
from oft_policy_node.child_process import interrupted, sigterm_as_ctrl_c, stop_deferred
from oft_policy_node.command_backends import BACKENDS
from oft_policy_node.node_parameters import ParameterSpec, one_of
from oft_policy_node.qos import LATCHED

# What a recorder of the running graph (record_graph, teleop) is told about it.
GRAPH_RECORDING_PARAMETERS = (
    ParameterSpec(
        'camera_topics',
        [robot.camera_topic(c) for c in robot.CAMERAS],
        f'Raw image topics of the cameras {list(robot.CAMERAS)} (the robot profile gives them).',
    ),
    ParameterSpec(
        'image_transport',
        'raw',
        'raw or compressed: record the cameras as the graph sends them.',
        one_of(*IMAGE_TYPES),
    ),
    ParameterSpec(
        'backend',
        'joint_positions',
        "The executor's backend: its commands are recorded.",
        one_of(*BACKENDS),
    ),
    ParameterSpec('robot', 'aloha2', "The robot profile (the bags' metadata)."),
)
# Reliable with a deep queue: a recorder must not drop frames while the writer is busy.
RECORD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# On a stop, messages DDS already holds are written for at most this long (a stream that goes
# on is cut there).
DRAIN_S = 2.0


def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    package, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


def subscribe_raw(
    node: Node, sink: Callable[[str, int, bytes], None], topics: dict[str, str] = DEMO_TOPICS
) -> None:
    """Deliver every message of `topics` to sink(topic, receive time ns on the node clock,
    serialised bytes)."""
    for topic, msgtype in topics.items():
        qos = LATCHED if topic in LATCHED_TOPICS else RECORD_QOS
        node.create_subscription(
            message_class(msgtype),
            topic,
            lambda data, topic=topic: sink(topic, node.get_clock().now().nanoseconds, data),
            qos,
            raw=True,
        )


def spin_until_stopped(executor: SingleThreadedExecutor) -> None:
    """Spin until a stop signal: each wait is short so the signal's handler runs (rclpy's is
    off), and a signal that lands while a message is taken raises only after it was written."""
    while True:
        with stop_deferred():
            executor.spin_once(timeout_sec=0.1)


def drain(executor: SingleThreadedExecutor, writer: BagWriter, idle_spins: int = 20) -> None:
    """Write what DDS has received: spin until `idle_spins` spins in a row wrote nothing (a spin
    may run a /clock or service callback instead), at most DRAIN_S."""
    deadline = time.monotonic() + DRAIN_S
    idle = 0
    while idle < idle_spins and time.monotonic() < deadline:
        written = sum(writer.counts.values())
        with stop_deferred():
            executor.spin_once(timeout_sec=0.0)
        idle = idle + 1 if sum(writer.counts.values()) == written else 0


def record(node: Node, writer: BagWriter, topics: dict[str, str], prog: str) -> int:
    """Record `topics` into `writer` until Ctrl-C or SIGTERM, then write what DDS received,
    close the bag and say what it holds. rclpy was initialised without its signal handler."""
    subscribe_raw(node, writer.write, topics)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    node.get_logger().info(f'recording {len(topics)} topics to {writer.path}; Ctrl-C to stop')
    try:
        spin_until_stopped(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError as err:
        if not interrupted(err):
            raise
    finally:
        try:
            drain(executor, writer)
        finally:
            counts = writer.close()
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()
    print(f'{prog}: wrote {sum(counts.values())} messages to {writer.path}')
    for topic, count in counts.items():
        print(f'  {topic}: {count}')
    return 0


def init_without_signal_handler(argv: list[str]) -> None:
    """SIGTERM and Ctrl-C raise KeyboardInterrupt, and never cut a message in two
    (BagWriter.write); rclpy's own handler would shut the context down at once, with what DDS
    received but the node had not taken yet still in the queues (Humble has the option too:
    rclpy 3.3 rclpy/__init__.py:70, rclpy/signals.py:21)."""
    sigterm_as_ctrl_c()
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(
        prog='record_bag',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('output', help='bag folder to create (must not exist)')
    parser.add_argument(
        '--use-sim-time',
        action='store_true',
        help='stamp messages with /clock time (as `ros2 bag record '
        '--use-sim-time`), e.g. when recording the simulation',
    )
    parser.add_argument(
        '--image-transport',
        choices=sorted(IMAGE_TYPES),
        default='raw',
        help='record the cameras as raw sensor_msgs/Image or as the JPEG/PNG CompressedImage '
        'on <topic>/compressed (what the graph uses; the converter reads both)',
    )
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    topics = demo_topics(args.image_transport)
    try:
        writer = BagWriter(args.output, topics)
    except (FileExistsError, ValueError) as err:
        print(f'record_bag: {err}', file=sys.stderr)
        return 2
    init_without_signal_handler(argv)
    node = Node(
        'demo_recorder', parameter_overrides=[Parameter('use_sim_time', value=args.use_sim_time)]
    )
    return record(node, writer, topics, 'record_bag')


if __name__ == '__main__':
    sys.exit(main())
