"""Training throughput of `train` (samples per second, median step after warm-up) for the
`small` preset on this machine's CPU (or GPU when there is one), batch 8, augmentation on:
float32 and bf16 autocast (where the CPU has bf16 arithmetic), each eager and under
torch.compile, and float32 with one DataLoader worker process, side by side on the same data.
`<run>_speedup` is that run's samples/s over the eager float32 run's (data loaded in the
training process, `train`'s defaults). The warm-up steps absorb the compilation."""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import torch

from oft_training.convert import main as convert
from oft_training.testing import BagSpec, write_bag
from oft_training.training.config import TrainConfig
from oft_training.training.loop import run as train
from oft_training.training.metrics_log import METRICS_FILE
from oft_training.training.precision import cpu_bf16_flags

PRESET, BATCH, STEPS, WARMUP = 'small', 8, 16, 6  # warm-up: compilation
RUNS = (  # name, precision, DataLoader workers, torch.compile
    ('float32', 'float32', 0, False),
    ('bfloat16', 'bfloat16', 0, False),
    ('float32_1_worker', 'float32', 1, False),
    ('float32_compiled', 'float32', 0, True),
    ('bfloat16_compiled', 'bfloat16', 0, True),
)


def median_step_s(root: Path, name: str, precision: str, workers: int, compile: bool) -> float:
    out = root / name
    train(
        TrainConfig(
            data=str(root / 'set'),
            out=str(out),
            preset=PRESET,
            steps=STEPS,
            batch_size=BATCH,
            val_fraction=0.0,
            save_every=STEPS,
            precision=precision,
            workers=workers,
            compile=compile,
        )
    )
    lines = (out / METRICS_FILE).read_text().splitlines()
    return statistics.median([json.loads(line)['step_s'] for line in lines][WARMUP:])


def run() -> dict:
    cuda = torch.cuda.is_available()
    results: dict = {
        'preset': PRESET,
        'device': 'cuda' if cuda else 'cpu',
        'cpu_bf16': cpu_bf16_flags(),
        'batch_size': BATCH,
        'timed_steps': STEPS - WARMUP,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(2):
            write_bag(root / 'demos' / f'episode_{i}', BagSpec(image_shape=(120, 160)))
        assert convert([str(root / 'demos'), '--out', str(root / 'set'), '--preset', PRESET]) == 0
        for name, precision, workers, compile in RUNS:
            if precision == 'bfloat16' and not (cuda or results['cpu_bf16']):
                continue
            step_s = median_step_s(root, name, precision, workers, compile)
            results[name] = {
                'median_step_s': round(step_s, 3),
                'samples_per_s': round(BATCH / step_s, 2),
            }
    base = results['float32']['samples_per_s']
    for name, _, _, _ in RUNS[1:]:
        if name in results:
            results[f'{name}_speedup'] = round(results[name]['samples_per_s'] / base, 2)
    return results
