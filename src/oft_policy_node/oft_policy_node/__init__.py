"""OpenVLA-OFT+ model runtime, policy_node and chunk_executor."""
