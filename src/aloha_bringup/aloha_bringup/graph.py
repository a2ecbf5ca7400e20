"""The bringup graph (config/graph.yaml + config/params.yaml) resolved into concrete nodes.

ROS-free: both `launch/oft_bimanual.launch.py` (launch_ros) and the local runner
(`aloha_bringup.run_graph`) call `resolve_graph`, so a user with `ros2 launch` and a machine
without it start exactly the same nodes with the same parameters and remappings.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aloha_bringup.robot_profile import RobotProfile, camera_topics, load_profile
from oft_policy_node import robot
from oft_policy_node.runtime.pose_moves import EXIT_TIMEOUT

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'config'
# The committed simulation policies, checkpoints/<scene> at the top of the source tree (a
# symlink install resolves to it); a plain install has them in share/aloha_bringup/checkpoints.
SOURCE_CHECKPOINTS = Path(__file__).resolve().parents[3] / 'checkpoints'
_SUBSTITUTION = re.compile(r'\$\((\w+)\)')
_TRUE = ('true', '1', 'yes', 'on')
_FALSE = ('false', '0', 'no', 'off', '')


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeSpec:
    """One node of the resolved graph."""

    name: str
    package: str
    executable: str
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    # Seconds between the stop signals (SIGINT, SIGTERM, SIGKILL): the executor's exit moves
    # the arms for up to its exit_timeout.
    stop_timeout: float = 10.0


def config_dir() -> Path:
    """The config folder: the installed share/aloha_bringup/config when it exists, else source."""
    share = _share_dir()
    if share is not None and (share / 'config' / 'graph.yaml').exists():
        return share / 'config'
    return CONFIG_DIR


def _share_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory('aloha_bringup'))
    except (ImportError, LookupError):
        return None


def checkpoint_dirs() -> list[Path]:
    """Where the committed checkpoints are looked for, in order."""
    share = _share_dir()
    return [*([share / 'checkpoints'] if share else []), SOURCE_CHECKPOINTS]


def default_checkpoint(scene: str) -> Path | None:
    """The committed policy of a simulation scene (checkpoints/<scene>), or None."""
    for base in checkpoint_dirs():
        if (base / scene / 'config.json').is_file():
            return (base / scene).resolve()
    return None


def _resolve_checkpoint(args: dict[str, str], use_sim: bool) -> str:
    """`checkpoint` as given, or '' resolved to the scene's committed policy (simulation only:
    those policies were trained in MuJoCo and mean nothing to a real robot)."""
    if args['checkpoint']:
        return args['checkpoint']
    if not use_sim:
        raise ValueError(
            'checkpoint:= is required with use_sim:=false: the committed '
            'checkpoints are simulation policies; pass checkpoint:=/path/to/ckpt '
            "(a train run's final/ folder)"
        )
    found = default_checkpoint(args['scene'])
    if found is None:
        raise ValueError(
            f'no checkpoint:= given and no committed policy for scene '
            f'{args["scene"]!r} in {[str(d) for d in checkpoint_dirs()]}; pass '
            f'checkpoint:=/path/to/ckpt or train one (make train-sim)'
        )
    return str(found)


def checkpoint_prefix_steps(checkpoint: str) -> int | None:
    """The rows of an action prefix the checkpoint was trained to be given (its config.json's
    `prefix_steps`, 0 when trained without `--prefix-steps`), or None where no config.json can
    be read here (a checkpoint on another machine: policy_node reports that itself)."""
    try:
        config = json.loads((Path(checkpoint) / 'config.json').read_text())
    except (OSError, ValueError):
        return None
    return int(config.get('prefix_steps', 0)) if isinstance(config, dict) else None


def merge_rule_for(rule: str, checkpoint: str) -> str:
    """The executor's merge rule for a checkpoint: `prefix` splices a chunk at the rows the
    policy was given, so a policy trained without an action prefix gets `sync` instead (with
    `prefix` each of its chunks would take over only after the played one ran out, rows late)."""
    if rule == 'prefix' and checkpoint_prefix_steps(checkpoint) == 0:
        logging.getLogger(__name__).warning(
            'merge_rule prefix needs a policy trained with --prefix-steps; %s was not: the '
            'executor uses sync (set merge_rule: sync in config/params.yaml to say so, or '
            'train with --prefix-steps)',
            checkpoint,
        )
        return 'sync'
    return rule


MISSION_GRAPH, TELEOP_GRAPH = 'graph.yaml', 'teleop_graph.yaml'


def load_graph(directory: Path | None = None, name: str = MISSION_GRAPH) -> dict[str, Any]:
    return yaml.safe_load(((directory or config_dir()) / name).read_text())


def load_params(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """Static parameters by node name (params.yaml, ROS 2 `ros__parameters` layout)."""
    path = (directory or config_dir()) / 'params.yaml'
    if not path.exists():
        return {}
    raw = yaml.safe_load(path.read_text()) or {}
    return {node: dict(body.get('ros__parameters', {})) for node, body in raw.items()}


def graph_arguments(
    graph: dict[str, Any] | None = None, name: str = MISSION_GRAPH
) -> list[Argument]:
    graph = graph or load_graph(name=name)
    return [
        Argument(name, str(spec['default']), spec['description'])
        for name, spec in graph['arguments'].items()
    ]


def parse_bool(name: str, value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f'argument {name}={value!r} must be true or false')


def _substitute(value: Any, args: dict[str, str]) -> Any:
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match[str]) -> str:
        if match.group(1) not in args:
            raise ValueError(
                f'graph.yaml uses $({match.group(1)}), which is not an argument; '
                f'arguments: {sorted(args)}'
            )
        return args[match.group(1)]

    whole = _SUBSTITUTION.fullmatch(value)
    if whole:
        text = lookup(whole)
        # An argument that is the whole value takes its YAML type (true -> bool, 0.04 -> float),
        # as launch_ros does for parameters; anything else stays text.
        typed = yaml.safe_load(text) if text else ''
        return typed if isinstance(typed, (bool, int, float)) else text
    return _SUBSTITUTION.sub(lookup, value)


def _arm_remappings(profile: RobotProfile, args: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Every topic and service of an arm moved to the namespace the robot uses."""
    remaps = []
    for arm in robot.ARMS:
        default = robot.arm_namespace(arm)
        wanted = args[f'{arm}_namespace'] or profile.arm_namespaces[arm]
        if wanted == default:
            continue
        names = [
            topic_of(arm)
            for topic_of in (
                robot.joint_states_topic,
                robot.joint_group_topic,
                robot.joint_single_topic,
                robot.joint_positions_topic,
            )
        ]
        names += [robot.driver_service(arm, service) for service in robot.DRIVER_SERVICES]
        remaps += [(name, name.replace(f'/{default}/', f'/{wanted}/', 1)) for name in names]
    return tuple(remaps)


def resolve_graph(
    overrides: dict[str, str] | None = None,
    directory: Path | None = None,
    name: str = MISSION_GRAPH,
) -> list[NodeSpec]:
    """The nodes to start for the given launch arguments (defaults from the graph file: the
    mission's graph.yaml, or teleop_graph.yaml)."""
    graph = load_graph(directory, name)
    known = {a.name: a.default for a in graph_arguments(graph)}
    unknown = sorted(set(overrides or {}) - set(known))
    if unknown:
        raise ValueError(f'unknown launch argument(s) {unknown}; known: {sorted(known)}')
    args = {**known, **{k: str(v) for k, v in (overrides or {}).items()}}
    use_sim = parse_bool('use_sim', args['use_sim'])
    if 'checkpoint' in args:
        args['checkpoint'] = _resolve_checkpoint(args, use_sim)
    static = load_params(directory)
    profile = load_profile(args['robot'], directory or config_dir())
    _check_simulated_robot(profile, args, use_sim)
    remappings = _arm_remappings(profile, args)
    by_node = _profile_parameters(profile, args)
    nodes = []
    for entry in graph['nodes']:
        condition = entry.get('condition')
        if condition and not parse_bool(condition, args[condition]):
            continue
        parameters = {
            **static.get(entry['name'], {}),
            **by_node.get(entry['name'], {}),
            **{k: _substitute(v, args) for k, v in entry.get('parameters', {}).items()},
            'use_sim_time': use_sim,
        }
        if 'merge_rule' in parameters and 'checkpoint' in args:
            parameters['merge_rule'] = merge_rule_for(parameters['merge_rule'], args['checkpoint'])
        nodes.append(_node_spec(entry, parameters, remappings))
    return nodes


def _node_spec(
    entry: dict[str, Any], parameters: dict[str, Any], remappings: tuple[tuple[str, str], ...]
) -> NodeSpec:
    # The executor's exit may move the arms for up to its exit_timeout (its own default when the
    # config sets none), then 5 s to end; other nodes 10 s.
    stop_timeout = 10.0
    if entry['executable'] == 'chunk_executor':
        stop_timeout = max(float(parameters.get('exit_timeout', EXIT_TIMEOUT)) + 5.0, 10.0)
    return NodeSpec(
        entry['name'], entry['package'], entry['executable'], parameters, remappings, stop_timeout
    )


def _check_simulated_robot(profile: RobotProfile, args: dict[str, str], use_sim: bool) -> None:
    """The simulation is Trossen's ALOHA 2 with raw realsense 4.55 topics: other profiles,
    camera sets or transports describe hardware it does not simulate."""
    if not use_sim:
        return
    cameras = args['cameras'] or profile.cameras
    if profile.name != 'aloha2' or cameras != 'realsense_4_55':
        raise ValueError(
            f'the simulation is the aloha2 robot with realsense_4_55 cameras; robot:='
            f'{args["robot"]} cameras:={cameras} describe a real robot: add use_sim:=false'
        )
    if args['image_transport'] != 'raw':
        raise ValueError(
            'the simulation publishes raw images: image_transport:=compressed needs a real '
            'robot (use_sim:=false) or an image_transport republisher'
        )


def _profile_parameters(profile: RobotProfile, args: dict[str, str]) -> dict[str, dict[str, Any]]:
    """What the robot profile, the camera set and the transport give each node."""
    cameras = camera_topics(args['cameras'] or profile.cameras)
    executor = profile.executor_parameters()
    if args['on_exit']:
        executor['on_exit'] = args['on_exit']
    seen = {'camera_topics': cameras, 'image_transport': args['image_transport']}
    return {
        'policy_node': {**seen, 'gripper_finger_range': executor['gripper_finger_range']},
        'chunk_executor': executor,
        'graph_recorder': seen,
        'teleop': seen,
    }
