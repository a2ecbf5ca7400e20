"""The bringup graph: one description, resolved identically by the launch file and the runner."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types
from pathlib import Path

import pytest
import yaml

from aloha_bringup import run_graph
from aloha_bringup.graph import (
    CONFIG_DIR,
    SOURCE_CHECKPOINTS,
    checkpoint_dirs,
    default_checkpoint,
    load_params,
    resolve_graph,
)
from oft_policy_node.model.testing import make_tiny_checkpoint
from oft_policy_node.runtime.pose_moves import EXIT_TIMEOUT

LAUNCH_DIR = Path(__file__).resolve().parents[1] / 'launch'


def test_defaults_start_sim_policy_and_executor_on_sim_time():
    nodes = {n.name: n for n in resolve_graph()}
    assert list(nodes) == ['aloha_sim', 'policy_node', 'chunk_executor']
    assert all(n.parameters['use_sim_time'] is True for n in nodes.values())
    assert nodes['policy_node'].parameters['instruction'] == 'put green pepper into pot'
    assert nodes['aloha_sim'].parameters['instruction'] == 'put green pepper into pot'
    assert nodes['chunk_executor'].parameters['backend'] == 'joint_positions'
    assert nodes['policy_node'].parameters['quantization'] == 'none'
    assert all(n.remappings == () for n in nodes.values())
    quantized = {n.name: n for n in resolve_graph({'quantization': 'int8'})}
    assert quantized['policy_node'].parameters['quantization'] == 'int8'


@pytest.mark.parametrize('exit_timeout', [None, 60.0])
def test_the_executor_is_given_its_exit_timeout_before_it_is_stopped_harder(
    exit_timeout, tmp_path
):
    """Ctrl-C starts the executor's exit move; launch must not escalate to SIGTERM before the
    exit may end: exit_timeout from params.yaml, or the executor's own default without one."""
    config = shutil.copytree(CONFIG_DIR, tmp_path / 'config')
    params = yaml.safe_load((config / 'params.yaml').read_text())
    executor = params['chunk_executor']['ros__parameters']
    executor.pop('exit_timeout')
    if exit_timeout is not None:
        executor['exit_timeout'] = exit_timeout
    (config / 'params.yaml').write_text(yaml.safe_dump(params))
    nodes = {n.name: n for n in resolve_graph(directory=config)}
    assert nodes['chunk_executor'].stop_timeout == (exit_timeout or EXIT_TIMEOUT) + 5.0
    assert nodes['policy_node'].stop_timeout == nodes['aloha_sim'].stop_timeout == 10.0


def test_no_checkpoint_means_the_scenes_committed_policy():
    """The mission's command gives only a task: the launch file and run_graph both start the
    committed policy of the simulation scene (installed with aloha_bringup, found from any
    directory)."""
    for scene in ('put_x_into_pot', 'transfer_cube'):
        policy = next(n for n in resolve_graph({'scene': scene}) if n.name == 'policy_node')
        checkpoint = Path(policy.parameters['checkpoint'])
        assert checkpoint.is_absolute() and checkpoint == default_checkpoint(scene)
        assert (checkpoint / 'model.safetensors').resolve() == (
            SOURCE_CHECKPOINTS / scene / 'model.safetensors'
        ).resolve()
    assert any('share/aloha_bringup/checkpoints' in str(d) for d in checkpoint_dirs())
    explicit = next(
        n for n in resolve_graph({'checkpoint': '/models/mine'}) if n.name == 'policy_node'
    )
    assert explicit.parameters['checkpoint'] == '/models/mine'


def test_a_missing_checkpoint_is_named_with_what_to_pass():
    with pytest.raises(
        ValueError,
        match="no committed policy for scene 'insertion'.*pass checkpoint:=/path/to/ckpt",
    ):
        resolve_graph({'scene': 'insertion'})
    with pytest.raises(ValueError, match='checkpoint:= is required with use_sim:=false'):
        resolve_graph({'use_sim': 'false'})


def test_prefix_rule_only_with_a_policy_trained_with_an_action_prefix(tmp_path, caplog):
    """The bringup default splices chunks at the rows the policy was given; a checkpoint trained
    without an action prefix would have each chunk take over only after the played one ran
    out, so the executor gets sync instead, and says so."""

    def rule(checkpoint: Path) -> str:
        overrides = {'checkpoint': str(checkpoint)}
        return next(n for n in resolve_graph(overrides) if n.name == 'chunk_executor').parameters[
            'merge_rule'
        ]

    assert load_params()['chunk_executor']['merge_rule'] == 'prefix'
    for scene in ('put_x_into_pot', 'transfer_cube'):  # the committed policies
        assert rule(default_checkpoint(scene)) == 'prefix'
    assert rule(make_tiny_checkpoint(tmp_path / 'rtc', prefix_steps=4)) == 'prefix'
    plain = make_tiny_checkpoint(tmp_path / 'plain')
    with caplog.at_level('WARNING'):
        assert rule(plain) == 'sync'
    assert f'{plain} was not: the executor uses sync' in caplog.text
    # A checkpoint this machine cannot read (policy_node, where it runs, reports that itself).
    assert rule(tmp_path / 'on_the_robot') == 'prefix'


def test_real_robot_drops_the_sim_and_adds_recording_and_remaps():
    nodes = {
        n.name: n
        for n in resolve_graph(
            {
                'use_sim': 'false',
                'record': 'true',
                'backend': 'interbotix',
                'checkpoint': '/ckpt',
                'left_namespace': 'arm_l',
                'task': 'put red pepper into pot',
            }
        )
    }
    # record:=true records the graph; it starts no simulation and no demonstrator
    assert list(nodes) == ['policy_node', 'chunk_executor', 'graph_recorder']
    recorder = nodes['graph_recorder']
    assert (recorder.package, recorder.executable) == ('aloha_bringup', 'record_graph')
    assert recorder.parameters['backend'] == 'interbotix'
    assert recorder.parameters['camera_topics'] == nodes['policy_node'].parameters['camera_topics']
    assert nodes['policy_node'].parameters['use_sim_time'] is False
    assert nodes['chunk_executor'].parameters['backend'] == 'interbotix'
    remaps = dict(nodes['chunk_executor'].remappings)
    assert remaps['/follower_left/joint_states'] == '/arm_l/joint_states'
    assert remaps['/follower_left/commands/joint_group'] == '/arm_l/commands/joint_group'
    assert remaps['/follower_left/torque_enable'] == '/arm_l/torque_enable'  # the bring-up
    assert not any(source.startswith('/follower_right') for source in remaps)


def test_bad_arguments_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown launch argument\(s\) \['taks'\]"):
        resolve_graph({'taks': 'x'})
    with pytest.raises(ValueError, match="use_sim='maybe' must be true or false"):
        resolve_graph({'use_sim': 'maybe'})


def _fake_launch_modules(recorded: list[dict]) -> dict[str, types.ModuleType]:
    """Minimal stand-ins for `launch`/`launch_ros` (not installable here) that record what the
    launch file asks for; the real packages are used under `ros2 launch`."""
    launch = types.ModuleType('launch')
    actions = types.ModuleType('launch.actions')
    substitutions = types.ModuleType('launch.substitutions')
    launch_ros = types.ModuleType('launch_ros')
    ros_actions = types.ModuleType('launch_ros.actions')

    class DeclareLaunchArgument:
        def __init__(self, name, default_value, description):
            self.name, self.default_value = name, default_value

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    launch.LaunchDescription = list
    actions.DeclareLaunchArgument = DeclareLaunchArgument
    actions.OpaqueFunction = lambda function: function
    substitutions.LaunchConfiguration = LaunchConfiguration
    ros_actions.Node = lambda **kwargs: recorded.append(kwargs) or kwargs
    return {
        'launch': launch,
        'launch.actions': actions,
        'launch.substitutions': substitutions,
        'launch_ros': launch_ros,
        'launch_ros.actions': ros_actions,
    }


@pytest.mark.parametrize(
    'launch, graph, overrides',
    [
        ('oft_bimanual', 'graph.yaml', {}),
        (
            'oft_bimanual',
            'graph.yaml',
            {
                'use_sim': 'false',
                'backend': 'interbotix',
                'record': 'true',
                'right_namespace': 'arm_r',
                'checkpoint': '/ckpt',
            },
        ),
        ('teleop', 'teleop_graph.yaml', {}),
        (
            'teleop',
            'teleop_graph.yaml',
            {'use_sim': 'true', 'backend': 'joint_positions', 'leader_bringup': 'false'},
        ),
    ],
)
def test_launch_file_and_runner_resolve_the_same_graph(
    launch, graph, overrides, monkeypatch, tmp_path
):
    recorded: list[dict] = []
    for name, module in _fake_launch_modules(recorded).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, 'aloha_bringup.launching', raising=False)  # this test's fakes
    spec = importlib.util.spec_from_file_location(launch, LAUNCH_DIR / f'{launch}.launch.py')
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)

    description = launch_file.generate_launch_description()
    declared = {a.name: a.default_value for a in description[:-1]}
    graph_arguments = yaml.safe_load((CONFIG_DIR / graph).read_text())['arguments']
    assert declared == {name: str(body['default']) for name, body in graph_arguments.items()}
    description[-1]({**declared, **overrides})  # the OpaqueFunction, with resolved arguments

    runner = resolve_graph(overrides, name=graph)
    assert [(n['name'], n['package'], n['executable']) for n in recorded] == [
        (n.name, n.package, n.executable) for n in runner
    ]
    assert [n['parameters'] for n in recorded] == [[n.parameters] for n in runner]
    assert [n['remappings'] for n in recorded] == [list(n.remappings) for n in runner]

    # The runner's command lines carry exactly those parameters and remappings.
    monkeypatch.setattr(run_graph, 'executable_path', lambda s: f'/prefix/{s.executable}')
    for node in runner:
        command = run_graph.node_command(node, tmp_path)
        params = yaml.safe_load(Path(command[command.index('--params-file') + 1]).read_text())
        assert params == {node.name: {'ros__parameters': node.parameters}}
        remaps = [command[i + 1] for i, word in enumerate(command) if word == '-r'][1:]
        assert remaps == [f'{a}:={b}' for a, b in node.remappings]
        assert command[:4] == [
            f'/prefix/{node.executable}',
            '--ros-args',
            '-r',
            f'__node:={node.name}',
        ]


def test_runner_rejects_malformed_arguments():
    with pytest.raises(SystemExit, match="'task' is not of the form name:=value"):
        run_graph.parse_launch_arguments(['task'])
