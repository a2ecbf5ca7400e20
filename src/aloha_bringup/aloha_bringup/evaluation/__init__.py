"""Closed-loop evaluation in simulation: eval_sim through the ROS graph, quick_eval without it,
their shared episodes and metrics, and the demo report."""
