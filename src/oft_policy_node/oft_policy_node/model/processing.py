"""Image pre-processing shared by training and inference (one implementation, so they agree).

Pipeline per observation (N cameras, model size S, crop area fraction c = 0.9):

* inference: uint8 (H, W, 3) per camera -> float [0, 1] (N, 3, H, W) -> resize to S x S ->
  centre crop of area c -> resize back to S x S (`inference_images`);
* training: the same resize, then a random crop of area c (square in the resized frame, the
  paper's RandomResizedCrop(scale=0.9, ratio=1)) and colour jitter, with ONE random draw shared
  by all N cameras of the sample so the views stay consistent (`augment_images`);
* a config with image_pipeline='openvla_oft' (checkpoints imported from the authors' code)
  prepares frames their way instead (`observation_pixels`, `camera_pixels`);
* per-encoder pixel normalisation (`normalize_pixels`, DINOv2's ImageNet mean/std, SigLIP's
  0.5/0.5) happens inside the network, so every caller hands it [0, 1] images.

The centre crop at inference matches the expected crop of training: without it, the objects
would look about 5 % smaller than anything the policy saw during training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from oft_policy_node.model.config import OftConfig

# Per-encoder pixel statistics (timm's DINOv2 and SigLIP configs).
DINO_MEAN, DINO_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ColorJitter:
    """Ranges of the training colour jitter (OpenVLA-OFT's values)."""

    brightness: float = 0.2  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05  # fraction of a full hue turn, drawn from [-h, h]


def check_camera_images(
    images: Mapping[str, np.ndarray], camera_names: Sequence[str]
) -> list[np.ndarray]:
    """The frames of `camera_names`, in that order, each a (H, W, 3) uint8 array.

    Raises ValueError naming the camera on a missing view, a wrong dtype or shape.
    """
    if not isinstance(images, Mapping):
        raise ValueError(f'images must be a dict {{camera: HxWx3 uint8}}, got {type(images)}')
    missing = [c for c in camera_names if c not in images]
    if missing:
        raise ValueError(
            f'missing camera image(s) {missing}; expected {list(camera_names)}, '
            f'got {sorted(images)}'
        )
    for cam in camera_names:
        img = images[cam]
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError(
                f'image {cam!r} must be a uint8 numpy array, got '
                f'{type(img).__name__} {getattr(img, "dtype", "")}'
            )
        if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
            raise ValueError(f'image {cam!r} must be HxWx3 RGB, got shape {img.shape}')
    return [images[cam] for cam in camera_names]


def stack_camera_images(
    images: Mapping[str, np.ndarray], camera_names: Sequence[str]
) -> torch.Tensor:
    """{camera: (H, W, 3) uint8 RGB} -> (N, 3, H, W) float32 in [0, 1], in `camera_names` order
    (`check_camera_images`' errors)."""
    tensors = []
    for img in check_camera_images(images, camera_names):
        # Frames decoded from ROS messages are read-only views; torch needs writable memory.
        array = np.ascontiguousarray(img) if img.flags.writeable else img.copy()
        tensors.append(torch.from_numpy(array).permute(2, 0, 1))
    sizes = {tuple(t.shape) for t in tensors}
    if len(sizes) > 1:  # resize each to a common size first so they can be stacked
        return torch.cat([resize(t[None].float() / 255.0, tensors[0].shape[1:]) for t in tensors])
    return torch.stack(tensors).float() / 255.0


def resize(images: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """(N, 3, H, W) float -> (N, 3, h, w) with bilinear, anti-aliased interpolation."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == hw:
        return images
    return F.interpolate(images, size=hw, mode='bilinear', antialias=True, align_corners=False)


def crop_side(size: int, crop_scale: float) -> int:
    """Side of the square crop that keeps `crop_scale` of a size x size image's area."""
    return max(1, round(size * math.sqrt(crop_scale)))


def crop_resize(images: torch.Tensor, top: int, left: int, side: int, size: int) -> torch.Tensor:
    """Crop the square [top:top+side, left:left+side] of (N, 3, S, S) and resize to size."""
    return resize(images[..., top : top + side, left : left + side], size)


def inference_images(images: torch.Tensor, size: int, crop_scale: float) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, size, size): resize, centre crop, resize back."""
    images = resize(images, size)
    side = crop_side(size, crop_scale)
    offset = (size - side) // 2
    return crop_resize(images, offset, offset, side, size)


def camera_pixels(images: Mapping[str, np.ndarray], cfg: OftConfig) -> torch.Tensor:
    """{camera: (H, W, 3) uint8} -> (N, 3, H', W') in [0, 1] before any crop: the frames as
    they are, or at the model size the authors' way for their pipeline (training crops and
    jitters these, `augment_images`)."""
    if cfg.image_pipeline == 'openvla_oft':
        return _authors_frames(images, cfg, crop_scale=1.0)
    return stack_camera_images(images, cfg.camera_names)


def observation_pixels(images: Mapping[str, np.ndarray], cfg: OftConfig) -> torch.Tensor:
    """{camera: (H, W, 3) uint8} -> (N, 3, S, S) in [0, 1], the inference view by the config's
    image pipeline: this stack's (`inference_images`) or the authors' (openvla_oft_images.py)."""
    if cfg.image_pipeline == 'openvla_oft':
        return _authors_frames(images, cfg, cfg.crop_scale)
    return inference_images(camera_pixels(images, cfg), cfg.image_size, cfg.crop_scale)


def _authors_frames(
    images: Mapping[str, np.ndarray], cfg: OftConfig, crop_scale: float
) -> torch.Tensor:
    from oft_policy_node.model.openvla_oft_images import prepare_frame

    frames = [
        prepare_frame(img, cfg.image_size, crop_scale)
        for img in check_camera_images(images, cfg.camera_names)
    ]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def augment_images(
    images: torch.Tensor,
    size: int,
    crop_scale: float,
    generator: torch.Generator | None = None,
    jitter: ColorJitter = ColorJitter(),
) -> torch.Tensor:
    """Training view of ONE sample: (N, 3, H, W) in [0, 1] -> (N, 3, size, size) in [0, 1].

    Random crop of area `crop_scale` + colour jitter; one draw for all N cameras.
    """
    images = resize(images, size)
    side = crop_side(size, crop_scale)
    top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=generator))
    images = crop_resize(images, top, left, side, size)
    u = torch.rand(4, generator=generator) * 2.0 - 1.0  # four draws in [-1, 1]
    return color_jitter(
        images,
        brightness=1.0 + jitter.brightness * float(u[0]),
        contrast=1.0 + jitter.contrast * float(u[1]),
        saturation=1.0 + jitter.saturation * float(u[2]),
        hue=jitter.hue * float(u[3]),
    )


def color_jitter(
    images: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float
) -> torch.Tensor:
    """Apply given jitter factors to (..., 3, H, W) in [0, 1]; factors of 1 (hue 0) = identity.

    Hue is rotated in YIQ space (a rotation of the chroma plane), which needs no HSV round trip.
    """
    x = (images * brightness).clamp(0, 1)
    gray = _luma(x)  # (..., 1, H, W)
    x = (
        (x - gray.mean(dim=(-3, -2, -1), keepdim=True)) * contrast
        + gray.mean(dim=(-3, -2, -1), keepdim=True)
    ).clamp(0, 1)
    gray = _luma(x)
    x = ((x - gray) * saturation + gray).clamp(0, 1)
    if hue:
        yiq = torch.einsum('ij,...jhw->...ihw', _RGB2YIQ.to(x), x)
        c, s = math.cos(2 * math.pi * hue), math.sin(2 * math.pi * hue)
        i, q = yiq[..., 1, :, :], yiq[..., 2, :, :]
        yiq = torch.stack((yiq[..., 0, :, :], c * i - s * q, s * i + c * q), dim=-3)
        x = torch.einsum('ij,...jhw->...ihw', _YIQ2RGB.to(x), yiq).clamp(0, 1)
    return x


def normalize_pixels(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> (x - mean) / std per channel, same dtype/device."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - m) / s


def _luma(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :]


_RGB2YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]]
)
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)
