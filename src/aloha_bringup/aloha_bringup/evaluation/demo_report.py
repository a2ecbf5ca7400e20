"""What `make demo` writes about a run: report.json, cameras.mp4 and joints.png. ROS-free.

The demo node feeds samples in as they arrive; this module keeps the series, composes the three
camera views side by side into a video as it goes (no frame buffer grows with the run length),
and writes the summary and plots at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oft_policy_node import robot

VIDEO_FPS = 10.0  # sim-time rate of video frames: enough to see the motion, small files
VIDEO_VIEW_HEIGHT = 240  # each camera view is scaled to this height


def latency_stats(values: list[float]) -> dict[str, float | None]:
    """p50 / p95 / max of a list of seconds (None when empty)."""
    if not values:
        return {'p50': None, 'p95': None, 'max': None}
    array = np.asarray(values, dtype=np.float64)
    return {
        'p50': round(float(np.percentile(array, 50)), 4),
        'p95': round(float(np.percentile(array, 95)), 4),
        'max': round(float(array.max()), 4),
    }


@dataclass
class JointSeries:
    """Time series of the 14-D commanded and measured joint vectors (policy units)."""

    commanded_t: list[float] = field(default_factory=list)
    commanded: list[np.ndarray] = field(default_factory=list)
    measured_t: list[float] = field(default_factory=list)
    measured: list[np.ndarray] = field(default_factory=list)

    def add_commanded(self, t: float, values: np.ndarray) -> None:
        self.commanded_t.append(t)
        self.commanded.append(np.asarray(values, dtype=np.float64))

    def add_measured(self, t: float, values: np.ndarray) -> None:
        self.measured_t.append(t)
        self.measured.append(np.asarray(values, dtype=np.float64))

    def plot(self, path: Path, title: str) -> None:
        """14 panels (7 rows: joints, 2 columns: arms), commanded vs measured over sim time."""
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt

        names = robot.action_joint_names()
        per_arm = len(names) // 2
        fig, axes = plt.subplots(per_arm, 2, figsize=(12, 2.0 * per_arm), sharex=True)
        commanded = np.array(self.commanded).reshape(-1, len(names))  # (T, D)
        measured = np.array(self.measured).reshape(-1, len(names))  # (T, D)
        for column in range(len(names)):
            ax = axes[column % per_arm, column // per_arm]
            ax.plot(self.measured_t, measured[:, column], label='measured', lw=1.2)
            ax.plot(self.commanded_t, commanded[:, column], label='commanded', lw=1.0, ls='--')
            unit = '0..1' if names[column].endswith('gripper') else 'rad'
            ax.set_title(f'{names[column]} [{unit}]', fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in axes[-1]:
            ax.set_xlabel('sim time [s]')
        axes[0, 0].legend(fontsize=7, loc='upper right')
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)


class ExecutorCounters:
    """The chunk executor's counters (stalls, clamped_commands, ...) as /diagnostics reports
    them, with the sim time each report arrived."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, dict[str, str]]] = []

    def add(self, t: float, status_name: str, values: dict[str, str]) -> None:
        """One DiagnosticStatus; statuses of other nodes (the policy's) are ignored."""
        if status_name.endswith('chunk_executor'):
            self.reports.append((t, values))

    def value_at_or_after(self, key: str, t: float) -> str | None:
        later = [values for stamp, values in self.reports if stamp >= t]
        return later[0][key] if later else None

    def first_at_or_after(self, key: str, t: float) -> int | None:
        value = self.value_at_or_after(key, t)
        return None if value is None else int(value)

    def safety_at_or_after(self, t: float) -> dict:
        """The executor's safety rules at work, up to its first report at/after `t`: tracking
        faults, the largest tracking error (step-limited target - measured, rad or opening) and
        its joint, times the joint states went stale, chunks rejected for a stamp ahead of the
        executor's clock, and ticks held by a rule."""
        peak = self.value_at_or_after('tracking_error_peak', t)
        return {
            'tracking_faults': self.first_at_or_after('tracking_faults', t),
            'tracking_error_peak': None if peak is None else round(float(peak), 4),
            'tracking_error_peak_joint': self.value_at_or_after('tracking_error_peak_joint', t),
            'stale_events': self.first_at_or_after('stale_events', t),
            'future_chunks': self.first_at_or_after('future_chunks', t),
            'held_ticks': self.first_at_or_after('holds', t),
        }

    def chunking_at_or_after(self, t: float) -> dict:
        """How chunks followed each other, up to the first report at/after `t`: ticks, those
        held before the first chunk came (starting: the policy not yet heard), fresh ticks,
        `prefix` splices (late ones among them) and restarts, the ticks the playing chunk
        changed, and the largest arm-joint step between consecutive targets there and inside
        chunks."""
        fresh, switch, inside = (
            self.value_at_or_after(k, t)
            for k in ('fresh_ticks', 'switch_step_max', 'chunk_step_max')
        )
        return {
            'ticks': self.first_at_or_after('ticks', t),
            'starting_ticks': self.first_at_or_after('starting_ticks', t),
            'fresh_ticks': None if fresh is None else int(fresh),
            'splices': self.first_at_or_after('splices', t),
            'late_splices': self.first_at_or_after('late_splices', t),
            'restarts': self.first_at_or_after('restarts', t),
            'chunk_switches': self.first_at_or_after('chunk_switches', t),
            'switch_step_max': None if switch is None else round(float(switch), 4),
            'chunk_step_max': None if inside is None else round(float(inside), 4),
        }

    def change(self, key: str, start: float, end: float) -> int:
        """Change of a counter between its first reports at/after `start` and `end`."""
        first, last = self.first_at_or_after(key, start), self.first_at_or_after(key, end)
        return 0 if first is None or last is None else last - first


class CameraVideo:
    """Writes the three camera views side by side to an mp4, one frame per 1/VIDEO_FPS sim-s."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._latest: dict[str, np.ndarray] = {}
        self._writer = None
        self._next_t = 0.0
        self.frames = 0

    def add_image(self, camera: str, t: float, image: np.ndarray) -> None:
        """`image` is (H, W, 3) uint8 RGB; a composite is written when the top view arrives.
        Views are scaled only for the frames written (10 per sim second of 90 images), so a
        busy monitor keeps up with three 30 Hz cameras."""
        import cv2

        self._latest[camera] = image
        if camera != robot.CAMERAS[0] or t < self._next_t:
            return
        if not all(c in self._latest for c in robot.CAMERAS):
            return
        self._next_t = t + 1.0 / VIDEO_FPS
        views = [
            cv2.resize(
                view,
                (round(view.shape[1] * VIDEO_VIEW_HEIGHT / view.shape[0]), VIDEO_VIEW_HEIGHT),
                interpolation=cv2.INTER_AREA,
            )
            for view in (self._latest[c] for c in robot.CAMERAS)
        ]
        frame = np.concatenate(views, axis=1)  # (h, 3w, 3)
        if self._writer is None:
            import imageio.v2 as imageio

            self._writer = imageio.get_writer(
                self.path, fps=VIDEO_FPS, codec='libx264', macro_block_size=8, quality=6
            )
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2) + '\n')


def summary_lines(report: dict) -> list[str]:
    """The few lines `make demo` prints at the end."""
    latency = report['inference_latency_s']
    lines = [
        f'instruction: {report["instruction"]!r} in scene {report["scene"]}',
        f'policy: {report["checkpoint"]}'
        + ('' if report['policy_trained'] else '  (UNTRAINED: random weights, expect no success)'),
        f'sim {report["sim_seconds"]:.1f} s in {report["wall_seconds"]:.1f} s wall '
        f'(real-time factor {report["real_time_factor"]:.2f})',
        f'control: {report["ticks"]} ticks at {report["control_rate_hz"]:.1f} Hz, '
        f'{report["stalled_ticks"]} stalled, {report["held_ticks"]} held, '
        f'{report["clamped_ticks"]} clamped, {report["waiting_ticks"]} waiting; '
        f'{report["tracking_faults"]} tracking faults, '
        f'peak tracking error {report["tracking_error_peak"]} on '
        f'{report["tracking_error_peak_joint"]}',
        f'chunks: {report["chunks"]}, inference latency p50 {latency["p50"]} s, '
        f'p95 {latency["p95"]} s, max {latency["max"]} s',
        f'success: {report["success"]}',
    ]
    return lines
