"""Run a snippet of Python in a fresh interpreter, for tests that change process-wide state
(signal handlers) which must not leak into the pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_python(
    code: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`code` dedented, run with this interpreter (`env` added to this environment); its output
    captured as text."""
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
