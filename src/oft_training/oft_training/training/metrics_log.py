"""What a training run logs: metrics.jsonl, TensorBoard and a progress bar (main process only),
and the cut back to a checkpoint's step when a run resumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from oft_training.training.distributed import World

METRICS_FILE = 'metrics.jsonl'


def truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after the checkpoint a run resumes from (they will be redone)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)['step'] <= step
    ]
    path.write_text(''.join(line + '\n' for line in kept))


class MetricsLogger:
    """metrics.jsonl + TensorBoard + a tqdm bar, on the main process only."""

    def __init__(self, out: Path, world: World, start: int, total: int) -> None:
        self.main = world.is_main
        if not self.main:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.jsonl = (out / METRICS_FILE).open('a')
        self.tb = SummaryWriter(str(out / 'tensorboard'), purge_step=start + 1)
        self.bar = tqdm(total=total, initial=start, desc='train', unit='step', file=sys.stderr)

    def log(self, metrics: dict) -> None:
        if not self.main:
            return
        self.jsonl.write(json.dumps(metrics) + '\n')
        self.jsonl.flush()
        for key, value in metrics.items():
            if key != 'step' and value is not None:
                self.tb.add_scalar(
                    f'{"val" if key.startswith("val") else "train"}/{key}', value, metrics['step']
                )
        self.bar.set_postfix(loss=f'{metrics["loss"]:.4f}', lr=f'{metrics["lr"]:.1e}')
        self.bar.update(1)

    def close(self) -> None:
        if self.main:
            self.bar.close()
            self.tb.close()
            self.jsonl.close()
