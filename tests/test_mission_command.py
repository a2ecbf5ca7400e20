"""The command the mission and the README give, as a user types it: the graph with only a task,
no checkpoint, started from a directory that is not the repository. `ros2 launch` is not
installable here, so its local twin `run_graph` runs it (both resolve config/graph.yaml through
aloha_bringup.graph, see src/aloha_bringup/test/test_graph.py): the committed policy of the
scene must be found, the arms must move, and Ctrl-C must stop every node cleanly. It runs on the
installed rclpy and again with every node under Humble's subscription dispatch
(tests/humble_rclpy: no message info, so the executor times messages by its callbacks)."""

from __future__ import annotations

import shutil

import pytest

from oft_policy_node import robot
from tests.ros_fixtures import spin_until, spinning_node
from tests.runtime_rig import record_executor_diagnostics
from tests.test_rclpy_compat import humble_rclpy_env

TASK = 'put green pepper into pot'


@pytest.mark.slow
@pytest.mark.parametrize('rclpy_dispatch', ['installed', 'humble'])
def test_run_graph_with_only_a_task_from_another_directory(
    rclpy_context, spawn, tmp_path, rclpy_dispatch
):
    from oft_msgs.msg import ActionChunk

    run_graph = shutil.which('run_graph')
    assert run_graph, 'run_graph is not on PATH: source scripts/env.sh after make build'
    env = humble_rclpy_env() if rclpy_dispatch == 'humble' else None
    proc = spawn.command(run_graph, f'task:={TASK}', name='run_graph', cwd=tmp_path, env=env)
    with spinning_node(rclpy_context, 'mission_probe') as (node, executor):
        chunks: list[ActionChunk] = []
        node.create_subscription(ActionChunk, robot.ACTION_CHUNK_TOPIC, chunks.append, 10)
        executor_reports = record_executor_diagnostics(node)
        assert spin_until(
            executor,
            lambda: (
                len(chunks) >= 3
                and executor_reports
                and int(executor_reports[-1]['fresh_ticks']) > 10
                and executor_reports[-1]['message'] == 'running'
            ),
            180.0,
        ), spawn.output(proc)[-3000:]
    assert {c.instruction for c in chunks} == {TASK}
    output = spawn.output(proc)
    assert 'checkpoints/put_x_into_pot' in output and 'is required' not in output
    assert spawn.stop(proc) == 0, output[-3000:]
