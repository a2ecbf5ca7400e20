"""Camera views of many seeded layouts, rendered without running an episode: the training data
of pretrain_vision and render_grounding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from aloha_sim.physics import START_JOINTS, AlohaSim
from oft_policy_node import robot

# Half the views keep the start pose (the frame where the policy must pick its target); the
# rest move each joint by up to this much (rad), as the arms do while reaching.
ARM_JITTER = np.array([0.6, 0.5, 0.5, 0.6, 0.6, 0.6])


@dataclass(frozen=True)
class LayoutViews:
    images: dict[str, np.ndarray]  # camera -> (M, H, W, 3) uint8
    proprio: np.ndarray  # (M, 14): per arm 6 joints (rad) + gripper opening (0..1)
    positions: np.ndarray  # (M, T, 2) metres: where each object starts
    objects: tuple[str, ...]


def proprio(sim: AlohaSim) -> np.ndarray:
    """The arms' joint positions as the policy's proprio (what convert makes of joint_states)."""
    rows = []
    for arm in robot.ARMS:
        position = sim.joint_state(arm).position  # 6 joints, gripper motor, finger, -finger
        rows.append([*position[:6], robot.finger_to_normalized(position[7])])
    return np.concatenate(rows).astype(np.float32)


def render_views(
    scene: str, count: int, first_seed: int, height: int, width: int, cameras: tuple[str, ...]
) -> LayoutViews:
    """`count` views of layouts first_seed, first_seed + 1, ...; odd ones with moved arms."""
    sim = AlohaSim(scene, height, width)
    rng = np.random.default_rng(first_seed)
    images = {c: np.empty((count, height, width, 3), np.uint8) for c in cameras}
    proprios, positions, objects = [], [], ()
    try:
        for k in tqdm(range(count), desc=f'rendering {scene}', unit='layout'):
            episode = sim.reset(first_seed + k)
            if k % 2:
                for arm in robot.ARMS:
                    sim.place_arm(
                        arm, START_JOINTS + rng.uniform(-1, 1, 6) * ARM_JITTER, rng.uniform()
                    )
            objects = tuple(episode.layout.positions)
            for camera in cameras:
                images[camera][k] = sim.render(camera)
            proprios.append(proprio(sim))
            positions.append([episode.layout.positions[o][:2] for o in objects])
    finally:
        sim.close()
    return LayoutViews(
        images, np.stack(proprios), np.asarray(positions, dtype=np.float64), objects
    )
