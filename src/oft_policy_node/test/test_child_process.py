"""Stopping programs the way Ctrl-C would: SIGTERM and SIGINT raise KeyboardInterrupt, and an
exception raised after such a signal counts as the stop (inside a C extension's call, rclpy's
pybind11 conversion, the signal's KeyboardInterrupt surfaces as a RuntimeError)."""

from __future__ import annotations

import pytest

from tests.python_snippet import run_python

pytestmark = pytest.mark.ros  # rclpy's signal handling


def test_sigterm_raises_keyboard_interrupt_and_marks_the_stop():
    result = run_python("""
        import os, signal, time
        from oft_policy_node.child_process import interrupted, sigterm_as_ctrl_c
        sigterm_as_ctrl_c()
        assert not interrupted(RuntimeError('a real failure'))
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt as error:
            print('stopped', interrupted(error), interrupted(RuntimeError('mid-conversion')))
        """)
    assert result.stdout.strip() == 'stopped True True', result.stderr


def test_a_stop_inside_stop_deferred_is_raised_when_the_block_ends():
    result = run_python("""
        import os, signal, time
        from oft_policy_node.child_process import interrupted, stop_deferred, sigterm_as_ctrl_c
        sigterm_as_ctrl_c()
        finished = []
        try:
            with stop_deferred():
                with stop_deferred():  # nested: raised only when the outer block ends
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.05)
                    finished.append('inner')
                finished.append('outer')
            finished.append('after')
        except KeyboardInterrupt as error:
            print(' '.join(finished), interrupted(error))
        """)
    assert result.stdout.strip() == 'inner outer True', result.stderr
