"""The launch description of a graph file (graph.yaml, teleop_graph.yaml), shared by the launch
files: every argument declared with its default and description, the nodes resolved by
aloha_bringup.graph once the arguments are known. Imported only under `ros2 launch`."""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from aloha_bringup.graph import graph_arguments, resolve_graph
from launch import LaunchDescription


def graph_launch_description(name: str) -> LaunchDescription:
    arguments = graph_arguments(name=name)

    def nodes(context: object, *args: object, **kwargs: object) -> list[Node]:
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in arguments}
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
            for spec in resolve_graph(values, name=name)
        ]

    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                for a in arguments
            ),
            OpaqueFunction(function=nodes),
        ]
    )
