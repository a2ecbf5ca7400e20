"""The OpenVLA-OFT+ model, ROS-free: config + presets, network, pre/post-processing, checkpoints.

    from oft_policy_node.model import get_preset, OftPolicy
    policy = OftPolicy.from_pretrained('ckpt/', device='cpu')
    chunk = policy.predict_action_chunk(images, proprio, 'put green pepper into pot')  # (K, D)

Submodules: config (OftConfig, presets), processing (images), normalization (NormStats),
tokenizer, vision / heads / network (the modules), lora (what trains), checkpoint (files),
openvla_weights (base OpenVLA checkpoint loader), policy (OftPolicy), testing (tiny checkpoints).
"""

from oft_policy_node.model.checkpoint import CheckpointError
from oft_policy_node.model.config import PRESETS, OftConfig, get_preset
from oft_policy_node.model.normalization import NormStats
from oft_policy_node.model.policy import OftPolicy

__all__ = ['PRESETS', 'CheckpointError', 'NormStats', 'OftConfig', 'OftPolicy', 'get_preset']
