"""`main()` plumbing shared by the nodes: a `--help` that lists the parameters, a clean exit on
Ctrl-C (SIGINT) and SIGTERM, and a one-line error (exit code 2) for a bad configuration."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node
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


def run_node(
    prog: str,
    description: str,
    specs: Sequence[ParameterSpec],
    make_node: Callable[[], Node],
    argv: Sequence[str] | None = None,
    callback_threads: int = 2,
) -> int:
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=parameter_help(specs),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv)
    node = None
    try:
        node = make_node()
        executor = (
            SingleThreadedExecutor()
            if callback_threads == 1
            else MultiThreadedExecutor(num_threads=callback_threads)
        )
        executor.add_node(node)
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
