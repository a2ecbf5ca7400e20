"""Teleoperation of the ALOHA followers from the leader arms, one bag per demonstration.

    ros2 launch aloha_bringup teleop.launch.py task:="put green pepper into pot"
    ros2 service call /teleop/start_episode oft_msgs/srv/SetInstruction "{instruction: '...'}"
    ros2 service call /teleop/end_episode std_srvs/srv/Trigger

The nodes come from config/teleop_graph.yaml and config/params.yaml via aloha_bringup.graph
(the executor brings the followers up, moves them to the start pose and plays the leaders'
poses; the teleop node records). `--show-args` lists the arguments.
"""

from aloha_bringup.graph import TELEOP_GRAPH
from aloha_bringup.launching import graph_launch_description


def generate_launch_description():
    return graph_launch_description(TELEOP_GRAPH)
