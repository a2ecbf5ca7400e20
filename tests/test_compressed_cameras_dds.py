"""policy_node with image_transport compressed, over real DDS: JPEG and PNG
sensor_msgs/CompressedImage on <camera topic>/compressed (the names and the `format` field
image_transport's compressed plugin gives them) make chunks like raw images do; a payload that
is no image is rejected and counted, and the node goes on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from oft_policy_node import robot
from tests.test_runtime_policy_node_dds import (
    HEIGHT,
    INSTRUCTIONS,
    WIDTH,
    Feeder,
    start_policy_node,
)

pytestmark = pytest.mark.ros
# compressed_image_transport's format: "<encoding>; <jpeg|png> compressed <target encoding>"
FORMATS = {
    'cam_high': ('rgb8; jpeg compressed bgr8', '.jpg'),
    'cam_left_wrist': ('rgb8; png compressed bgr8', '.png'),
    'cam_right_wrist': ('jpeg', '.jpg'),  # what other publishers write
}


@pytest.fixture(scope='module')
def compressed_policy(tmp_path_factory):
    from oft_policy_node.model.testing import make_tiny_checkpoint

    directory = tmp_path_factory.mktemp('policy')
    checkpoint = make_tiny_checkpoint(directory / 'ckpt', instructions=INSTRUCTIONS)
    proc, group = start_policy_node(
        directory, checkpoint, 'diagnostics_period:=0.2', 'image_transport:=compressed'
    )
    yield proc, group
    assert group.stop(proc) == 0, group.output(proc)


def compressed(camera: str, payload: bytes | None = None) -> object:
    from sensor_msgs.msg import CompressedImage

    format_field, extension = FORMATS[camera]
    if payload is None:
        rgb = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
        ok, encoded = cv2.imencode(extension, rgb[..., ::-1])  # BGR, as the plugin encodes
        assert ok
        payload = encoded.tobytes()
    return CompressedImage(format=format_field, data=payload)


def test_jpeg_and_png_frames_make_chunks_and_garbage_is_counted(compressed_policy, rclpy_context):
    proc, group = compressed_policy
    feeder = Feeder(rclpy_context)
    publishers = {
        camera: feeder.node.create_publisher(
            type(compressed(camera)),
            robot.image_topic(robot.camera_topic(camera), 'compressed'),
            10,
        )
        for camera in robot.CAMERAS
    }

    def publish(payload: bytes | None = None) -> None:
        stamp = feeder.node.get_clock().now().to_msg()
        for camera, publisher in publishers.items():
            msg = compressed(camera, payload)
            msg.header.stamp = stamp
            publisher.publish(msg)
        pose = np.array([0.1, -0.3, 0.4, 0.0, 0.2, 0.0, 0.6])
        from tests.runtime_rig import interbotix_joint_state

        for arm_publisher in feeder.arms.values():
            state = interbotix_joint_state(pose)
            state.header.stamp = stamp
            arm_publisher.publish(state)

    def feed_until(predicate, payload: bytes | None = None, timeout: float = 60.0) -> bool:
        def step() -> bool:
            publish(payload)
            feeder.spin_until(predicate, timeout=0.1)
            return predicate()

        return feeder.spin_until(step, timeout)

    try:
        assert feed_until(lambda: len(feeder.chunks) >= 2), group.output(proc)
        assert feeder.spin_until(lambda: bool(feeder.diagnostics))
        assert int(feeder.diagnostics[-1]['rejected_images']) == 0
        before = int(feeder.diagnostics[-1]['rejected_images'])
        assert feed_until(
            lambda: int(feeder.diagnostics[-1]['rejected_images']) >= before + 3,
            payload=b'not an image',
        )
        feeder.chunks.clear()
        assert feed_until(lambda: bool(feeder.chunks)), group.output(proc)
        assert 'do not decode as' in group.output(proc)
    finally:
        feeder.executor.shutdown()
        feeder.node.destroy_node()
