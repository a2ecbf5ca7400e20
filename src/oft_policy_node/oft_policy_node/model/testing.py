"""Helpers for tests across the project: a saved, random `tiny` checkpoint in seconds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from oft_policy_node import robot
from oft_policy_node.model.config import OftConfig, get_preset
from oft_policy_node.model.normalization import NormStats
from oft_policy_node.model.policy import OftPolicy

DEFAULT_INSTRUCTIONS = (
    'put green pepper into pot',
    'put red pepper into pot',
    'put yellow corn into pot',
)


def make_tiny_checkpoint(
    directory: str | Path,
    instructions: Sequence[str] = DEFAULT_INSTRUCTIONS,
    seed: int = 0,
    prefix_steps: int = 0,
) -> Path:
    """Save a random-weight `tiny` policy with stats spanning the robot's action limits
    (`prefix_steps` > 0: one that can be given an action prefix, as train --prefix-steps).

    Deterministic in `seed` and leaves the global torch RNG untouched. Returns the directory.
    """
    policy = random_policy('tiny', seed, instructions, prefix_steps)
    return policy.save_pretrained(directory)


def random_policy(
    preset: str,
    seed: int = 0,
    instructions: Sequence[str] = DEFAULT_INSTRUCTIONS,
    prefix_steps: int = 0,
) -> OftPolicy:
    """A random-weight policy of a preset, in eval mode, with stats from the robot's limits.

    Its FiLM maps are random too (`randomize_film`), so that, like a trained policy, the
    instruction modulates the vision features."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = OftPolicy(
            get_preset(preset).replace(prefix_steps=prefix_steps),
            instructions=instructions,
            stats=NormStats.from_limits(*robot.action_limits()),
        )
        randomize_film(policy)
    return policy.eval()


def randomize_film(policy: OftPolicy, std: float = 0.05) -> None:
    """Random FiLM maps (draws from the global torch RNG): they start at zero for training."""
    vision = policy.network.vision
    if vision.dino_film is None:
        return
    with torch.no_grad():
        for param in (*vision.dino_film.parameters(), *vision.siglip_film.parameters()):
            param.normal_(0.0, std)


def random_observation(
    config: OftConfig,
    seed: int = 0,
    height: int = robot.IMAGE_HEIGHT,
    width: int = robot.IMAGE_WIDTH,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random camera images {camera: (H, W, 3) uint8} and a proprio (P,) inside the limits."""
    rng = np.random.default_rng(seed)
    images = {
        cam: rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for cam in config.camera_names
    }
    lower, upper = robot.action_limits()
    proprio = rng.uniform(lower, upper)[: config.proprio_dim].astype(np.float32)
    return images, proprio


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models run ~10x faster on one thread than on two shared, busy cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
