"""node_runner's exit. A node that must finish something first (the chunk executor moving the
arms) keeps spinning on SIGTERM or Ctrl-C until its exit is done, a second signal (ros2 launch
and the terminal both send one) does not cut it short, and the process ends with 0. Any node
ends on a stop signal that comes while its main thread holds a lock."""

from __future__ import annotations

import subprocess

import pytest

from tests.python_snippet import run_python

pytestmark = pytest.mark.ros

SNIPPET = """
import os, signal, threading
from rclpy.node import Node
from oft_policy_node.node_runner import run_node

AFTER = []  # callbacks run between begin_exit and the end

class Finishing(Node):
    def __init__(self):
        super().__init__('finishing')
        self.spins = 0
        self.create_timer(0.01, self.count)
        # the stop signals, from a thread once the node spins: first, then a second one
        threading.Timer(0.5, os.kill, (os.getpid(), signal.{first})).start()
        threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT)).start()

    def count(self):
        self.spins += 1

    def begin_exit(self):
        self.started = self.spins
        print('begin_exit', flush=True)

    def exit_done(self):
        AFTER.append(self.spins - self.started)
        return AFTER[-1] >= 50  # half a second of callbacks after the signal

code = run_node('finishing', 'test', (), Finishing, ['finishing'], graceful_exit=True)
print('callbacks during the exit:', AFTER[-1], 'exit code', code, flush=True)
raise SystemExit(code)
"""


@pytest.mark.parametrize('first', ['SIGTERM', 'SIGINT'])
def test_the_exit_runs_to_its_end_whatever_signals_follow(first):
    result = run_python(SNIPPET.format(first=first), timeout=60.0)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count('begin_exit') == 1
    # the second signal came 0.2 s into an exit of 0.5 s and did not end it
    assert 'callbacks during the exit: 50 exit code 0' in result.stdout, result.stdout


# The signal's handler runs between two bytecodes of the main thread, wherever it is. Here it
# is made to come while the main thread holds the lock of the MultiThreadedExecutor's thread
# pool (its idle semaphore, taken by every submit): an exception raised there leaves the lock
# held, the pool's workers block on it for good, and the interpreter's exit waits for them.
# That was a policy_node that never ended after Ctrl-C (CI, Jazzy: main thread in
# concurrent.futures.thread._python_exit, both workers in Semaphore.release).
SIGNAL_INSIDE_THE_POOL_LOCK = """
import concurrent.futures, os, signal, time
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from oft_policy_node.node_runner import run_node

submit = concurrent.futures.ThreadPoolExecutor.submit
submits = []

def submit_with_a_signal_inside_its_lock(self, *args, **kwargs):
    submits.append(1)
    if len(submits) == 20:  # the workers are running callbacks by now
        lock = self._idle_semaphore._cond
        lock.acquire()
        os.kill(os.getpid(), signal.{signal})
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # the handler runs in here
            pass
        lock.release()
    return submit(self, *args, **kwargs)

concurrent.futures.ThreadPoolExecutor.submit = submit_with_a_signal_inside_its_lock

class Busy(Node):  # the pool's workers are always in a callback, and take the lock after one
    def __init__(self):
        super().__init__('busy')
        self.create_timer(0.01, lambda: time.sleep(0.3), ReentrantCallbackGroup())

code = run_node('busy', 'test', (), Busy, ['busy'])
print('run_node returned', code, 'after', len(submits), 'submits', flush=True)
raise SystemExit(code)
"""


@pytest.mark.parametrize('stop', ['SIGINT', 'SIGTERM'])
def test_a_stop_signal_inside_the_thread_pool_lock_still_ends_the_node(stop):
    try:
        result = run_python(SIGNAL_INSIDE_THE_POOL_LOCK.format(signal=stop), timeout=60.0)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f'the node did not end after {stop}: {hung.stdout!r} {hung.stderr!r}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'run_node returned 0 after' in result.stdout, result.stdout
