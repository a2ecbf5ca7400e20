"""Run the project's benchmarks and write one JSON file per benchmark to bench_results/.

Every module `bench/bench_<name>.py` is a benchmark: it defines `run() -> dict` returning its
metrics (JSON-serialisable) and a docstring saying what it measures; one that sets
`ONLY_WHEN_NAMED = True` (the 15 GB openvla7b_real_size) runs only when named. The harness adds the
machine (CPU count, GPU if any), the versions of the stack's main dependencies, the time and the
git commit, and writes `bench_results/<name>.json`.

    python -m bench                 # all but the ones that run only when named
    python -m bench dds_observation # only some
    python -m bench --list
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from bench.machine import describe_machine

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR.parent / 'bench_results'


def available() -> list[str]:
    return sorted(p.stem.removeprefix('bench_') for p in BENCH_DIR.glob('bench_*.py'))


def _only_when_named(name: str) -> bool:
    return bool(getattr(importlib.import_module(f'bench.bench_{name}'), 'ONLY_WHEN_NAMED', False))


def run_one(name: str, out_dir: Path) -> bool:
    module = importlib.import_module(f'bench.bench_{name}')
    print(f'== {name}: {(module.__doc__ or "").strip().splitlines()[0]}', flush=True)
    started = time.time()
    try:
        metrics = module.run()
    except Exception:  # one broken benchmark must not hide the others' results
        traceback.print_exc()
        print(f'== {name}: FAILED', flush=True)
        return False
    result = {
        'benchmark': name,
        'description': (module.__doc__ or '').strip(),
        'started': time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(started)),
        'duration_s': round(time.time() - started, 2),
        'machine': describe_machine(),
        'metrics': metrics,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f'{name}.json'
    path.write_text(json.dumps(result, indent=2) + '\n')
    print(json.dumps(metrics, indent=2))
    print(f'== {name}: wrote {path}', flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m bench',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('names', nargs='*', help='benchmarks to run (default: all)')
    parser.add_argument('--list', action='store_true', help='list the benchmarks and exit')
    parser.add_argument('--out', type=Path, default=RESULTS_DIR, help='result folder')
    args = parser.parse_args(argv)
    names = available()
    if args.list:
        print('\n'.join(names))
        return 0
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        parser.error(f'unknown benchmark(s) {unknown}; available: {names}')
    chosen = args.names or [n for n in names if not _only_when_named(n)]
    if not args.names:
        print(f'not run unless named: {sorted(set(names) - set(chosen))}', flush=True)
    failed = [n for n in chosen if not run_one(n, args.out)]
    if failed:
        print(f'failed benchmarks: {failed}', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
