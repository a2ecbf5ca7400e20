"""Record one demo episode to rosbag2 (MCAP) with `ros2 bag record`, for a ROS 2 install.

    ros2 launch aloha_bringup record_demos.launch.py episode:=put_green_pepper_017
    ros2 launch aloha_bringup record_demos.launch.py episode:=ep_001 output_dir:=demos \
        use_sim_time:=true

Records the demo topic set of aloha_bringup.recording.DEMO_TOPICS (3 cameras, both
joint_states, both joint_positions command topics, /task/instruction, /task/episode,
/task/success); Ctrl-C ends the recording and `ros2 bag` closes the bag. Without a ROS 2
install, `record_bag <folder>` records the same topics.
"""

from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution

from aloha_bringup.recording import DEMO_TOPICS
from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    episode = LaunchConfiguration('episode')
    output_dir = LaunchConfiguration('output_dir')
    use_sim_time = LaunchConfiguration('use_sim_time')
    record = [
        'ros2',
        'bag',
        'record',
        '--storage',
        'mcap',
        '--output',
        PathJoinSubstitution([output_dir, episode]),
        *DEMO_TOPICS,
    ]
    return LaunchDescription(
        [
            DeclareLaunchArgument('episode', description='bag name, e.g. put_green_pepper_017'),
            DeclareLaunchArgument(
                'output_dir', default_value='demos', description='folder the bag is created in'
            ),
            DeclareLaunchArgument(
                'use_sim_time',
                default_value='false',
                description='stamp with /clock (recording the simulation)',
            ),
            ExecuteProcess(
                cmd=[*record, '--use-sim-time'],
                output='screen',
                sigterm_timeout='10',
                condition=IfCondition(use_sim_time),
            ),
            ExecuteProcess(
                cmd=record,
                output='screen',
                sigterm_timeout='10',
                condition=UnlessCondition(use_sim_time),
            ),
        ]
    )
