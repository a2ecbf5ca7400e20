"""MP4 video in and out through PyAV (FFmpeg's libraries, bundled in its wheel): AV1 (dav1d
decodes, SVT-AV1 encodes) and H.264.

Reading picks the frames shown at given times and nothing else. Where every wanted frame is a
key frame, only key frames are decoded: LeRobot writes a key frame every 2 frames (`g=2`), so a
50 fps recording read onto the 25 Hz grid decodes half its frames.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# SVT-AV1 prints its configuration to stderr for every file it encodes unless told not to.
os.environ.setdefault('SVT_LOG', '1')

VIDEO_CODECS = ('libsvtav1', 'h264')  # LeRobot's vcodec names: AV1 (its default) and H.264


class VideoError(ValueError):
    """A video that cannot give the frames asked of it: missing, corrupt or truncated."""


def decode_frames(
    path: Path,
    times_s: np.ndarray,
    tolerance_s: float,
    on_frame: Callable[[int, np.ndarray], None],
    threads: int = 1,
) -> None:
    """Call `on_frame(i, rgb)` with the (H, W, 3) uint8 frame shown at `times_s[i]` (seconds on
    the file's timeline, ascending), for every i, in order of time.

    A frame belongs to time t when its presentation time is within `tolerance_s` of t. Raises
    VideoError naming the file and the first time no frame was found for (a truncated file, or
    timestamps that disagree with the video), or when the file does not decode.
    """
    times_s = np.asarray(times_s, dtype=np.float64)
    if len(times_s) == 0:
        return
    found = np.zeros(len(times_s), dtype=bool)
    last_shown = -np.inf
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f'{path}: no video stream')
            stream = container.streams.video[0]
            stream.codec_context.thread_count = threads
            time_base = stream.time_base or Fraction(1, 1)
            start = int(max(times_s[0] - tolerance_s, 0.0) / time_base)
            container.seek(start, stream=stream, backward=True, any_frame=False)
            packets = _packets_to_decode(container, stream, times_s, tolerance_s, time_base)
            for frame in _decode(stream, packets):
                if frame.pts is None:
                    continue
                shown = float(frame.pts * time_base)
                last_shown = max(last_shown, shown)
                i = _nearest(times_s, shown)
                if not found[i] and abs(times_s[i] - shown) <= tolerance_s:
                    found[i] = True
                    on_frame(i, frame.to_ndarray(format='rgb24'))
                if shown > times_s[-1] + tolerance_s and found.all():
                    break
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f'{path}: does not decode ({type(exc).__name__}: {exc})') from exc
    if not found.all():
        missing = np.flatnonzero(~found)
        end = 'no frame decoded' if np.isinf(last_shown) else f'last frame at {last_shown:.3f} s'
        raise VideoError(
            f'{path.name}: {len(missing)} of {len(times_s)} frames missing, the first at '
            f'{times_s[missing[0]]:.3f} s ({end}; tolerance {tolerance_s * 1e3:g} ms): '
            'a truncated video, or timestamps that disagree with it'
        )


def _nearest(times_s: np.ndarray, t: float) -> int:
    i = int(np.searchsorted(times_s, t))
    if i == len(times_s) or (i > 0 and t - times_s[i - 1] < times_s[i] - t):
        i -= 1
    return i


def _packets_to_decode(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    times_s: np.ndarray,
    tolerance_s: float,
    time_base: Fraction,
) -> list[av.Packet]:
    """The packets from the seek point to the last wanted time, demuxed (cheap: no decoding);
    only the key frames among them when every wanted time is shown by a key frame."""
    packets, keyframe_times, keyframes_after = [], [], 0
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's end-of-stream marker
            continue
        packets.append(packet)
        if packet.pts is not None:
            shown = float(packet.pts * time_base)
            if packet.is_keyframe:
                keyframe_times.append(shown)
            if packet.is_keyframe and shown > times_s[-1] + tolerance_s:
                # Past the last wanted frame; one group of pictures more, for frames shown
                # before a key frame that follows them in decoding order (open GOPs).
                keyframes_after += 1
                if keyframes_after == 2:
                    break
    keys = np.asarray(keyframe_times)
    if len(keys) and all(np.min(np.abs(keys - t)) <= tolerance_s for t in times_s):
        return [p for p in packets if p.is_keyframe]
    return packets


def _decode(stream: av.video.stream.VideoStream, packets: list[av.Packet]):
    """Decoded frames of `packets`, then what the decoder still holds."""
    for packet in packets:
        yield from stream.codec_context.decode(packet)
    yield from stream.codec_context.decode(None)


def realtime_threads() -> set[int]:
    """Ids of this process's threads in a real-time scheduling class (Linux; else empty)."""
    tasks = Path('/proc/self/task')
    found = set()
    for task in tasks.iterdir() if tasks.is_dir() else ():
        try:
            if os.sched_getscheduler(int(task.name)) in (os.SCHED_FIFO, os.SCHED_RR):
                found.add(int(task.name))
        except OSError:  # the thread ended meanwhile
            pass
    return found


@contextmanager
def no_realtime_takeover() -> Iterator[None]:
    """Undo what SVT-AV1 does where it may (root, CAP_SYS_NICE): it moves the thread that
    encodes, and the workers it starts, to SCHED_FIFO at priority 99. Those would starve every
    other process on the machine (a ROS graph, the robot's control loop) while a video encodes;
    a pytest process that encoded once made every node it started afterwards real-time too.
    Threads that became real-time inside the block go back to normal scheduling."""
    before = realtime_threads()
    try:
        yield
    finally:
        for thread in realtime_threads() - before:
            try:
                os.sched_setscheduler(thread, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass


class VideoWriter:
    """Frames -> one MP4 file at a constant rate: frame n is shown at n / fps exactly.

    LeRobot's encoding settings (lerobot/datasets/video_utils.py, encode_video_frames): yuv420p,
    a key frame every 2 frames, CRF 30, and for SVT-AV1 preset 12.
    """

    def __init__(
        self,
        path: Path,
        fps: int,
        height: int,
        width: int,
        codec: str = 'libsvtav1',
        crf: int = 30,
        gop: int = 2,
    ) -> None:
        if codec not in VIDEO_CODECS:
            raise ValueError(f'video codec {codec!r}: choose one of {VIDEO_CODECS}')
        if height % 2 or width % 2:
            raise ValueError(f'yuv420p video needs an even width and height, got {width}x{height}')
        options = {'g': str(gop), 'crf': str(crf)}
        if codec == 'libsvtav1':
            options['preset'] = '12'
        self.path, self.frames = Path(path), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), 'w')
        self._stream = self._container.add_stream(codec, rate=fps, options=options)
        self._stream.pix_fmt = 'yuv420p'
        self._stream.width, self._stream.height = width, height
        # Frames are counted in 1 / fps; the muxer picks the stream's own time base (its
        # first packet changes it), and the packets are rescaled to it.
        self._time_base = Fraction(1, fps)

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format='rgb24')
        frame.pts = self.frames
        frame.time_base = self._time_base
        with no_realtime_takeover():
            self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        with no_realtime_takeover():
            self._container.mux(self._stream.encode(None))
            self._container.close()

    def size_mb(self) -> float:
        return self.path.stat().st_size / 2**20 if self.path.exists() else 0.0
