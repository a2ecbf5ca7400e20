"""Small MLPs around the language model: vision projector, proprio projector, action head.

Attribute names follow OpenVLA / OpenVLA-OFT so their checkpoints map key for key.
"""

from __future__ import annotations

import torch
from torch import nn


class VisionProjector(nn.Module):
    """OpenVLA's fused projector: (.., F) -> (.., H) via F -> 4F -> H -> H with GELUs."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class ProprioProjector(nn.Module):
    """(B, P) normalised proprio -> (B, H), one language-model token."""

    def __init__(self, proprio_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ResidualBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class ActionHead(nn.Module):
    """OFT's MLP ResNet: per timestep the D slot states (B, K, D*H) -> (B, K, D) actions."""

    def __init__(self, action_dim: int, llm_dim: int, num_blocks: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(action_dim * llm_dim)
        self.fc1 = nn.Linear(action_dim * llm_dim, llm_dim)
        self.relu = nn.ReLU()
        self.blocks = nn.ModuleList(ResidualBlock(llm_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(llm_dim)
        self.fc2 = nn.Linear(llm_dim, action_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class ActionPrefixEmbedding(nn.Module):
    """What a given row's action slots receive on top of their own input: for the slot of
    joint j, the "given" embedding of j plus the normalised value times a learned direction of
    j (a per-joint linear projection of the value). Slots of rows not given are left as they
    are, so a policy given nothing computes exactly what it would without this module."""

    def __init__(self, action_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.given = nn.Parameter(torch.randn(action_dim, hidden_size) * 0.02)  # (D, H)
        self.value = nn.Parameter(torch.randn(action_dim, hidden_size) * 0.02)  # (D, H)

    def forward(
        self, slots: torch.Tensor, values: torch.Tensor, steps: torch.Tensor
    ) -> torch.Tensor:
        """slots (B, K, D, H), values (B, K, D) normalised, steps (B,) given rows ->
        (B, K, D, H)."""
        k = slots.shape[1]
        given = torch.arange(k, device=slots.device)[None] < steps[:, None]  # (B, K)
        added = self.given + values[..., None].to(slots.dtype) * self.value  # (B, K, D, H)
        return torch.where(given[..., None, None], slots + added, slots)
