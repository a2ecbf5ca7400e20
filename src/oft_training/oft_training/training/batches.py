"""Which samples each step trains on, and how one sample becomes model input.

Exact resume and "DDP == one process" both follow from one rule: everything random about a
sample is a pure function of (seed, step, position in the global batch). The order is a seeded
permutation per epoch over the global stream of samples; the augmentation of a sample draws from
a generator seeded with (seed, step, position). No iterator state has to be saved, any rank can
compute its share of any step, and the same global batch gets the same pixels whatever the
number of processes, micro-batches or DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from oft_policy_node.model.config import OftConfig
from oft_policy_node.model.normalization import NormStats
from oft_policy_node.model.processing import augment_images, camera_pixels, observation_pixels
from oft_training.data.training_set import TrainingSet


def split_episodes(
    names: list[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Seeded split by episode (samples of one episode never straddle train and val).

    At least one validation episode when val_fraction > 0 and there are >= 2 episodes."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f'val_fraction={val_fraction} must be in [0, 1)')
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = round(len(names) * val_fraction)
    if val_fraction > 0 and len(names) >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(names) - 1)
    val = sorted(names[i] for i in order[:n_val])
    return [n for n in names if n not in val], val


def sample_seed(seed: int, step: int, position: int) -> int:
    """Augmentation seed of the sample at `position` of the global batch of `step`."""
    return int(np.random.SeedSequence([seed, step, position]).generate_state(1)[0])


@dataclass(frozen=True)
class StepBatches(Sampler):
    """Micro-batches of (sample index, augmentation seed) for this rank, from `start_step` on.

    Global batch of step s = positions s*G .. s*G+G-1 of the endless sample stream (one seeded
    permutation per epoch). Rank r of W takes positions [r*G/W, (r+1)*G/W) of it, split into
    `accumulation` consecutive micro-batches.
    """

    num_samples: int
    global_batch: int
    seed: int
    start_step: int
    num_steps: int
    rank: int = 0
    world_size: int = 1
    accumulation: int = 1
    # Sample indices one epoch visits (repeats allowed: see `start_weighted_stream`); None: each
    # of the num_samples once.
    stream: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError('the training split has no samples')
        stream = np.arange(self.num_samples) if self.stream is None else np.asarray(self.stream)
        if len(stream) < 1 or stream.min() < 0 or stream.max() >= self.num_samples:
            raise ValueError(f'sample stream must hold indices in [0, {self.num_samples})')
        object.__setattr__(self, '_stream', stream)
        per_rank, rest = divmod(self.global_batch, self.world_size * self.accumulation)
        if rest or per_rank < 1:
            raise ValueError(
                f'batch size {self.global_batch} must be a multiple of processes '
                f'({self.world_size}) x gradient accumulation ({self.accumulation})'
            )
        object.__setattr__(self, '_permutations', {})  # epoch -> permutation (last two kept)

    @property
    def micro_batch(self) -> int:
        return self.global_batch // (self.world_size * self.accumulation)

    def _permutation(self, epoch: int) -> np.ndarray:
        cache = self._permutations
        if epoch not in cache:
            cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self._stream))
            for old in [e for e in cache if e < epoch - 1]:
                del cache[old]
        return cache[epoch]

    def step_keys(self, step: int) -> list[tuple[int, int]]:
        """This rank's (sample index, augmentation seed) of `step`, in micro-batch order."""
        share = self.global_batch // self.world_size
        keys = []
        for position in range(self.rank * share, (self.rank + 1) * share):
            stream = step * self.global_batch + position
            epoch, offset = divmod(stream, len(self._stream))
            keys.append(
                (
                    int(self._stream[self._permutation(epoch)[offset]]),
                    sample_seed(self.seed, step, position),
                )
            )
        return keys

    def __iter__(self):
        for step in range(self.start_step, self.num_steps):
            keys = self.step_keys(step)
            for i in range(self.accumulation):
                yield keys[i * self.micro_batch : (i + 1) * self.micro_batch]

    def __len__(self) -> int:
        return (self.num_steps - self.start_step) * self.accumulation


def start_weighted_stream(ticks: np.ndarray, start_ticks: int, repeats: int) -> np.ndarray:
    """Sample indices of one epoch where samples starting before tick `start_ticks` of their
    episode appear `repeats` times. Why: after the first second or two the arm's own pose says
    where it is heading, so most samples can be fitted from proprio alone and the few where only
    the cameras tell the layouts apart (which object, where) carry little of the loss: the
    policy learns one average opening move (the copycat problem of behaviour cloning)."""
    if repeats < 1 or start_ticks < 0:
        raise ValueError(f'repeats={repeats} must be >= 1 and start_ticks={start_ticks} >= 0')
    return np.repeat(np.arange(len(ticks)), np.where(np.asarray(ticks) < start_ticks, repeats, 1))


def model_images(
    images: Mapping[str, np.ndarray], config: OftConfig, seed: int | None
) -> torch.Tensor:
    """{camera: (H, W, 3) uint8} -> (N, 3, S, S) model input: the inference centre crop for
    seed None (evaluation), else the model package's shared-draw augmentation from `seed`."""
    if seed is None:
        return observation_pixels(images, config)
    generator = torch.Generator().manual_seed(int(seed))
    pixels = camera_pixels(images, config)  # (N, 3, H, W)
    return augment_images(pixels, config.image_size, config.crop_scale, generator)


class SampleDataset(Dataset):
    """Training-set samples as model input: key (index, augmentation seed or None) -> dict.

    seed None = evaluation view (the inference centre crop); otherwise the shared-draw training
    augmentation of the model package, seeded per sample.
    """

    def __init__(
        self, data: TrainingSet, config: OftConfig, stats: NormStats, prefix_steps: int = 0
    ) -> None:
        self.data, self.config, self.stats = data, config, stats
        self.prefix_steps = prefix_steps  # training samples are given 0..this many first rows

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int | None]) -> dict:
        index, seed = key
        sample = self.data.sample(index)
        item = {
            'images': model_images(sample['images'], self.config, seed),  # (N, 3, S, S)
            'proprio': torch.from_numpy(self.stats.normalize_proprio(sample['proprio'])),
            'actions': torch.from_numpy(self.stats.normalize_actions(sample['actions'])),
            'instruction': sample['instruction'],
        }
        if self.prefix_steps:
            # d from the sample's own seed (a pure function of seed, step and position, as
            # the augmentation): uniform over 0..prefix_steps, so d = 0 stays in the mix.
            # Evaluation views (seed None) are given nothing: validation stays comparable.
            d = (
                0
                if seed is None
                else int(np.random.default_rng(seed).integers(0, self.prefix_steps + 1))
            )
            item['prefix_steps'] = d
        return item


def collate(samples: list[dict]) -> dict:
    """A list of samples -> the model's training batch (see oft_policy_node.model.policy)."""
    batch = {
        'images': torch.stack([s['images'] for s in samples]),  # (B, N, 3, S, S)
        'proprio': torch.stack([s['proprio'] for s in samples]),  # (B, P)
        'actions': torch.stack([s['actions'] for s in samples]),  # (B, K, D)
        'instructions': [s['instruction'] for s in samples],
    }
    if 'prefix_steps' in samples[0]:
        batch['prefix_steps'] = torch.tensor([s['prefix_steps'] for s in samples])  # (B,)
    return batch
