"""Pretrain the fused vision backbone (DINOv2 + SigLIP) to localise objects (from-scratch presets).

OpenVLA-OFT+ starts from DINOv2 and SigLIP pretrained on the internet; their patch features
already say where each object is, so a few dozen demos only have to teach the policy *which*
object the instruction names. The `small` presets start from random weights, and with a few
dozen demos the policy never learns to find the objects at all (evaluate's input-reliance probe:
the start chunk does not change when the cameras are swapped). This stands in for that
pretraining without internet weights: the backbone learns to regress every object's table
position from a camera image, on images the simulator renders for free. An attention-pooling head
(so positions must be written into the patch features) is thrown away afterwards; the
policy then trains from the backbone's weights (`train --init-vision`).

File format (`torch.save`): {'format', 'vision' (the shape settings that must match the policy's
preset), 'dino', 'siglip' (state dicts), 'objects', 'metrics'}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from oft_policy_node.model.config import OftConfig
from oft_policy_node.model.openvla_weights import resolve_key
from oft_policy_node.model.processing import augment_images, inference_images, stack_camera_images
from oft_policy_node.model.vision import FilmVisionBackbone

FORMAT = 'oft-vision-backbone-1'


@dataclass(frozen=True)
class LocalisationSet:
    """Camera images and the table positions (x, y) of the objects they show."""

    images: np.ndarray  # (M, H, W, 3) uint8
    positions: np.ndarray  # (M, T, 2) metres, world frame
    objects: tuple[str, ...]  # the T object names, in `positions` order

    def __post_init__(self) -> None:
        m = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise ValueError(
                f'images must be (M, H, W, 3) uint8, got {self.images.shape} {self.images.dtype}'
            )
        if self.positions.shape != (m, len(self.objects), 2):
            raise ValueError(
                f'positions has shape {self.positions.shape}; expected '
                f'({m}, {len(self.objects)}, 2) for objects {self.objects}'
            )
        if m < 2:
            raise ValueError(f'need at least 2 images (training and validation), got {m}')


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 6000
    batch_size: int = 64
    lr: float = 3e-4
    val_fraction: float = 0.1
    seed: int = 0


class LocalisationHead(nn.Module):
    """(B, P, Dv) patch features -> (B, T*2) standardised positions. One learned query per
    object attends over the patches; an MLP reads the pooled feature. Pooling forgets which
    patch a feature came from, so the backbone has to write each object's position into the
    patch features themselves: the form in which the policy's Llama, which also reads patches
    by attention, can find it. (A head that flattens the patches would know each patch's place
    and let the features leave it out.)"""

    def __init__(self, feature_dim: int, objects: int, hidden: int = 256) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(feature_dim)
        self.queries = nn.Parameter(torch.randn(objects, feature_dim) * feature_dim**-0.5)
        self.keys = nn.Linear(feature_dim, feature_dim)
        self.mlp = nn.Sequential(nn.Linear(feature_dim, hidden), nn.GELU(), nn.Linear(hidden, 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = self.norm(features)  # (B, P, Dv)
        scores = torch.einsum('td,bpd->btp', self.queries, self.keys(features))
        pooled = torch.einsum('btp,bpd->btd', scores.softmax(-1), features)  # (B, T, Dv)
        return self.mlp(pooled).flatten(1)  # (B, T*2)


def shape_settings(cfg: OftConfig) -> dict:
    """What a saved backbone must share with the preset it is loaded into."""
    return {
        'image_size': cfg.image_size,
        'patch_size': cfg.patch_size,
        'dino': dataclasses.asdict(cfg.dino),
        'siglip': dataclasses.asdict(cfg.siglip),
    }


def pretrain(
    cfg: OftConfig, data: LocalisationSet, settings: PretrainSettings
) -> tuple[FilmVisionBackbone, dict]:
    """Train a fresh backbone of preset `cfg` on `data`; returns it and held-out metrics:
    the mean position error per object (cm) and that of always guessing the mean position."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(data.images))
    n_val = max(1, round(settings.val_fraction * len(order)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    flat = data.positions.reshape(len(order), -1)
    mean = flat[train_idx].mean(0)
    std = flat[train_idx].std(0) + 1e-6
    targets = torch.from_numpy((flat - mean) / std).float()

    backbone = FilmVisionBackbone(cfg.replace(use_film=False))
    head = LocalisationHead(cfg.vision_dim, len(data.objects))
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, settings.lr, settings.steps, pct_start=0.05
    )
    generator = torch.Generator().manual_seed(settings.seed)
    backbone.train()
    head.train()
    bar = tqdm(range(settings.steps), desc='pretrain vision', unit='step')
    for _ in bar:
        batch = torch.from_numpy(rng.choice(train_idx, settings.batch_size))
        images = torch.stack(
            [
                augment_images(_frame(data.images[i]), cfg.image_size, cfg.crop_scale, generator)
                for i in batch.tolist()
            ]
        )  # (B, 1, 3, S, S)
        loss = F.smooth_l1_loss(head(backbone(images, None)), targets[batch], beta=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f'{loss.item():.3f}')
    metrics = evaluate(backbone, head, cfg, data, val_idx, mean, std)
    metrics['train_images'], metrics['val_images'] = len(train_idx), len(val_idx)
    return backbone, metrics


@torch.no_grad()
def evaluate(
    backbone: FilmVisionBackbone,
    head: LocalisationHead,
    cfg: OftConfig,
    data: LocalisationSet,
    idx: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
) -> dict:
    backbone.eval()
    head.eval()
    predicted = []
    for chunk in np.array_split(idx, max(1, len(idx) // 64)):
        images = torch.stack(
            [
                inference_images(_frame(data.images[i]), cfg.image_size, cfg.crop_scale)
                for i in chunk
            ]
        )
        predicted.append(head(backbone(images, None)).numpy() * std + mean)
    pred = np.concatenate(predicted).reshape(len(idx), -1, 2)
    true = data.positions[idx]
    error = np.linalg.norm(pred - true, axis=-1).mean(0) * 100  # (T,) cm
    guess = np.linalg.norm(mean.reshape(-1, 2) - true, axis=-1).mean(0) * 100
    return {
        'error_cm': {o: round(float(e), 2) for o, e in zip(data.objects, error, strict=True)},
        'mean_guess_error_cm': {
            o: round(float(e), 2) for o, e in zip(data.objects, guess, strict=True)
        },
        'predicted': pred.tolist(),
        'true': true.tolist(),
    }


def _frame(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]: one camera, converted as the policy's."""
    return stack_camera_images({'camera': image}, ('camera',))


def save_backbone(
    path: Path,
    backbone: FilmVisionBackbone,
    cfg: OftConfig,
    objects: tuple[str, ...],
    metrics: dict,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            'format': FORMAT,
            'vision': shape_settings(cfg),
            'dino': backbone.dino.state_dict(),
            'siglip': backbone.siglip.state_dict(),
            'objects': list(objects),
            'metrics': metrics,
        },
        path,
    )


def load_backbone(path: str | Path, backbone: FilmVisionBackbone, cfg: OftConfig) -> dict:
    """Copy a saved backbone's DINOv2 and SigLIP weights into `backbone` (FiLM maps untouched);
    returns the file's metrics. A missing, foreign or differently shaped file raises ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no pretrained vision backbone at {path}')
    try:
        saved = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # pickle/zip errors of a truncated or foreign file
        raise ValueError(f'{path} is not a readable vision backbone file: {exc}') from exc
    if not isinstance(saved, dict) or saved.get('format') != FORMAT:
        raise ValueError(f'{path} is not a vision backbone file (format {FORMAT!r})')
    if saved['vision'] != shape_settings(cfg):
        raise ValueError(
            f'{path} was pretrained for other vision shapes {saved["vision"]}; '
            f'preset {cfg.name!r} has {shape_settings(cfg)}'
        )
    for name in ('dino', 'siglip'):
        _load_encoder(getattr(backbone, name), saved[name], f'{path} ({name})')
    return saved['metrics']


def _load_encoder(encoder: nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Load plain weights into an encoder that may carry peft LoRA adapters (whose wrapped
    layers keep their weights under `.base_layer`); the adapters keep their own init."""
    own = encoder.state_dict()
    renamed = {}
    for key, tensor in weights.items():
        target = resolve_key(key, own)
        if target is None:
            raise ValueError(f'{where}: the policy has no weight {key!r}')
        renamed[target] = tensor
    missing, _ = encoder.load_state_dict(renamed, strict=False)
    missing = [k for k in missing if '.lora_' not in k]
    if missing:
        raise ValueError(f'{where}: the file lacks weights {missing[:5]}')
