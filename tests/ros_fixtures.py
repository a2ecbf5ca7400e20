"""Fixtures and helpers shared by every test that talks over real DDS.

Tests start real nodes, in this process (an rclpy Context of their own) or as separate
processes (`spawn`), and wait on real messages with `spin_until`. Processes a test starts are
ended by their PID when it finishes, whatever its outcome.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from oft_policy_node.child_process import stop_process
from oft_policy_node.runtime.pose_moves import EXIT_TIMEOUT

REPO_ROOT = Path(__file__).resolve().parents[1]
# How long a node may take to end on Ctrl-C before `stop` escalates: the chunk executor's exit
# move (grippers open, or the sleep pose) runs in simulated time, which a loaded machine slows
# to a fraction of real time, and only exit_timeout (wall time) bounds it; then 10 s to leave
# the interpreter. A shorter wait killed an executor that was ending as designed.
STOP_TIMEOUT = EXIT_TIMEOUT + 10.0
# A test that uses one of these starts nodes or talks DDS: it is a `ros` test (pyproject.toml).
DDS_FIXTURES = frozenset({'rclpy_context', 'spawn'})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DDS_FIXTURES.intersection(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.ros)


@pytest.fixture
def rclpy_context() -> Iterator[object]:
    """An initialised rclpy Context private to the test, shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


@contextmanager
def spinning_node(context: object, name: str) -> Iterator[tuple[object, object]]:
    """A node in `context` with its own single-threaded executor: (node, executor), both torn
    down on exit."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()


def spin_until(
    executor: object, predicate: Callable[[], bool], timeout: float, step: float = 0.02
) -> bool:
    """Spin `executor` until `predicate()` is true or `timeout` seconds pass; return the former."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step)
    return predicate()


def call_service(executor: object, client: object, request: object) -> object:
    """The response to `request`, asked again where the reply was lost to ROS 2's service
    discovery race (oft_policy_node.service_calls); idempotent requests only."""
    from oft_policy_node.service_calls import call_until_answered

    assert spin_until(executor, client.service_is_ready, 30.0), f'no service {client.srv_name}'
    return call_until_answered(
        client,
        lambda: client.call_async(request),
        lambda done, timeout: spin_until(executor, done, timeout),
    )


class ProcessGroup:
    """Processes started by one test, stopped by PID (SIGINT, then SIGTERM, then SIGKILL)."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._procs: list[subprocess.Popen] = []
        self._logs: dict[int, Path] = {}

    def python(
        self, *args: str, name: str = 'proc', env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start `python args...` with this run's isolated DDS environment; output to a log."""
        return self.command(sys.executable, *args, name=name, env=env)

    def command(
        self,
        *argv: str,
        name: str = 'proc',
        env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> subprocess.Popen:
        """Start `argv` (in `cwd`) with this run's isolated DDS environment; output to a log."""
        log = self._log_dir / f'{name}-{len(self._procs)}.log'
        with open(log, 'wb') as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})},
            )
        self._procs.append(proc)
        self._logs[proc.pid] = log
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        """Everything `proc` printed so far."""
        return self._logs[proc.pid].read_text(errors='replace')

    def stop(self, proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
        """Interrupt `proc` like Ctrl-C and return its exit code (killed if it will not stop)."""
        return stop_process(proc, timeout)

    def stop_all(self) -> None:
        for proc in self._procs:
            self.stop(proc, timeout=5.0)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Start helper processes; all of them are stopped when the test ends."""
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()
