"""Reading rosbag2 files back in tests, with rosbags (independent of the writer under test)."""

from __future__ import annotations

from pathlib import Path

from rosbags.rosbag2 import Reader


def bag_messages(path: Path) -> dict[str, list[bytes]]:
    """Every message of the bag at `path` as raw CDR, per topic, in bag order."""
    with Reader(path) as reader:
        out = {c.topic: [] for c in reader.connections}
        for connection, _, data in reader.messages():
            out[connection.topic].append(data)
    return out
