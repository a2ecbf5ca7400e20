"""`main()` plumbing shared by the nodes: a `--help` that lists the parameters, a clean exit on
Ctrl-C (SIGINT) and SIGTERM, and a one-line error (exit code 2) for a bad configuration.

Once the node spins, a stop signal is only recorded, and the main thread ends its spin loop
when it sees it. Python runs a signal's handler between two bytecodes of the main thread,
wherever that is; the KeyboardInterrupt rclpy's handler leads to (it passes SIGINT on to
Python's) was once raised while the main thread held the lock of the MultiThreadedExecutor's
thread pool, and the process never ended: its workers waited for that lock, and the
interpreter's exit for them. While the node is built (a model load takes minutes) Ctrl-C and
SIGTERM still raise KeyboardInterrupt, which stops the load at once.

A node with an exit of its own (`ExitingNode`: the chunk executor moves the arms before it lets
go) keeps spinning after the first signal until its exit is done; further signals (ros2 launch
and the terminal both send SIGINT on one Ctrl-C) are not a reason to cut it short."""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Protocol

import rclpy
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args

from oft_policy_node.child_process import interrupted, sigterm_as_ctrl_c
from oft_policy_node.node_parameters import ParameterSpec


def parameter_help(specs: Sequence[ParameterSpec]) -> str:
    lines = ['parameters (set with --ros-args -p name:=value or a params YAML):']
    for spec in specs:
        flag = '' if spec.read_only else ' [writable at run time]'
        description = textwrap.fill(
            spec.description, width=95, initial_indent=' ' * 6, subsequent_indent=' ' * 6
        )
        lines.append(f'  {spec.name} (default {spec.default!r}){flag}\n{description}')
    return '\n'.join(lines)


class ExitingNode(Protocol):
    def begin_exit(self) -> None: ...

    def exit_done(self) -> bool: ...


SPIN_S = 0.05  # spin_once's wait: how soon a signal is seen


def _spin_until_stopped(
    executor: SingleThreadedExecutor | MultiThreadedExecutor, node: Node, graceful_exit: bool
) -> None:
    """Spin until SIGINT/SIGTERM, then, for an ExitingNode, until its exit is done."""
    signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, frame: signals.append(number))
    while not signals:
        executor.spin_once(timeout_sec=SPIN_S)
    if graceful_exit:
        node.begin_exit()
        while not node.exit_done():
            executor.spin_once(timeout_sec=SPIN_S)


def run_node(
    prog: str,
    description: str,
    specs: Sequence[ParameterSpec],
    make_node: Callable[[], Node],
    argv: Sequence[str] | None = None,
    callback_threads: int = 2,
    graceful_exit: bool = False,
) -> int:
    """`graceful_exit`: make_node() gives an ExitingNode, spun until its exit is done."""
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=parameter_help(specs),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    sigterm_as_ctrl_c()  # until the node spins
    node = None
    try:
        node = make_node()
        executor = (
            SingleThreadedExecutor()
            if callback_threads == 1
            else MultiThreadedExecutor(num_threads=callback_threads)
        )
        executor.add_node(node)
        _spin_until_stopped(executor, node, graceful_exit)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, RuntimeError) as error:
        if interrupted(error) or not rclpy.ok():
            # The stop signal came while the node was being built: inside a C extension's call
            # it surfaces as a RuntimeError. That is the requested stop, not a bad
            # configuration; so is a context shut down from elsewhere.
            return 0
        print(f'{prog}: {error}', file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
