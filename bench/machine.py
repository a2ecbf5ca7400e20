"""What a benchmark ran on: CPU, GPU, Python and the versions of the stack's dependencies."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

PACKAGES = (
    'torch',
    'transformers',
    'peft',
    'numpy',
    'mujoco',
    'ros-rclpy',
    'ros-fastdds',
    'rosbags',
    'opencv-python-headless',
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _gpu() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def describe_machine() -> dict:
    return {
        'cpu_count': os.cpu_count(),
        'cpu_model': _cpu_model(),
        'gpu': _gpu(),
        'python': platform.python_version(),
        'platform': platform.platform(),
        'ros_distro': os.environ.get('ROS_DISTRO', 'kilted (PyPI wheels)'),
        'rmw': os.environ.get('RMW_IMPLEMENTATION'),
        'git_commit': _git_commit(),
        'versions': {p: _version(p) for p in PACKAGES},
    }
