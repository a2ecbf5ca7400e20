"""`make demo` on this machine: real-time factor, control rate, stalls and inference latency.

Runs the full graph (aloha_sim at 480x640 + policy_node + chunk_executor, separate processes over
DDS) for 15 sim seconds with the default checkpoint choice (a trained one when present, else
an untrained `tiny`), and returns the run's report.json.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

DURATION_S = 15.0


def run() -> dict:
    from aloha_bringup import demo

    with tempfile.TemporaryDirectory(prefix='bench_demo_') as out:
        status = demo.main(['--duration', str(DURATION_S), '--out', out])
        if status != 0:
            raise RuntimeError(f'demo exited with {status}')
        (run_dir,) = Path(out).iterdir()
        report = json.loads((run_dir / 'report.json').read_text())
    report.pop('checkpoint')  # a temporary path
    return report
