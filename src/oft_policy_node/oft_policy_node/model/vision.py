"""The FiLM-conditioned fused vision backbone: DINOv2 (with registers) + SigLIP from transformers.

Each camera image goes through both ViTs; the patch tokens of the second-to-last block of each
(prefix tokens dropped, no final norm, as OpenVLA's timm `get_intermediate_layers`) are
concatenated per patch: (P, Dd + Ds). The blocks are the library's own modules; only the block
*order* is re-stated here so FiLM can sit between the attention residual and the MLP:

    x = x + attn(norm1(x));  x = x * (1 + gamma) + beta;  x = x + mlp(norm2(x))

gamma, beta (one pair per block, broadcast over every patch) come from per-block linear maps of
the mean text embedding of the prompt (see `OftNetwork.condition`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from oft_policy_node.model.base_init import BaseInit, base_init
from oft_policy_node.model.config import OftConfig
from oft_policy_node.model.processing import (
    DINO_MEAN,
    DINO_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    normalize_pixels,
)


@dataclass
class FilmParams:
    """Per-block modulation: *_gamma / *_beta of shape (B, num_layers, hidden) per encoder."""

    dino_gamma: torch.Tensor
    dino_beta: torch.Tensor
    siglip_gamma: torch.Tensor
    siglip_beta: torch.Tensor


class FilmMaps(nn.Module):
    """One (scale, shift) linear pair per block: language (B, C) -> gamma, beta (B, L, H)."""

    def __init__(self, cond_dim: int, hidden: int, num_layers: int) -> None:
        super().__init__()
        self.scale = nn.ModuleList(nn.Linear(cond_dim, hidden) for _ in range(num_layers))
        self.shift = nn.ModuleList(nn.Linear(cond_dim, hidden) for _ in range(num_layers))
        # Zero-initialised, so FiLM starts as the identity and pretrained encoders see their
        # own features until training learns the modulation (as adaLN-Zero).
        for linear in (*self.scale, *self.shift):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, lang: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gamma = torch.stack([m(lang) for m in self.scale], dim=1)  # (B, L, H)
        beta = torch.stack([m(lang) for m in self.shift], dim=1)  # (B, L, H)
        return gamma, beta


def _film(x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None) -> torch.Tensor:
    if gamma is None:
        return x
    return x * (1 + gamma[:, None, :]) + beta[:, None, :]  # broadcast over tokens


def dino_block(
    layer: nn.Module, x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None
) -> torch.Tensor:
    """`Dinov2WithRegistersLayer.forward` with FiLM after the attention residual."""
    h, _ = layer.attention(layer.norm1(x))
    x = layer.drop_path(layer.layer_scale1(h)) + x
    x = _film(x, gamma, beta)
    return layer.drop_path(layer.layer_scale2(layer.mlp(layer.norm2(x)))) + x


def siglip_block(
    layer: nn.Module, x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None
) -> torch.Tensor:
    """`SiglipEncoderLayer.forward` with FiLM after the attention residual."""
    h, _ = layer.self_attn(hidden_states=layer.layer_norm1(x), attention_mask=None)
    x = _film(x + h, gamma, beta)
    return x + layer.mlp(layer.layer_norm2(x))


def build_dino(cfg: OftConfig) -> Dinov2WithRegistersModel:
    c = cfg.dino
    return Dinov2WithRegistersModel(
        Dinov2WithRegistersConfig(
            hidden_size=c.hidden_size,
            num_hidden_layers=c.num_layers,
            num_attention_heads=c.num_heads,
            mlp_ratio=c.intermediate_size // c.hidden_size,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            num_register_tokens=c.num_registers,
            layer_norm_eps=1e-6,
            layerscale_value=1e-5,
            attn_implementation='sdpa',
        )
    )


def build_siglip(cfg: OftConfig) -> SiglipVisionModel:
    c = cfg.siglip
    return SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=c.hidden_size,
            num_hidden_layers=c.num_layers,
            num_attention_heads=c.num_heads,
            intermediate_size=c.intermediate_size,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            layer_norm_eps=1e-6,
            vision_use_head=False,
            attn_implementation='sdpa',
        )
    )


class FilmVisionBackbone(nn.Module):
    """(B, N, 3, S, S) images in [0, 1] -> (B, N * P, Dd + Ds) fused patch features."""

    def __init__(self, cfg: OftConfig, init_base: BaseInit = True) -> None:
        super().__init__()
        with base_init(init_base):  # the encoders' weights come from a checkpoint (base_init)
            self.dino = build_dino(cfg)
            self.siglip = build_siglip(cfg)
        self.num_prefix_tokens = 1 + cfg.dino.num_registers  # CLS + registers, dropped
        self.gradient_checkpointing = False  # training: recompute each block in backward
        cond = cfg.llm.hidden_size
        # Maps for every block (as the paper), though the last block is never run: features
        # come from the second-to-last. Those last maps are frozen by the trainable-parameter
        # rules (see lora.py) so they do not sit in the optimiser without gradients.
        # Without FiLM (the ablation) there are no maps at all: unused parameters would sit in
        # the optimiser and break DDP's gradient reduction.
        self.dino_film = (
            FilmMaps(cond, cfg.dino.hidden_size, cfg.dino.num_layers) if cfg.use_film else None
        )
        self.siglip_film = (
            FilmMaps(cond, cfg.siglip.hidden_size, cfg.siglip.num_layers) if cfg.use_film else None
        )

    def film_params(self, lang: torch.Tensor) -> FilmParams:
        """Mean prompt text embedding (B, C) -> the gammas/betas of every block."""
        return FilmParams(*self.dino_film(lang), *self.siglip_film(lang))

    def encode_dino(self, x: torch.Tensor, film: FilmParams | None) -> torch.Tensor:
        """(M, 3, S, S) in [0, 1] -> (M, P, Dd) second-to-last block patch tokens."""
        h = self.dino.embeddings(normalize_pixels(x, DINO_MEAN, DINO_STD))
        for i, layer in enumerate(self.dino.encoder.layer[:-1]):
            g, b = (None, None) if film is None else (film.dino_gamma[:, i], film.dino_beta[:, i])
            h = self._block(dino_block, layer, h, g, b)
        return h[:, self.num_prefix_tokens :]

    def encode_siglip(self, x: torch.Tensor, film: FilmParams | None) -> torch.Tensor:
        """(M, 3, S, S) in [0, 1] -> (M, P, Ds) second-to-last block patch tokens."""
        vm = self.siglip  # transformers 5 flattened SiglipVisionModel (no .vision_model)
        h = vm.embeddings(normalize_pixels(x, SIGLIP_MEAN, SIGLIP_STD))
        for i, layer in enumerate(vm.encoder.layers[:-1]):
            g, b = (
                (None, None) if film is None else (film.siglip_gamma[:, i], film.siglip_beta[:, i])
            )
            h = self._block(siglip_block, layer, h, g, b)
        return h

    def _block(self, block: Callable[..., torch.Tensor], *args: object) -> torch.Tensor:
        """One ViT block, its activations recomputed in backward when checkpointing (the
        non-reentrant form: FiLM's gammas reach the block as inputs that need gradients)."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, images: torch.Tensor, film: FilmParams | None) -> torch.Tensor:
        b, n = images.shape[:2]
        x = images.flatten(0, 1)  # (B*N, 3, S, S)
        if film is not None:  # every camera of a sample shares its sample's modulation
            film = FilmParams(
                *(
                    t.repeat_interleave(n, dim=0)
                    for t in (film.dino_gamma, film.dino_beta, film.siglip_gamma, film.siglip_beta)
                )
            )
        fused = torch.cat([self.encode_dino(x, film), self.encode_siglip(x, film)], dim=-1)
        return fused.reshape(b, -1, fused.shape[-1])  # (B, N*P, Dd+Ds)
