"""OFT+ on the bimanual ALOHA: policy_node + chunk_executor (+ the MuJoCo simulation).

    ros2 launch aloha_bringup oft_bimanual.launch.py task:="put green pepper into pot" \
        checkpoint:=/path/to/ckpt use_sim:=false backend:=interbotix

The nodes, parameters and remappings come from config/graph.yaml and config/params.yaml via
aloha_bringup.graph, the same resolution the project's local runner (`run_graph`) uses.
`ros2 launch aloha_bringup oft_bimanual.launch.py --show-args` lists the arguments.
"""

from aloha_bringup.graph import MISSION_GRAPH
from aloha_bringup.launching import graph_launch_description


def generate_launch_description():
    return graph_launch_description(MISSION_GRAPH)
