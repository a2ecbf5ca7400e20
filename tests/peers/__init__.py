"""Processes the DDS tests start beside the nodes under test (`python -m tests.peers.<name>`)."""

from __future__ import annotations

from collections.abc import Callable


def spin_until_interrupted(make_node: Callable[[], object]) -> None:
    """rclpy.init, spin the node `make_node` builds until Ctrl-C/SIGTERM, shut down cleanly."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init()
    node = make_node()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
