"""ROS-free runtime cores of the nodes: observation sync, time-indexed chunk queue, safety."""
