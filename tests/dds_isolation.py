"""pytest plugin: every test run gets a DDS that cannot reach anything but this machine.

* As root, the whole run is re-executed in a private network namespace that has only the
  loopback interface (`unshare --net`), unless it already runs in one (`make test` starts it
  there through scripts/isolated.sh). Not as root, or where namespaces are not permitted, the
  loopback-only Fast DDS profile below is the confinement.
* Discovery is restricted to localhost and Fast DDS uses the project's profile (shared memory +
  UDPv4 on 127.0.0.1 only).
* The run claims a ROS_DOMAIN_ID no concurrent run on this machine holds (a lock file per id):
  shared memory is visible across network namespaces, so two runs on one id could meet.

The variables are set in this process's environment before rclpy is imported, so every node
and every subprocess a test starts inherits them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DDS_PROFILE = REPO_ROOT / 'src' / 'aloha_bringup' / 'config' / 'fastdds_loopback.xml'
DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / 'oft_ros_domain_locks'
# Fast DDS maps a domain id to UDP ports 7400 + 250 * id; ids above 101 collide with the
# ephemeral port range on Linux, so stay at or below it. 0 is the default everyone else uses.
DOMAIN_IDS = range(1, 102)

_domain_lock: IO[str] | None = None


def network_interfaces() -> list[str]:
    """Names of the network interfaces visible to this process."""
    lines = Path('/proc/net/dev').read_text().splitlines()[2:]
    return [line.split(':', 1)[0].strip() for line in lines]


def only_loopback() -> bool:
    return network_interfaces() == ['lo']


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which('unshare') is None or shutil.which('ip') is None:
        return False
    return subprocess.run(['unshare', '--net', 'true'], capture_output=True).returncode == 0


def claim_domain_id() -> int:
    """Lock and return the first ROS_DOMAIN_ID no other live test run on this machine holds."""
    global _domain_lock
    DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for domain_id in DOMAIN_IDS:
        handle = open(DOMAIN_LOCK_DIR / f'{domain_id}.lock', 'w')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _domain_lock = handle  # held until this process exits
        return domain_id
    raise RuntimeError(f'all ROS_DOMAIN_IDs {DOMAIN_IDS} are held by other test runs')


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    if only_loopback() or os.environ.get('OFT_NETNS_REEXEC') == '1' or not _can_unshare():
        return
    # Output capture is already redirecting fds 1 and 2; restore them before replacing the
    # process, or the re-executed run would write into the old capture files.
    capture = config.pluginmanager.getplugin('capturemanager')
    if capture is not None:
        capture.stop_global_capturing()
    os.environ['OFT_NETNS_REEXEC'] = '1'
    argv = [sys.executable, '-m', 'pytest', *config.invocation_params.args]
    os.chdir(config.invocation_params.dir)
    os.execvp(
        'unshare',
        ['unshare', '--net', '--', 'bash', '-c', 'ip link set lo up && exec "$@"', '_', *argv],
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ['ROS_DOMAIN_ID'] = str(claim_domain_id())
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(DDS_PROFILE)
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    os.environ.setdefault('MUJOCO_GL', 'egl')
    os.environ['ROS_LOG_DIR'] = str(Path(tempfile.gettempdir()) / f'oft_ros_log_{os.getpid()}')


def pytest_report_header(config: pytest.Config) -> str:
    netns = 'private (loopback only)' if only_loopback() else 'host (loopback-only DDS profile)'
    return (
        f'DDS: ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID")}, '
        f'discovery {os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")}, network {netns}'
    )
