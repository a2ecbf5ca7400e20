"""record_bag: record the demo topic set to a rosbag2 MCAP bag until Ctrl-C.

Messages are taken off DDS still serialised and written as they are; on Ctrl-C (SIGINT) or
SIGTERM the subscriptions stop and the bag is closed with its metadata, so every message
received before the signal is in the bag and `ros2 bag info` reads it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from aloha_bringup.recording import DEMO_TOPICS, LATCHED_TOPICS, BagWriter
from oft_policy_node.child_process import interrupted, sigterm_as_ctrl_c
from oft_policy_node.qos import LATCHED

# Reliable with a deep queue: a recorder must not drop frames while the writer is busy.
RECORD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


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
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    try:
        writer = BagWriter(args.output)
    except (FileExistsError, ValueError) as err:
        print(f'record_bag: {err}', file=sys.stderr)
        return 2
    sigterm_as_ctrl_c()  # and a stop never cuts a message in two (BagWriter.write)
    rclpy.init(args=argv)
    node = Node(
        'demo_recorder', parameter_overrides=[Parameter('use_sim_time', value=args.use_sim_time)]
    )
    subscribe_raw(node, writer.write)
    node.get_logger().info(f'recording {len(DEMO_TOPICS)} topics to {args.output}; Ctrl-C to stop')
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError as err:
        if not interrupted(err):
            raise
    finally:
        counts = writer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    print(f'record_bag: wrote {sum(counts.values())} messages to {args.output}')
    for topic, count in counts.items():
        print(f'  {topic}: {count}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
