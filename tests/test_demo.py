"""`make demo` end to end: sim + policy_node + chunk_executor as separate processes over DDS,
watched by the demo monitor, with a short run writing the report, the video and the plot."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ros_fixtures import REPO_ROOT

pytestmark = pytest.mark.ros  # the demo graph: sim, policy_node and chunk_executor over DDS

REPORT_KEYS = {
    'instruction',
    'scene',
    'sim_seconds',
    'wall_seconds',
    'real_time_factor',
    'ticks',
    'control_rate_hz',
    'stalled_ticks',
    'clamped_ticks',
    'waiting_ticks',
    'tracking_faults',
    'tracking_error_peak',
    'tracking_error_peak_joint',
    'chunks',
    'inference_latency_s',
    'success',
}


# The sim waits for the wall clock at a quarter of real time: the graph's work (inference, the
# monitor's video) then costs a quarter of the sim time it costs at full speed, so what this
# test asserts in sim time holds on a loaded machine too (the same code runs at any factor).
REAL_TIME_FACTOR = 0.25


@pytest.mark.slow
def test_short_demo_writes_a_report(tmp_path):
    duration = 3.0
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'aloha_bringup.demo',
            '--task',
            'put red pepper into pot',
            '--duration',
            str(duration),
            '--real-time-factor',
            str(REAL_TIME_FACTOR),
            '--out',
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    report = json.loads((run_dir / 'report.json').read_text())

    assert REPORT_KEYS <= set(report)
    assert report['instruction'] == 'put red pepper into pot'
    assert report['scene'] == 'put_x_into_pot'
    # No checkpoint given: the trained one committed under checkpoints/<scene> is the default.
    assert report['policy_trained'] is True
    assert 'UNTRAINED' not in result.stdout
    # The window closes at the monitor's first look past the duration (at full speed on two
    # loaded cores it once looked 2.1 sim-s late: 0.5 s at this factor).
    assert duration - 0.1 <= report['sim_seconds'] <= duration + 3.0
    # The factor is the sim's own: both ends of the window are /clock messages paired with the
    # wall time DDS received them (not when a busy monitor got to them).
    assert 0.0 < report['real_time_factor'] <= REAL_TIME_FACTOR * 1.05
    # Stalls are counted, not bounded: whether a chunk comes in time depends on the machine's
    # latency (eval_sim measures them; docs/results.md). At this factor a CI run on Jazzy saw 5.
    assert isinstance(report['stalled_ticks'], int) and report['stalled_ticks'] >= 0
    assert report['tracking_faults'] == 0  # the new checks at their defaults never trip here
    # At most 25 Hz of sim time (fewer when a loaded CPU makes /clock jump past a tick).
    assert 0 < report['ticks'] <= 25 * duration + 1
    assert report['control_rate_hz'] == pytest.approx(
        report['ticks'] / report['sim_seconds'], abs=0.01
    )
    assert report['chunks'] >= 1
    latency = report['inference_latency_s']
    assert 0.0 < latency['p50'] <= latency['p95'] <= latency['max']
    assert (run_dir / 'joints.png').stat().st_size > 10_000
    # 10 frames per sim second, from best-effort 480x640 camera topics (sensor-data QoS): a
    # loaded CPU drops some (at full speed 20 of 30 were written in one full-suite run).
    assert report['video_frames'] >= 5 * duration
    assert (run_dir / 'cameras.mp4').stat().st_size > 10_000
    assert 'Traceback' not in result.stdout + result.stderr
    control = next(line for line in result.stdout.splitlines() if 'control:' in line)
    assert f'{report["stalled_ticks"]} stalled, {report["held_ticks"]} held' in control
    assert f'wrote {run_dir}/report.json, cameras.mp4' in result.stdout


def _children(pid: int) -> list[int]:
    path = Path(f'/proc/{pid}/task/{pid}/children')
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != 'Z'


@pytest.mark.slow
def test_sigterm_stops_every_node_and_still_writes_the_report(tmp_path):
    """`kill PID` on the demo (what CI timeouts and process managers send) takes the Ctrl-C
    path: the sim, policy and executor it started stop too, and the report is written."""
    proc = subprocess.Popen(
        [sys.executable, '-m', 'aloha_bringup.demo', '--duration', '120', '--out', str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(_children(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    nodes = _children(proc.pid)
    assert len(nodes) == 3, 'the demo did not start its three nodes'
    time.sleep(3.0)  # let the nodes get past their start-up
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-3000:]
    assert not [pid for pid in nodes if _alive(pid)], 'nodes left running after SIGTERM'
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / 'report.json').read_text())['scene'] == 'put_x_into_pot'
