"""Grounding co-training: while it learns the demos, the policy also says where the instructed
object is, on simulator views of thousands of layouts.

Why. Behaviour cloning from a few dozen demos sees a few dozen layouts: the opening move of each
is one (layout, instruction) example, far too few to learn "find the object the instruction
names, reach for it" from a from-scratch Llama; it learns one average opening move per
instruction instead (evaluate's probe: the start chunk does not change when the cameras are
swapped). OpenVLA's base VLM learnt to ground phrases in images from internet image-text data
before it saw a robot. This stands in for that: each training step adds a batch of
(views, instruction) pairs from a `GroundingSet`, and a linear head regresses the instructed
object's table position from the mean hidden state of the action slots, the very states the
action head decodes, so the target's position has to be there when the chunk is decoded.

The head is not part of the policy (policy_node never loads it); it lives in the trainer state,
so a resumed run continues exactly.

File format (`.npz`, uncompressed): `images_<camera>` (M, H, W, 3) uint8 per camera,
`proprio` (M, 14) float32 in robot units (grippers 0..1), `positions` (M, T, 2) float64 metres,
`objects` (T,) str, `instructions` (I,) str, `targets` (I,) int: the object each instruction
names. Every view pairs with every instruction.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from oft_policy_node import robot
from oft_policy_node.model.config import OftConfig
from oft_policy_node.model.normalization import NormStats
from oft_policy_node.model.policy import OftPolicy
from oft_training.training.batches import model_images

IMAGE_PREFIX = 'images_'
# Seeds grounding batches apart from the demo batches of the same step.
GROUNDING_STREAM = 0x6772


@dataclass(frozen=True)
class GroundingSet:
    """Rendered views (all cameras + proprio), object positions, and which object each
    instruction names."""

    images: dict[str, np.ndarray]  # camera -> (M, H, W, 3) uint8
    proprio: np.ndarray  # (M, 14) robot units
    positions: np.ndarray  # (M, T, 2) metres, world frame
    objects: tuple[str, ...]
    instructions: tuple[str, ...]
    targets: tuple[int, ...]  # index into objects, per instruction

    def __post_init__(self) -> None:
        m = len(self.proprio)
        for camera, images in self.images.items():
            if (
                images.dtype != np.uint8
                or images.ndim != 4
                or images.shape[0] != m
                or images.shape[3] != 3
            ):
                raise ValueError(
                    f'{camera} images must be ({m}, H, W, 3) uint8, got '
                    f'{images.shape} {images.dtype}'
                )
        if self.proprio.shape != (m, robot.ACTION_DIM) or not np.all(np.isfinite(self.proprio)):
            raise ValueError(
                f'proprio must be finite ({m}, {robot.ACTION_DIM}), got {self.proprio.shape}'
            )
        if self.positions.shape != (m, len(self.objects), 2):
            raise ValueError(
                f'positions has shape {self.positions.shape}; expected '
                f'({m}, {len(self.objects)}, 2) for objects {self.objects}'
            )
        if len(self.instructions) != len(self.targets) or not self.instructions:
            raise ValueError('need one target object per instruction, and at least one')
        if any(not 0 <= t < len(self.objects) for t in self.targets):
            raise ValueError(f'targets {self.targets} must index objects {self.objects}')
        if m < 2:
            raise ValueError(f'need at least 2 views (training and validation), got {m}')

    @property
    def views(self) -> int:
        return len(self.proprio)

    def target_xy(self, view: int, instruction: int) -> np.ndarray:
        return self.positions[view, self.targets[instruction]]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + '.tmp.npz')  # renamed into place: no half files
        np.savez(
            tmp,
            proprio=self.proprio,
            positions=self.positions,
            objects=np.array(self.objects),
            instructions=np.array(self.instructions),
            targets=np.array(self.targets),
            **{IMAGE_PREFIX + c: v for c, v in self.images.items()},
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> GroundingSet:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f'no grounding set at {path} (write one with '
                'python -m aloha_bringup.recipes.render_grounding)'
            )
        try:
            with np.load(path, allow_pickle=False) as npz:
                return cls(
                    {
                        k[len(IMAGE_PREFIX) :]: npz[k]
                        for k in npz.files
                        if k.startswith(IMAGE_PREFIX)
                    },
                    npz['proprio'],
                    npz['positions'],
                    tuple(npz['objects'].tolist()),
                    tuple(npz['instructions'].tolist()),
                    tuple(int(t) for t in npz['targets']),
                )
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f'{path} is not a readable grounding set: {exc}') from exc


class GroundingHead(nn.Module):
    """Mean action-slot state (B, K*D, H) -> instructed object's (x, y), standardised with the
    set's target mean and spread (kept as buffers, so they resume with the head).

    Batch normalisation, not layer normalisation, in front of the linear map: the slot states
    of a from-scratch Llama share a large common part and differ from sample to sample in a
    small one; a layer norm keeps that ratio, which leaves the linear map ill-conditioned (it
    did not fit even a dozen fixed samples), a batch norm standardises each feature across the
    batch."""

    def __init__(self, hidden: int, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(hidden, affine=False)
        self.linear = nn.Linear(hidden, 2)
        self.register_buffer('mean', torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer('std', torch.as_tensor(std, dtype=torch.float32))

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(slots.float().mean(1)))  # (B, 2) standardised

    def loss(self, slots: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """L1 in standardised units, and the mean error in cm."""
        pred = self(slots)
        standard = (targets.to(pred.device).float() - self.mean) / self.std
        error_cm = ((pred - standard) * self.std).norm(dim=1).mean().item() * 100.0
        return (pred - standard).abs().mean(), error_cm


def make_head(policy: OftPolicy, data: GroundingSet) -> GroundingHead:
    """A fresh head for the policy, standardised on the set's targets."""
    check_compatible(policy, data)
    targets = np.concatenate([data.positions[:, t] for t in data.targets])  # (M*I, 2)
    return GroundingHead(
        policy.config.llm.hidden_size, targets.mean(0), np.maximum(targets.std(0), 1e-3)
    )


def check_compatible(policy: OftPolicy, data: GroundingSet) -> None:
    missing = [c for c in policy.config.camera_names if c not in data.images]
    if missing:
        raise ValueError(
            f'the grounding set lacks cameras {missing} that preset {policy.config.name!r} uses'
        )
    unknown = [
        i for i in data.instructions if policy.instructions and i not in policy.instructions
    ]
    if unknown:
        raise ValueError(
            f"grounding instructions {unknown} are not among the training set's "
            f'{policy.instructions}'
        )


def split_views(data: GroundingSet, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) view indices: the last val_fraction of the views are held out."""
    n_val = max(1, round(data.views * val_fraction))
    return np.arange(data.views - n_val), np.arange(data.views - n_val, data.views)


class GroundingBatches:
    """The grounding micro-batches of a step: a pure function of (seed, step), like the demo
    batches (exact resume, same pixels whatever the number of processes)."""

    def __init__(
        self,
        data: GroundingSet,
        views: np.ndarray,
        config: OftConfig,
        stats: NormStats,
        global_batch: int,
        seed: int,
    ) -> None:
        self.data, self.views, self.config, self.stats = data, views, config, stats
        self.global_batch, self.seed = global_batch, seed

    def step_batch(self, step: int, rank: int = 0, world_size: int = 1) -> list[tuple]:
        """This rank's share of the step's (view, instruction, augmentation seed) keys."""
        rng = np.random.default_rng([self.seed, GROUNDING_STREAM, step])
        views = self.views[rng.integers(0, len(self.views), self.global_batch)]
        instructions = rng.integers(0, len(self.data.instructions), self.global_batch)
        seeds = rng.integers(0, 2**31, self.global_batch)
        share = self.global_batch // world_size
        mine = slice(rank * share, (rank + 1) * share)
        return list(zip(views[mine], instructions[mine], seeds[mine], strict=True))

    def batch(self, keys: list[tuple]) -> dict:
        """Keys (view, instruction, seed or None for the evaluation view) -> model input."""
        cfg, data = self.config, self.data
        images, proprio, targets = [], [], []
        for view, instruction, seed in keys:
            images.append(
                model_images({c: data.images[c][view] for c in cfg.camera_names}, cfg, seed)
            )
            proprio.append(torch.from_numpy(self.stats.normalize_proprio(data.proprio[view])))
            targets.append(torch.from_numpy(data.target_xy(view, instruction)))
        return {
            'images': torch.stack(images),
            'proprio': torch.stack(proprio),
            'instructions': [data.instructions[i] for _, i, _ in keys],
            'targets': torch.stack(targets),
        }


class CoTraining(nn.Module):
    """The policy's L1 on demo samples plus `weight` x the grounding L1, in one forward pass
    over both batches (one module, so DDP sees every parameter used)."""

    def __init__(self, policy: OftPolicy, head: GroundingHead, weight: float) -> None:
        super().__init__()
        self.policy, self.head, self.weight = policy, head, weight

    def forward(self, batch: dict, grounding: dict) -> tuple[torch.Tensor, dict[str, float]]:
        b = len(batch['instructions'])
        slots = self.policy.encode(
            {
                'images': torch.cat([batch['images'], grounding['images']]),
                'proprio': torch.cat([batch['proprio'], grounding['proprio']]),
                'instructions': list(batch['instructions']) + list(grounding['instructions']),
            }
        )
        loss, metrics = self.policy.action_loss(slots[:b], batch['actions'])
        g_loss, error_cm = self.head.loss(slots[b:], grounding['targets'])
        return loss + self.weight * g_loss, {
            **metrics,
            'grounding_l1': g_loss.item(),
            'grounding_cm': error_cm,
        }


@torch.no_grad()
def validation_error_cm(
    policy: OftPolicy,
    head: GroundingHead,
    batches: GroundingBatches,
    views: np.ndarray,
    count: int,
) -> float:
    """Mean error (cm) on up to `count` held-out views, every instruction, evaluation view."""
    picked = views[np.linspace(0, len(views) - 1, min(count, len(views))).round().astype(int)]
    keys = [(v, i, None) for v in picked for i in range(len(batches.data.instructions))]
    total = 0.0
    for start in range(0, len(keys), 16):
        batch = batches.batch(keys[start : start + 16])
        total += head.loss(policy.encode(batch), batch['targets'])[1] * len(batch['targets'])
    return total / len(keys)
