"""Test peer: publishes the synthetic demo of `oft_training.testing` over real DDS, paced in real
time, with the spec's stamps in the headers (as a simulation stamps sim time).

    python src/oft_training/test/demo_publisher.py
"""

from __future__ import annotations

import importlib
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from oft_training.data.sync import NS_PER_S
from oft_training.testing import BagSpec, demo_messages

SPEC = BagSpec(instruction_in=('topic',))
QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def message_class(msgtype: str) -> type:
    package, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


def to_ros(cls: type, stamp_ns: int | None, fields: dict) -> object:
    msg = cls()
    if stamp_ns is not None:
        msg.header.stamp = Time(sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)
    for key, value in fields.items():
        if key == 'data' and isinstance(value, np.ndarray):
            value = value.tobytes()  # fast path for Image.data
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        setattr(msg, key, value)
    return msg


def main() -> None:
    rclpy.init()
    node = Node('demo_publisher')
    messages = demo_messages(SPEC)
    publishers = {}
    for m in messages:
        if m.topic not in publishers:
            publishers[m.topic] = node.create_publisher(message_class(m.msgtype), m.topic, QOS)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        p.get_subscription_count() == 0 for p in publishers.values()
    ):
        rclpy.spin_once(node, timeout_sec=0.05)
    start_wall, start_ns = time.monotonic(), messages[0].receive_ns
    for m in messages:
        delay = (m.receive_ns - start_ns) / NS_PER_S - (time.monotonic() - start_wall)
        if delay > 0:
            time.sleep(delay)
        publishers[m.topic].publish(to_ros(message_class(m.msgtype), m.stamp_ns, m.fields))
    print(f'published {len(messages)} messages', flush=True)
    try:
        while rclpy.ok():  # stay up so reliable delivery completes; the test stops us
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == '__main__':
    main()
