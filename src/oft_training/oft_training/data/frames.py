"""Camera frames to the model's input size, once, at conversion time.

Uses the model package's own resize (the one inference applies to live frames), so a stored
frame is what inference would compute before its crop, up to uint8 rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from oft_policy_node.model.processing import resize


def to_model_size(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size[0], size[1], 3) uint8 RGB."""
    if tuple(frame.shape[:2]) == tuple(size):
        return frame
    image = torch.tensor(frame).permute(2, 0, 1)[None].float()  # (1, 3, H, W), a copy
    resized = resize(image / 255.0, size)[0]  # (3, h, w) in [0, 1]
    # +0.5 then truncation = rounding to the nearest level (values are >= 0).
    pixels = (resized * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 0).contiguous().numpy()
