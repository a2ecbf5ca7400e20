"""OFT+ on the bimanual ALOHA: policy_node + chunk_executor (+ the MuJoCo simulation).

    ros2 launch aloha_bringup oft_bimanual.launch.py task:="put green pepper into pot" \
        checkpoint:=/path/to/ckpt use_sim:=false backend:=interbotix

The nodes, parameters and remappings come from config/graph.yaml and config/params.yaml via
aloha_bringup.graph, the same resolution the project's local runner (`run_graph`) uses.
`ros2 launch aloha_bringup oft_bimanual.launch.py --show-args` lists the arguments.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from aloha_bringup.graph import graph_arguments, resolve_graph
from launch import LaunchDescription


def _nodes(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph_arguments()}
    return [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            parameters=[spec.parameters],
            remappings=list(spec.remappings),
            output='screen',
            emulate_tty=True,
            # the executor's exit moves the arms before it ends: time before SIGTERM, SIGKILL
            sigterm_timeout=str(spec.stop_timeout),
            sigkill_timeout=str(spec.stop_timeout),
        )
        for spec in resolve_graph(values)
    ]


def generate_launch_description():
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                for a in graph_arguments()
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
