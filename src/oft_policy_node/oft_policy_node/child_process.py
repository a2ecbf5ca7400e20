"""Stopping a child process this program started, by its PID, the way Ctrl-C would.

Shared by the graph runner, the demo recorder, the benchmarks and the tests, so every one of
them gives a node the same chance to shut down cleanly (close a bag, release DDS) before it is
forced.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

ESCALATION = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0,
                 on_ignored: Callable[[signal.Signals], None] | None = None) -> int:
    """SIGINT, then SIGTERM, then SIGKILL, each given `timeout` seconds; the exit code.

    `on_ignored(sig)` is told about a signal the process did not exit on.
    """
    for sig in ESCALATION:
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if on_ignored is not None:
                on_ignored(sig)
    return proc.wait()
