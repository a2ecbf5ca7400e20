"""`main()` plumbing shared by the nodes: a `--help` that lists the parameters, a clean exit on
Ctrl-C (SIGINT) and SIGTERM, and a one-line error (exit code 2) for a bad configuration.

A node with an exit of its own (`ExitingNode`: the chunk executor moves the arms before it lets
go) keeps spinning after the first signal until its exit is done; rclpy's signal handler, which
would shut the context down at once, is off for it, and further signals (ros2 launch and the
terminal both send SIGINT on one Ctrl-C) are not a reason to cut it short."""

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


def _spin_with_exit(executor: SingleThreadedExecutor | MultiThreadedExecutor, node: ExitingNode):
    """Spin until SIGINT/SIGTERM, then until the node's exit is done."""
    signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, frame: signals.append(number))
    while not signals:
        executor.spin_once(timeout_sec=SPIN_S)
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
    options = SignalHandlerOptions.NO if graceful_exit else None
    rclpy.init(args=argv, signal_handler_options=options)
    node = None
    try:
        node = make_node()
        executor = (
            SingleThreadedExecutor()
            if callback_threads == 1
            else MultiThreadedExecutor(num_threads=callback_threads)
        )
        executor.add_node(node)
        if graceful_exit:
            _spin_with_exit(executor, node)
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, RuntimeError) as error:
        if not rclpy.ok():
            # Ctrl-C/SIGTERM shut the context down while the node was being built or the
            # executor was between waits: rcl then fails with "context is invalid". That is
            # the requested shutdown, not a configuration error.
            return 0
        print(f'{prog}: {error}', file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
