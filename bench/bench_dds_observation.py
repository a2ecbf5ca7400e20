"""3-camera ALOHA observation over DDS between two processes: achieved rate and latency.

One process publishes 3x 480x640 rgb8 sensor_msgs/Image and 2 sensor_msgs/JointState at 30 Hz
(bench/observation_publisher.py); this process subscribes with sensor-data QoS, as policy_node
does, and measures per topic the achieved rate and the latency (receive time - header stamp,
same clock) p50/p99/max, over the loopback + shared-memory Fast DDS profile of scripts/env.sh.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RATE_HZ = 30.0
WARMUP_S = 3.0
MEASURE_S = 20.0


def run() -> dict:
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from oft_policy_node import robot

    topics = {robot.camera_topic(c): Image for c in robot.CAMERAS}
    topics.update({robot.joint_states_topic(a): JointState for a in robot.ARMS})
    arrivals: dict[str, list[float]] = {t: [] for t in topics}
    latencies: dict[str, list[float]] = {t: [] for t in topics}

    rclpy.init()
    node = Node('bench_observation_subscriber')
    measuring = False

    def on_message(topic: str, msg: object) -> None:
        if not measuring:
            return
        now_ns = node.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        arrivals[topic].append(now_ns * 1e-9)
        latencies[topic].append((now_ns - stamp_ns) * 1e-6)

    for topic, msg_type in topics.items():
        node.create_subscription(
            msg_type, topic, lambda m, t=topic: on_message(t, m), qos_profile_sensor_data
        )
    root = Path(__file__).resolve().parents[1]
    publisher = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'bench.observation_publisher',
            '--rate',
            str(RATE_HZ),
            '--duration',
            str(WARMUP_S + MEASURE_S + 5),
        ],
        cwd=root,
        env=dict(os.environ),
    )
    try:
        start = time.monotonic()
        while time.monotonic() - start < WARMUP_S:
            rclpy.spin_once(node, timeout_sec=0.01)
        measuring = True
        start = time.monotonic()
        while time.monotonic() - start < MEASURE_S:
            rclpy.spin_once(node, timeout_sec=0.01)
    finally:
        publisher.terminate()
        publisher.wait(timeout=10)
        node.destroy_node()
        rclpy.try_shutdown()

    per_topic = {}
    for topic in topics:
        times, lat = arrivals[topic], np.array(latencies[topic])
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        per_topic[topic] = {
            'messages': len(times),
            'rate_hz': round(rate, 2),
            'latency_ms_p50': round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            'latency_ms_p99': round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            'latency_ms_max': round(float(lat.max()), 2) if lat.size else None,
        }
    return {
        'target_rate_hz': RATE_HZ,
        'measure_seconds': MEASURE_S,
        'image_shape': [480, 640, 3],
        'topics': per_topic,
    }
