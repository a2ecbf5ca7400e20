"""policy_node checkpoint:=RUN_DIR on a run folder of the authors' fine-tuning code, over real
DDS: the folder written by their save_training_checkpoint (src/oft_policy_node/test/data/
openvla_oft_run, scripts/fixtures/openvla_oft_run.py) is read as it is, its Llama quantized to
int8 (quantization:=int8), and the node publishes 25 x 14 chunks from camera frames; without a
task it refuses to start and says which parameter to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ros_fixtures import ProcessGroup
from tests.test_runtime_policy_node_dds import INSTRUCTIONS, Feeder, start_policy_node

pytestmark = pytest.mark.ros
RUN = (
    Path(__file__).resolve().parents[1]
    / 'src/oft_policy_node/test/data/openvla_oft_run/run--1000_chkpt'
)


def test_a_run_folder_of_the_authors_code_makes_chunks(tmp_path, rclpy_context):
    proc, group = start_policy_node(
        tmp_path, RUN, f'instruction:={INSTRUCTIONS[0]}', 'quantization:=int8'
    )
    feeder = Feeder(rclpy_context)
    try:
        assert feeder.feed_until(lambda: len(feeder.chunks) >= 2, timeout=90.0), group.output(proc)
        chunk = feeder.chunks[-1]
        assert (chunk.num_steps, len(chunk.joint_names), len(chunk.actions)) == (25, 14, 350)
        assert chunk.instruction == INSTRUCTIONS[0]
        assert 'int8: 14 Llama linear layers' in group.output(proc)  # 2 layers x 7
    finally:
        feeder.executor.shutdown()
        feeder.node.destroy_node()
        assert group.stop(proc) == 0, group.output(proc)


def test_without_a_task_it_says_which_parameter_to_set(tmp_path):
    group = ProcessGroup(tmp_path)
    proc = group.python(
        '-m', 'oft_policy_node.policy_node', '--ros-args', '-p', f'checkpoint:={RUN}', name='p'
    )
    assert proc.wait(timeout=120) != 0
    assert 'lists no training instructions: pass the task' in group.output(proc)
