"""node_runner's exit for a node that must finish something first (the chunk executor moving
the arms): on SIGTERM or Ctrl-C it keeps spinning until the node's exit is done, a second
signal (ros2 launch and the terminal both send one) does not cut it short, and the process
ends with 0."""

from __future__ import annotations

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
