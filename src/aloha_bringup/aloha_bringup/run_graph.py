"""Start the OFT bimanual graph without `ros2 launch`: the same nodes, parameters and remappings
as launch/oft_bimanual.launch.py (both resolve config/graph.yaml), as separate processes.

    run_graph task:="put red pepper into pot" checkpoint:=/path/to/ckpt use_sim:=true
    run_graph --show-args

Output of every node is prefixed with its name. Ctrl-C (or SIGTERM) stops every node cleanly:
SIGINT first, then SIGTERM, then SIGKILL for a node that will not stop. If a node dies on its
own, the others are stopped too and the runner exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from aloha_bringup.graph import (
    MISSION_GRAPH,
    TELEOP_GRAPH,
    NodeSpec,
    graph_arguments,
    resolve_graph,
)
from oft_policy_node.child_process import stop_process


def executable_path(spec: NodeSpec) -> str:
    """The installed console script of a node (colcon puts it in <prefix>/lib/<package>/)."""
    from ament_index_python.packages import get_package_prefix

    try:
        path = Path(get_package_prefix(spec.package)) / 'lib' / spec.package / spec.executable
    except LookupError as error:
        raise SystemExit(
            f'package {spec.package!r} is not installed: run `make build` '
            f'(or colcon build) and source the workspace'
        ) from error
    if not path.exists():
        raise SystemExit(f'{path} does not exist: run `make build` to install {spec.executable}')
    return str(path)


def node_command(spec: NodeSpec, params_dir: Path) -> list[str]:
    """The command line `ros2 launch` would run for `spec`."""
    params_file = params_dir / f'{spec.name}.yaml'
    params_file.write_text(yaml.safe_dump({spec.name: {'ros__parameters': spec.parameters}}))
    command = [
        executable_path(spec),
        '--ros-args',
        '-r',
        f'__node:={spec.name}',
        '--params-file',
        str(params_file),
    ]
    for source, target in spec.remappings:
        command += ['-r', f'{source}:={target}']
    return command


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        name, sep, value = item.partition(':=')
        if not sep:
            raise SystemExit(f'argument {item!r} is not of the form name:=value')
        values[name] = value
    return values


def _forward_output(name: str, stream: object) -> None:
    for line in iter(stream.readline, b''):
        sys.stdout.write(f'[{name}] {line.decode(errors="replace")}')
        sys.stdout.flush()


class GraphProcesses:
    """The running nodes; stops them all, by PID, in reverse start order."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self._stop_timeouts: dict[str, float] = {}

    def start(self, spec: NodeSpec, command: list[str]) -> None:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, 'PYTHONUNBUFFERED': '1'},
        )
        self.procs[spec.name] = proc
        self._stop_timeouts[spec.name] = spec.stop_timeout
        threading.Thread(
            target=_forward_output, args=(spec.name, proc.stdout), daemon=True
        ).start()
        print(f'[run_graph] started {spec.name} (pid {proc.pid})', flush=True)

    def exited(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def stop(self, name: str) -> int:
        """Stop one node (SIGINT, then SIGTERM, then SIGKILL) and forget it; its exit code."""
        code = stop_process(
            self.procs.pop(name),
            self._stop_timeouts.pop(name),
            lambda sig: print(f'[run_graph] {name} ignored {sig.name}', flush=True),
        )
        print(f'[run_graph] {name} exited with {code}', flush=True)
        return code

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


GRAPHS = {'mission': MISSION_GRAPH, 'teleop': TELEOP_GRAPH}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='run_graph',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='arguments:\n'
        + '\n'.join(
            f'  {a.name}:={a.default!r}\n      {a.description}' for a in graph_arguments()
        ),
    )
    parser.add_argument(
        'arguments', nargs='*', metavar='name:=value', help='launch arguments, as for ros2 launch'
    )
    parser.add_argument(
        '--graph',
        choices=sorted(GRAPHS),
        default='mission',
        help='mission: policy + executor (+ sim), oft_bimanual.launch.py; teleop: the '
        'followers mirror the leaders, one bag per episode, teleop.launch.py',
    )
    parser.add_argument(
        '--duration',
        type=float,
        default=None,
        help='stop the graph after this many seconds (default: until Ctrl-C)',
    )
    parser.add_argument(
        '--show-args',
        action='store_true',
        help='print the resolved nodes, parameters and remappings, then exit',
    )
    args = parser.parse_args(argv)
    try:
        nodes = resolve_graph(parse_launch_arguments(args.arguments), name=GRAPHS[args.graph])
    except ValueError as error:
        parser.error(str(error))
    if args.show_args:
        for spec in nodes:
            print(
                yaml.safe_dump(
                    {
                        spec.name: {
                            'package': spec.package,
                            'executable': spec.executable,
                            'parameters': spec.parameters,
                            'remappings': [list(r) for r in spec.remappings],
                        }
                    },
                    sort_keys=False,
                ),
                end='',
            )
        return 0

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    graph = GraphProcesses()
    with tempfile.TemporaryDirectory(prefix='run_graph_') as params_dir:
        try:
            for spec in nodes:
                graph.start(spec, node_command(spec, Path(params_dir)))
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while not stop.is_set() and not graph.exited():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                stop.wait(0.2)
            died = graph.exited()
        finally:
            graph.stop_all()
    if died:
        print(f'[run_graph] node(s) exited unexpectedly: {died}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
