"""Teleoperated episodes as rosbag2 MCAP bags, one per episode, and the live count of dropped
camera frames; ROS-free (the teleop node feeds it the serialised messages it takes off DDS)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from aloha_bringup.recording import BagWriter, demo_topics
from oft_policy_node import robot


def teleop_topics(camera_topics: list[str], image_transport: str) -> dict[str, str]:
    """What an episode bag holds: the demo topic set (cameras as the graph sends them, the
    followers' joint states and commands, the task's instruction and episode metadata), the
    leader arms' joint states (the authors' actions) and the chunks the followers played."""
    topics = demo_topics(image_transport, camera_topics)
    del topics[robot.TASK_SUCCESS_TOPIC]  # no one judges a teleoperated episode live
    return {
        **topics,
        **{
            robot.leader_joint_states_topic(arm): 'sensor_msgs/msg/JointState'
            for arm in robot.ARMS
        },
        robot.ACTION_CHUNK_TOPIC: 'oft_msgs/msg/ActionChunk',
    }


class FrameCounter:
    """Frames per camera and how many a camera dropped: a gap of n nominal periods between two
    frames is n - 1 frames lost."""

    def __init__(self, cameras: list[str], rate_hz: float) -> None:
        self.period_ns = 1e9 / rate_hz
        self.frames = dict.fromkeys(cameras, 0)
        self.dropped = dict.fromkeys(cameras, 0)
        self._last: dict[str, int] = {}

    def add(self, camera: str, time_ns: int) -> None:
        last = self._last.get(camera)
        if last is not None:
            self.dropped[camera] += max(0, round((time_ns - last) / self.period_ns) - 1)
        self._last[camera] = time_ns
        self.frames[camera] += 1


class EpisodeBags:
    """One bag per episode in `directory` (episode_<n>_<date>_<time>); `write` goes to the
    episode being recorded, nothing is kept between episodes."""

    def __init__(
        self,
        directory: Path,
        topics: dict[str, str],
        camera_topics: dict[str, str],
        camera_rate_hz: float,
        robot_name: str,
    ) -> None:
        self.directory = Path(directory)
        self.topics = topics
        self.camera_topics = camera_topics  # topic -> camera
        self.camera_rate_hz = camera_rate_hz
        self.robot_name = robot_name
        self.number = 0
        self.writer: BagWriter | None = None
        self.frames: FrameCounter | None = None
        self.started_ns = 0
        self.instruction = ''

    @property
    def recording(self) -> bool:
        return self.writer is not None

    def start(self, instruction: str, now_ns: int) -> Path:
        if self.writer is not None:
            raise RuntimeError(f'episode {self.number} is still being recorded; end it first')
        if not instruction.strip():
            raise ValueError('an episode needs its instruction')
        self.directory.mkdir(parents=True, exist_ok=True)
        self.number += 1
        path = self.directory / time.strftime(f'episode_{self.number:03d}_%Y%m%d_%H%M%S')
        self.writer = BagWriter(
            path,
            self.topics,
            metadata={
                'instruction': instruction,
                'robot': self.robot_name,
                'episode': self.number,
                'source': 'teleop',
            },
        )
        self.frames = FrameCounter(sorted(set(self.camera_topics.values())), self.camera_rate_hz)
        self.started_ns, self.instruction = now_ns, instruction
        return path

    def episode_info(self) -> str:
        """The /task/episode JSON of the episode being recorded."""
        return json.dumps(
            {
                'episode': self.number,
                'instruction': self.instruction,
                'start_time': self.started_ns * 1e-9,
                'robot': self.robot_name,
                'source': 'teleop',
            }
        )

    def write(self, topic: str, time_ns: int, cdr: bytes) -> None:
        if self.writer is None:
            return
        self.writer.write(topic, time_ns, cdr)
        if topic in self.camera_topics:
            self.frames.add(self.camera_topics[topic], time_ns)

    def live_line(self, now_ns: int) -> str:
        frames = self.frames
        cameras = ', '.join(
            f'{camera} {frames.frames[camera]} frames ({frames.dropped[camera]} dropped)'
            for camera in frames.frames
        )
        seconds = (now_ns - self.started_ns) * 1e-9
        return f'episode {self.number} {self.instruction!r}: {seconds:6.1f} s, {cameras}'

    def end(self) -> tuple[Path, dict[str, int]]:
        if self.writer is None:
            raise RuntimeError('no episode is being recorded')
        writer, self.writer = self.writer, None
        return writer.path, writer.close()
