"""Min/max normalisation of actions and proprio to [-1, 1], saved with every checkpoint.

Min/max rather than quantiles because the actions are absolute joint angles: clipping the tails
at the 1st/99th percentile would make the policy unable to reach poses near the data's edges.
Values outside the training range are clipped to [-1, 1] on the way in and out, so the network
never sees or produces a pose outside what it was trained on.

A mask (checkpoints imported from the authors' code, whose dataset_statistics.json may carry
one) leaves dimensions un-normalised: their values pass through as they are, as the authors'
normalize_proprio and _unnormalize_actions do (moojink/openvla-oft experiments/robot/
openvla_utils.py, prismatic/extern/hf/modeling_prismatic.py); proprio is clipped to [-1, 1]
afterwards on every dimension, as there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATS_FILE = 'norm_stats.json'
_FIELDS = ('action_min', 'action_max', 'proprio_min', 'proprio_max')
_MASKS = ('action_mask', 'proprio_mask')


@dataclass(frozen=True)
class NormStats:
    """Per-dimension bounds: action_* (D,), proprio_* (P,), float32, robot units; masks (D,),
    (P,) bool, False = left un-normalised (None: every dimension normalised)."""

    action_min: np.ndarray
    action_max: np.ndarray
    proprio_min: np.ndarray
    proprio_max: np.ndarray
    action_mask: np.ndarray | None = None
    proprio_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.ndim != 1 or not np.all(np.isfinite(value)):
                raise ValueError(f'NormStats.{name} must be a finite 1-D array, got {value!r}')
            object.__setattr__(self, name, value)
        for name, like in zip(_MASKS, ('action_min', 'proprio_min'), strict=True):
            mask = getattr(self, name)
            if mask is None:
                continue
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != getattr(self, like).shape:
                raise ValueError(
                    f'NormStats.{name} must be a bool array of shape '
                    f'{getattr(self, like).shape}, got {mask!r}'
                )
            object.__setattr__(self, name, mask)
        for kind in ('action', 'proprio'):
            lo, hi = getattr(self, f'{kind}_min'), getattr(self, f'{kind}_max')
            if lo.shape != hi.shape:
                raise ValueError(
                    f'NormStats.{kind}_min {lo.shape} and {kind}_max {hi.shape} differ in shape'
                )
            if np.any(lo > hi):
                raise ValueError(
                    f'NormStats.{kind}_min > {kind}_max at dims {np.flatnonzero(lo > hi).tolist()}'
                )

    @classmethod
    def from_data(cls, actions: np.ndarray, proprio: np.ndarray) -> NormStats:
        """Stats of a data set: actions (N, D) and proprio (M, P), any float dtype."""
        actions, proprio = np.asarray(actions), np.asarray(proprio)
        if actions.ndim != 2 or proprio.ndim != 2 or len(actions) == 0 or len(proprio) == 0:
            raise ValueError(
                f'expected non-empty (N, D) actions and (M, P) proprio, got '
                f'{actions.shape} and {proprio.shape}'
            )
        return cls(actions.min(0), actions.max(0), proprio.min(0), proprio.max(0))

    @classmethod
    def from_limits(cls, lower: np.ndarray, upper: np.ndarray) -> NormStats:
        """Stats that span given bounds (D,) for both actions and proprio (e.g. joint limits)."""
        return cls(lower, upper, lower, upper)

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """(..., D) robot units -> [-1, 1], float32 (masked-out dims as they are)."""
        return _normalize(actions, self.action_min, self.action_max, self.action_mask, 'actions')

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """(..., D) in [-1, 1] (clipped first) -> robot units, float32 (masked-out dims as
        they are, unclipped)."""
        return _unnormalize(actions, self.action_min, self.action_max, self.action_mask, 'actions')

    def normalize_proprio(self, proprio: np.ndarray) -> np.ndarray:
        """(..., P) robot units -> [-1, 1], float32 (masked-out dims as they are, clipped)."""
        return _normalize(
            proprio, self.proprio_min, self.proprio_max, self.proprio_mask, 'proprio'
        )

    def to_dict(self) -> dict[str, list]:
        data = {name: getattr(self, name).tolist() for name in _FIELDS}
        data.update({m: getattr(self, m).tolist() for m in _MASKS if getattr(self, m) is not None})
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NormStats:
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise ValueError(f'normalisation statistics lack {missing}')
        masks = {m: np.asarray(data[m], dtype=bool) for m in _MASKS if m in data}
        return cls(*(np.asarray(data[name], dtype=np.float32) for name in _FIELDS), **masks)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / STATS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + '\n')
        return path

    @classmethod
    def load(cls, directory: str | Path) -> NormStats:
        path = Path(directory) / STATS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f'{path}: normalisation statistics missing; a checkpoint '
                f'directory needs {STATS_FILE} (written by save_pretrained)'
            )
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ValueError(f'{path}: {exc}') from exc


def _check_dim(values: np.ndarray, lo: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if values.shape[-1:] != lo.shape:
        raise ValueError(
            f'{what} has shape {values.shape}; the statistics expect last dim {lo.shape[0]}'
        )
    return values


def _normalize(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, mask: np.ndarray | None, what: str
) -> np.ndarray:
    values = _check_dim(values, lo, what)
    span = hi - lo
    # Constant dimensions (span 0) map to 0 rather than dividing by zero.
    scaled = np.where(span > 0, 2.0 * (values - lo) / np.where(span > 0, span, 1.0) - 1.0, 0.0)
    if mask is not None:
        scaled = np.where(mask, scaled, values)
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def _unnormalize(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, mask: np.ndarray | None, what: str
) -> np.ndarray:
    values = _check_dim(values, lo, what)
    out = (np.clip(values, -1.0, 1.0) + 1.0) * 0.5 * (hi - lo) + lo
    if mask is not None:
        out = np.where(mask, out, values)
    return out.astype(np.float32)
