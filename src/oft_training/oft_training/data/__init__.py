"""Recorded demos (rosbag2, ALOHA HDF5) -> episodes on the control grid -> training set."""
