"""Training throughput of `train` (samples per second, median step after warm-up) for the
`small` preset on this machine's CPU (or GPU when there is one), batch 8, augmentation on."""

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

PRESET, BATCH, STEPS, WARMUP = 'small', 8, 6, 2


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(2):
            write_bag(root / 'demos' / f'episode_{i}', BagSpec(image_shape=(120, 160)))
        assert convert([str(root / 'demos'), '--out', str(root / 'set'), '--preset', PRESET]) == 0
        train(
            TrainConfig(
                data=str(root / 'set'),
                out=str(root / 'run'),
                preset=PRESET,
                steps=STEPS,
                batch_size=BATCH,
                val_fraction=0.0,
                save_every=STEPS,
            )
        )
        lines = (root / 'run' / METRICS_FILE).read_text().splitlines()
        step_s = [json.loads(line)['step_s'] for line in lines][WARMUP:]
    median = statistics.median(step_s)
    return {
        'preset': PRESET,
        'device': 'cuda' if torch.cuda.is_available() else 'cpu',
        'batch_size': BATCH,
        'timed_steps': len(step_s),
        'median_step_s': round(median, 3),
        'samples_per_s': round(BATCH / median, 2),
    }
