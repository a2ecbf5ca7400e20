"""record_demos: record N scripted episodes of a scene, one rosbag2 MCAP bag per episode.

Starts aloha_sim (unless --external-sim), then per episode: resets the sim with the episode's
seed and instruction, records the demo topic set (3 cameras, both joint_states, both command
topics, /task/instruction, /task/episode metadata, /task/success) from the moment the new
episode begins, drives it with the scripted demonstrator and closes the bag. Bags are named
<scene>_<seed>; a summary goes to <output>/summary.json.

    record_demos --scene put_x_into_pot -n 50 --output demos/pot
    record_demos --scene put_x_into_pot -n 50 --miss-first-grasp --output demos/pot_retry
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from std_msgs.msg import String
from tqdm import tqdm

from aloha_bringup.recorder_node import subscribe_raw
from aloha_bringup.recording import DEMO_TOPICS, STAMPED_TYPES, BagWriter, header_stamp_ns
from aloha_sim.recovery import MISS_DISTANCE
from aloha_sim.scripted_demo_node import DemoRunner, add_episode_arguments, instruction_for
from oft_policy_node import robot
from oft_policy_node.child_process import interrupted, sigterm_as_ctrl_c, stop_process
from oft_policy_node.node_parameters import non_negative
from oft_training.data.rosbag_episode import TRAIN_FROM_KEY


class EpisodeRecorder:
    """Writes the demo topics of one episode at a time. A bag opens with the episode's
    /task/episode message; stamped messages from before the episode start, and from after its
    end once that is known (`finish`), are dropped: a bag holds the episode's window of sim
    time exactly, however far the recorder's queues lag the sim.

    The sim publishes /task/episode and then /task/instruction, but the executor may hand them
    over in the other order, so the newest instruction is held back and written when the bag
    opens if it is the episode's; each bag gets the instruction exactly once."""

    def __init__(self) -> None:
        self.writer: BagWriter | None = None
        self._path: Path | None = None
        self._seed: int | None = None
        self._start_ns = 0
        self._end_ns: int | None = None
        self._newest_ns: dict[str, int] = {}  # per stamped topic, the newest stamp seen
        self._held_instruction: tuple[int, bytes] | None = None

    def arm(self, path: Path, seed: int) -> None:
        """Open `path` when the episode with `seed` begins."""
        self._path, self._seed = path, seed

    def sink(self, topic: str, time_ns: int, cdr: bytes) -> None:
        if topic == robot.TASK_INSTRUCTION_TOPIC:
            if self.writer is None:
                self._held_instruction = (time_ns, cdr)
                return
            if self.writer.counts[topic]:
                return
        if self.writer is None and topic == robot.TASK_EPISODE_TOPIC and self._path:
            info = json.loads(deserialize_message(cdr, String).data)
            if info['seed'] == self._seed:
                self._open(info)
                self.writer.write(topic, time_ns, cdr)
                self._write_held_instruction(info['instruction'])
                return
        if self.writer is None:
            return
        if DEMO_TOPICS[topic] in STAMPED_TYPES:
            stamp = header_stamp_ns(cdr)
            self._newest_ns[topic] = max(stamp, self._newest_ns.get(topic, stamp))
            if stamp < self._start_ns or (self._end_ns is not None and stamp > self._end_ns):
                return
        self.writer.write(topic, time_ns, cdr)

    def finish(self, end_ns: int) -> None:
        """The episode ends at `end_ns` (sim time): nothing stamped after it is written."""
        self._end_ns = end_ns

    def passed_end(self, topics: tuple[str, ...]) -> bool:
        """Whether each of `topics` has delivered a message stamped at or after the end (so
        everything of theirs inside the window is in)."""
        return self._end_ns is not None and all(
            self._newest_ns.get(topic, -1) >= self._end_ns for topic in topics
        )

    def _open(self, info: dict) -> None:
        self.writer = BagWriter(
            self._path,
            metadata={
                'instruction': info['instruction'],
                'scene': info['scene'],
                'seed': str(info['seed']),
            },
        )
        self._start_ns = round(info['start_time'] * 1e9)
        self._path = None

    def _write_held_instruction(self, instruction: str) -> None:
        if self._held_instruction is None:
            return
        time_ns, cdr = self._held_instruction
        if deserialize_message(cdr, String).data == instruction:
            self.writer.write(robot.TASK_INSTRUCTION_TOPIC, time_ns, cdr)

    def close(self) -> dict[str, int]:
        counts = self.writer.close() if self.writer else {}
        self.writer, self._end_ns, self._newest_ns = None, None, {}
        self._held_instruction = None
        return counts


# What the sim publishes all the time (the demonstrator's commands stop with its plan).
SIM_STREAMS = (
    *(robot.camera_topic(camera) for camera in robot.CAMERAS),
    *(robot.joint_states_topic(arm) for arm in robot.ARMS),
)


def bag_name(scene: str, seed: int) -> str:
    """The folder name of the bag of the episode with this seed."""
    return f'{scene}_{seed:04d}'


def start_sim(
    scene: str, height: int, width: int, camera_rate: float, tracking_noise: float
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            '-m',
            'aloha_sim.aloha_sim_node',
            '--ros-args',
            '-p',
            f'scene:={scene}',
            '-p',
            f'image_height:={height}',
            '-p',
            f'image_width:={width}',
            '-p',
            f'camera_rate_hz:={camera_rate}',
            '-p',
            f'tracking_noise_std:={tracking_noise}',
            '--log-level',
            'warn',
        ],
        env=os.environ.copy(),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(
        prog='record_demos',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_episode_arguments(parser)
    parser.add_argument(
        '-o',
        '--output',
        type=Path,
        default=Path('demos'),
        help='folder for the bags (default: %(default)s)',
    )
    parser.add_argument(
        '--external-sim',
        action='store_true',
        help='use an aloha_sim that is already running instead of starting one',
    )
    parser.add_argument('--image-height', type=int, default=robot.IMAGE_HEIGHT)
    parser.add_argument('--image-width', type=int, default=robot.IMAGE_WIDTH)
    parser.add_argument(
        '--camera-rate',
        type=float,
        default=robot.CONTROL_RATE_HZ,
        help='camera frames per sim second (default: %(default)s)',
    )
    parser.add_argument(
        '--keep-failed',
        action='store_true',
        help='keep the bags of unsuccessful episodes (default: delete them)',
    )
    parser.add_argument(
        '--tracking-noise',
        type=float,
        default=0.0,
        metavar='RAD',
        help='DART demos: the sim tracks each arm joint command plus a drifting '
        'offset of this std (rad; 0.03 moves the gripper ~2 cm RMS) while '
        'the bags keep the clean commands as actions, so the policy learns '
        'to come back to the path (default: %(default)s, exact tracking)',
    )
    parser.add_argument(
        '--miss-first-grasp',
        action='store_true',
        help=f'recovery demos: aim the first grasp {MISS_DISTANCE * 100:.0f} cm beside the '
        'object, then retry from '
        'where the arms are and the object lies; the bag marks where the retry starts '
        f'(custom_data {TRAIN_FROM_KEY}) and convert trains from there only',
    )
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    sigterm_as_ctrl_c()
    if args.episodes < 1:
        parser.error(f'--episodes must be >= 1, got {args.episodes}')
    if problem := non_negative(args.tracking_noise):  # the sim node's own check, up front
        parser.error(f'--tracking-noise {problem} (rad), got {args.tracking_noise}')
    if args.tracking_noise and args.external_sim:
        parser.error(
            '--tracking-noise configures the sim record_demos starts; with '
            "--external-sim set that sim's tracking_noise_std parameter instead"
        )
    args.output.mkdir(parents=True, exist_ok=True)
    sim = (
        None
        if args.external_sim
        else start_sim(
            args.scene, args.image_height, args.image_width, args.camera_rate, args.tracking_noise
        )
    )
    rclpy.init(args=argv)
    node = Node('record_demos', parameter_overrides=[Parameter('use_sim_time', value=True)])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    recorder = EpisodeRecorder()
    subscribe_raw(node, recorder.sink)
    summary = []
    status = 0
    try:
        runner = DemoRunner(node, executor, args.scene)
        runner.wait_for_sim(timeout=120.0)
        for k in tqdm(range(args.episodes), desc=f'recording {args.scene}', unit='ep'):
            seed = args.seed + k
            path = args.output / bag_name(args.scene, seed)
            if path.exists():
                raise FileExistsError(f'{path} exists; remove it or pick another --seed')
            recorder.arm(path, seed)
            result = runner.run_episode(
                seed,
                instruction_for(args.scene, k, args.instruction),
                miss_first_grasp=args.miss_first_grasp,
            )
            if result.retry_time is not None and recorder.writer:
                recorder.writer.set_metadata(TRAIN_FROM_KEY, str(round(result.retry_time * 1e9)))
            recorder.finish(round(result.end_time * 1e9))
            # The sim's own streams past the end: the rest of the window is in (bounded: a
            # stream that has stopped costs the 10 s, and the window stays exact).
            runner.spin_until(lambda: recorder.passed_end(SIM_STREAMS), 10.0)
            counts = recorder.close()
            if not result.success and not args.keep_failed:
                shutil.rmtree(path)
            summary.append(
                {
                    'bag': path.name,
                    'seed': seed,
                    'instruction': result.instruction,
                    'success': result.success,
                    'kept': result.success or args.keep_failed,
                    'tracking_noise_rad': args.tracking_noise,
                    'retry_time': result.retry_time,
                    'messages': counts,
                }
            )
            retried = '' if result.retry_time is None else ' after a retry'
            tqdm.write(
                f'{path.name}: {"success" if result.success else "FAILED"}{retried}, '
                f'{sum(counts.values())} messages'
            )
    except (KeyboardInterrupt, TimeoutError, ValueError, RuntimeError, FileExistsError) as err:
        if interrupted(err):
            status = 130
        else:
            print(f'record_demos: {err}', file=sys.stderr)
            status = 1
    finally:
        recorder.close()  # a bag interrupted mid-episode is still closed and readable
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        if sim is not None:
            stop_process(sim)
    (args.output / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    kept = sum(s['kept'] for s in summary)
    print(
        f'record_demos: {sum(s["success"] for s in summary)}/{len(summary)} successful, '
        f'{kept} bags in {args.output}'
    )
    return status


if __name__ == '__main__':
    sys.exit(main())
