"""ROS-free MuJoCo simulation of the bimanual ALOHA: scenes, physics + cameras, scripted demos.

Nothing here imports rclpy; the `aloha_sim` node and the demo tools are thin wrappers.
"""
