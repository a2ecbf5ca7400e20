"""Stopping a child process this program started, by its PID, the way Ctrl-C would.

Shared by the graph runner, the demo recorder, the benchmarks and the tests, so every one of
them gives a node the same chance to shut down cleanly (close a bag, release DDS) before it is
forced. And the other side: a parent that starts nodes treats SIGTERM as Ctrl-C, so `kill PID`
stops its children too instead of leaving them running.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ESCALATION = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def stop_process(
    proc: subprocess.Popen,
    timeout: float = 10.0,
    on_ignored: Callable[[signal.Signals], None] | None = None,
) -> int:
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


_stop_signals: list[int] = []  # Ctrl-C / SIGTERM received since sigterm_as_ctrl_c()
_deferring = 0  # depth of stop_deferred() blocks the main thread is in
_deferred: list[int] = []  # stop signals held by them


def _interrupt(signum: int, _frame: object) -> None:
    _stop_signals.append(signum)
    if _deferring:
        _deferred.append(signum)
        return
    raise KeyboardInterrupt


@contextmanager
def stop_deferred() -> Iterator[None]:
    """Run the block whole: a stop signal (see sigterm_as_ctrl_c) that arrives inside it raises
    its KeyboardInterrupt when the block ends. For writes that must not be cut in two: a
    Ctrl-C raised between a bag record's header and its data left an MCAP file that no reader
    opens past that record."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _deferred:
        _deferred.clear()
        raise KeyboardInterrupt


def sigterm_as_ctrl_c() -> None:
    """From now on SIGTERM (kill, CI timeouts, process managers) and Ctrl-C raise
    KeyboardInterrupt in the main thread: the program's Ctrl-C path then stops its children and
    writes its results. Check an exception with `interrupted` (see there why)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def interrupted(error: BaseException) -> bool:
    """Whether `error` is the program being stopped: a KeyboardInterrupt, or any exception after
    a stop signal arrived. The signal's exception is raised wherever the main thread is; inside
    a C extension's call (rclpy's pybind11 argument conversion) it surfaces as a RuntimeError
    instead."""
    return isinstance(error, KeyboardInterrupt) or bool(_stop_signals)
