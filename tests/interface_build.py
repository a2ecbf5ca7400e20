"""Builds the test-only interface packages of tests/interfaces with colcon (once; rebuilt when a
source changes) into <build>/test_interfaces (the distribution's build folder, scripts/distro.sh:
Jazzy and Kilted interfaces differ), and gives the environment that makes them importable in a
subprocess. They are never part of install/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = REPO_ROOT / 'tests' / 'interfaces'
BUILD_ROOT = REPO_ROOT / os.environ.get('OFT_BUILD', 'build') / 'test_interfaces'
INSTALL = BUILD_ROOT / 'install'


def _newest_source_mtime(package: str) -> float:
    return max(p.stat().st_mtime for p in (SOURCES / package).rglob('*') if p.is_file())


def build_test_interface(package: str) -> dict[str, str]:
    """Build `package` if needed; return env additions for processes that import it."""
    stamp = BUILD_ROOT / f'{package}.stamp'
    if not stamp.exists() or stamp.stat().st_mtime < _newest_source_mtime(package):
        result = subprocess.run(
            [
                'colcon',
                '--log-base',
                str(BUILD_ROOT / 'log'),
                'build',
                '--base-paths',
                str(SOURCES / package),
                '--build-base',
                str(BUILD_ROOT / 'build'),
                '--install-base',
                str(INSTALL),
                '--merge-install',
                '--cmake-args',
                '-DBUILD_TESTING=OFF',
                f'-DPython3_EXECUTABLE={sys.executable}',
                '--event-handlers',
                'console_direct-',
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f'colcon build of {package} failed:\n{result.stdout}\n{result.stderr}'
            )
        stamp.touch()
    site = next(INSTALL.glob('lib/python3*/site-packages'))

    def prepend(name: str, value: Path) -> str:
        return os.pathsep.join([str(value), *filter(None, [os.environ.get(name)])])

    return {
        'AMENT_PREFIX_PATH': prepend('AMENT_PREFIX_PATH', INSTALL),
        'LD_LIBRARY_PATH': prepend('LD_LIBRARY_PATH', INSTALL / 'lib'),
        'PYTHONPATH': prepend('PYTHONPATH', site),
    }


def load_test_interface(package: str, monkeypatch: object) -> None:
    """Build `package` and make it importable in *this* process for one test (`monkeypatch`
    undoes the path changes). The dynamic loader reads LD_LIBRARY_PATH only at process start,
    so its C libraries are preloaded by path."""
    import ctypes
    import importlib

    env = build_test_interface(package)
    monkeypatch.setenv('AMENT_PREFIX_PATH', env['AMENT_PREFIX_PATH'])
    monkeypatch.syspath_prepend(env['PYTHONPATH'].split(os.pathsep)[0])
    # generator_c first: the type support libraries link against it.
    for library in sorted(
        (INSTALL / 'lib').glob(f'lib{package}__*.so'), key=lambda p: 'generator_c' not in p.name
    ):
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    importlib.invalidate_caches()
