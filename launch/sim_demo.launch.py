"""Workspace-level entry point: the whole OFT bimanual graph against the MuJoCo ALOHA.

    ros2 launch launch/sim_demo.launch.py task:="put red pepper into pot" record:=true

Includes aloha_bringup's oft_bimanual.launch.py with use_sim:=true (and the joint_positions
backend the simulation consumes); every other argument passes through unchanged. Without
`ros2 launch`, `make demo` (or `run_graph use_sim:=true ...`) starts the same graph.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

from launch import LaunchDescription


def generate_launch_description():
    bringup = Path(get_package_share_directory('aloha_bringup')) / 'launch'
    return LaunchDescription(
        [
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(bringup / 'oft_bimanual.launch.py')),
                launch_arguments={'use_sim': 'true', 'backend': 'joint_positions'}.items(),
            )
        ]
    )
