"""The newest complete observation: 3 camera images and both arms' joint states whose stamps
agree within a tolerance and whose newest stamp is not older than a maximum age (ROS-free).

Sources arrive at their own rates and phases. Each keeps a short history; the set is anchored
on the source whose newest sample is oldest (nothing newer than it can be complete) and every
other source contributes its sample nearest to that anchor. Thread-safe: ROS callbacks add,
the inference thread reads. Stamps are integer nanoseconds, so the chunk can carry the
observation's stamp exactly (float seconds lose ~0.2 us at today's epoch).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oft_policy_node import robot


@dataclass(frozen=True)
class Observation:
    stamp: int  # ns, the newest stamp of the set (the chunk's time origin), exact
    images: dict[str, np.ndarray]  # camera -> (H, W, 3) uint8 RGB
    proprio: np.ndarray  # (14,) [left 6 joints, left gripper 0..1, right ..., right gripper]


class ObservationBuffer:
    def __init__(
        self,
        cameras: Sequence[str] = robot.CAMERAS,
        sync_tolerance: float = 0.05,
        max_age: float = 0.5,
        history: int = 8,
    ) -> None:
        if not (math.isfinite(sync_tolerance) and sync_tolerance >= 0.0):
            raise ValueError(f'sync_tolerance {sync_tolerance!r} must be a finite number >= 0 s')
        if not (math.isfinite(max_age) and max_age > 0.0):
            raise ValueError(f'max_age {max_age!r} must be a finite number > 0 s')
        self._tolerance_ns = round(sync_tolerance * 1e9)
        self._max_age_ns = round(max_age * 1e9)
        self._sources = [*(f'camera:{c}' for c in cameras), *(f'arm:{a}' for a in robot.ARMS)]
        self._history: dict[str, deque[tuple[int, np.ndarray]]] = {
            source: deque(maxlen=history) for source in self._sources
        }
        self._lock = threading.Lock()

    def add_image(self, camera: str, stamp: int, image: np.ndarray) -> None:
        self._add(f'camera:{camera}', stamp, image)

    def add_arm_state(self, arm: str, stamp: int, state: np.ndarray) -> None:
        """`state` (7,): the arm's 6 joints (rad) and its gripper opening (0..1)."""
        self._add(f'arm:{arm}', stamp, state)

    def _add(self, source: str, stamp: int, value: np.ndarray) -> None:
        if source not in self._history:
            raise ValueError(f'unknown source {source!r}; expected one of {self._sources}')
        with self._lock:
            history = self._history[source]
            if history and stamp <= history[-1][0]:
                history.clear()  # time went backwards (sim reset): older samples are void
            history.append((stamp, value))

    def latest(self, now: int) -> Observation | None:
        """The newest synchronised set, or None if some source is missing, out of sync, or the
        set is older than max_age at `now`."""
        with self._lock:
            if not all(self._history.values()):
                return None
            anchor = min(history[-1][0] for history in self._history.values())
            chosen = {
                source: min(history, key=lambda sample: abs(sample[0] - anchor))
                for source, history in self._history.items()
            }
        stamps = [stamp for stamp, _ in chosen.values()]
        newest = max(stamps)
        if newest - min(stamps) > self._tolerance_ns or now - newest > self._max_age_ns:
            return None
        images = {
            source.removeprefix('camera:'): value
            for source, (_, value) in chosen.items()
            if source.startswith('camera:')
        }
        proprio = np.concatenate([chosen[f'arm:{arm}'][1] for arm in robot.ARMS])
        return Observation(stamp=newest, images=images, proprio=proprio)
