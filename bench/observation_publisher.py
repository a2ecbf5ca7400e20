"""Publishes a synthetic ALOHA observation set (3 cameras + 2 joint states) at a fixed rate.

The publishing side of bench_dds_observation, run as its own process:
    python -m bench.observation_publisher --rate 30 --duration 20
Images are 480x640 rgb8 with changing content; every message is stamped with the wall clock
at publish time, so the subscriber can measure latency on the same machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from oft_policy_node import robot


class ObservationPublisher(Node):
    def __init__(self, rate_hz: float) -> None:
        super().__init__('bench_observation_publisher')
        self.image_pubs = {
            cam: self.create_publisher(Image, robot.camera_topic(cam), 10) for cam in robot.CAMERAS
        }
        self.joint_pubs = {
            arm: self.create_publisher(JointState, robot.joint_states_topic(arm), 10)
            for arm in robot.ARMS
        }
        rng = np.random.default_rng(0)
        # A few distinct frames, cycled: content changes without per-frame generation cost.
        self.frames = [
            rng.integers(
                0, 255, (robot.IMAGE_HEIGHT, robot.IMAGE_WIDTH, 3), dtype=np.uint8
            ).tobytes()
            for _ in range(4)
        ]
        self.count = 0
        self.create_timer(1.0 / rate_hz, self.publish_all)

    def publish_all(self) -> None:
        stamp = self.get_clock().now().to_msg()
        data = self.frames[self.count % len(self.frames)]
        for cam, pub in self.image_pubs.items():
            msg = Image(
                height=robot.IMAGE_HEIGHT,
                width=robot.IMAGE_WIDTH,
                encoding='rgb8',
                is_bigendian=0,
                step=robot.IMAGE_WIDTH * 3,
                data=data,
            )
            msg.header.stamp, msg.header.frame_id = stamp, f'{cam}_color_optical_frame'
            pub.publish(msg)
        for pub in self.joint_pubs.values():
            msg = JointState(
                name=list(robot.INTERBOTIX_JOINT_STATE_ORDER),
                position=[0.01 * self.count] * len(robot.INTERBOTIX_JOINT_STATE_ORDER),
            )
            msg.header.stamp = stamp
            pub.publish(msg)
        self.count += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--rate', type=float, default=30.0, help='publish rate, Hz')
    parser.add_argument('--duration', type=float, default=20.0, help='seconds, then exit')
    args = parser.parse_args(argv)
    rclpy.init()
    node = ObservationPublisher(args.rate)
    deadline = time.monotonic() + args.duration
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
