"""QoS profiles the nodes share, so a publisher and its subscribers always agree."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# Latched topics (the active instruction, the episode metadata): a late subscriber still gets
# the last message.
LATCHED = QoSProfile(
    depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
)
