"""record_graph: record the running OFT graph into one rosbag2 MCAP bag until Ctrl-C
(`ros2 launch aloha_bringup oft_bimanual.launch.py record:=true` starts it).

It records what the graph carries, nothing more and nothing of its own: the cameras as the
graph sends them (raw or compressed), both arms' joint states, the policy's chunks, the
commands of the executor's backend, the active instruction and /diagnostics (the executor's
state); rollouts to review, relabel and fine-tune on (`oft_training.convert` takes the
commands as actions). It never starts a simulation or a demonstrator. The bag's metadata holds
the instruction and the robot profile. Messages are written as DDS delivered them; on Ctrl-C
what DDS already received is written too (record_bag's recorder).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import rclpy
from rclpy.node import Node

from aloha_bringup.recorder_node import (
    GRAPH_RECORDING_PARAMETERS,
    init_without_signal_handler,
    record,
)
from aloha_bringup.recording import BagWriter, graph_topics
from oft_policy_node.node_parameters import ParameterSpec, declare_all
from oft_policy_node.node_runner import parameter_help

PARAMETERS = (
    ParameterSpec(
        'output',
        '',
        "Bag folder to create; '' = demos/rollout_<date>_<time> in the working directory.",
    ),
    *GRAPH_RECORDING_PARAMETERS,
    ParameterSpec('instruction', '', "The task the graph starts with (the bag's metadata)."),
)


def default_output() -> Path:
    return Path('demos') / time.strftime('rollout_%Y%m%d_%H%M%S')


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    if {'-h', '--help'} & set(rclpy.utilities.remove_ros_args(argv)[1:]):
        print(f'usage: record_graph [--ros-args -p name:=value ...]\n\n{__doc__}')
        print(parameter_help(PARAMETERS))
        return 0
    init_without_signal_handler(argv)
    node = Node('graph_recorder')
    try:
        params = declare_all(node, PARAMETERS)
        topics = graph_topics(
            params['camera_topics'], params['image_transport'], params['backend']
        )
        output = Path(params['output']) if params['output'] else default_output()
        output.parent.mkdir(parents=True, exist_ok=True)
        writer = BagWriter(
            output,
            topics,
            metadata={'instruction': params['instruction'], 'robot': params['robot']},
        )
    except (FileExistsError, ValueError) as err:
        print(f'record_graph: {err}', file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        return 2
    return record(node, writer, topics, 'record_graph')


if __name__ == '__main__':
    raise SystemExit(main())
