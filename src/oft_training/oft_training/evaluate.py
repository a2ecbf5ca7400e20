"""evaluate: open-loop L1 of a checkpoint on held-out episodes, per joint, with plots.

    evaluate --checkpoint runs/pot/final --data datasets/pot --run runs/pot --out runs/pot/eval
    evaluate --checkpoint runs/pot/final --data datasets/pot --episodes put_green_pepper_017

At every tick of an episode the policy predicts a chunk from the recorded observation (the
inference path policy_node uses); its L1 against the recorded next K actions, in robot units
(rad; gripper opening 0..1), is averaged per dimension. `--run` evaluates the validation
episodes of that training run (its seeded split); `--episodes` names them; default: all.
Writes <out>/eval.json and <out>/<episode>.png (recorded vs predicted, 14 panels).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from oft_policy_node import robot
from oft_policy_node.model import OftPolicy
from tqdm import tqdm

from oft_training.data.training_set import TrainingSet
from oft_training.training import state


def evaluate_episode(policy: OftPolicy, data: TrainingSet, number: int, every: int
                     ) -> dict[str, np.ndarray]:
    """Predicted chunks at ticks 0, every, ... with a full recorded chunk ahead."""
    arrays = data.episode_arrays(number)
    k = data.chunk_size
    ticks = np.arange(0, len(arrays['actions']) - k + 1, every)
    instruction = data.episodes[number]['instruction']
    predicted = np.stack([policy.predict_action_chunk(
        {cam: np.array(arrays[cam][t]) for cam in policy.config.camera_names},
        np.asarray(arrays['proprio'][t]), instruction) for t in ticks])  # (n, K, D)
    recorded = np.stack([np.asarray(arrays['actions'][t:t + k]) for t in ticks])  # (n, K, D)
    return {'ticks': ticks, 'predicted': predicted, 'recorded': recorded,
            'actions': np.asarray(arrays['actions'])}


def plot_episode(path: Path, name: str, result: dict[str, np.ndarray], rate_hz: float) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = robot.action_joint_names()
    fig, axes = plt.subplots(7, 2, figsize=(12, 14), sharex=True)
    t_all = np.arange(len(result['actions'])) / rate_hz
    t_pred = result['ticks'] / rate_hz
    for dim, ax in enumerate(axes.T.reshape(-1)):
        ax.plot(t_all, result['actions'][:, dim], color='black', label='recorded')
        ax.plot(t_pred, result['predicted'][:, 0, dim], color='tab:red', linestyle='--',
                label='predicted (first action of each chunk)')
        ax.set_title(names[dim], fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel('s')
    fig.suptitle(f'{name}: recorded vs predicted joint targets')
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='evaluate', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--checkpoint', required=True, type=Path, help='policy checkpoint folder')
    p.add_argument('--data', required=True, type=Path, help='training set folder')
    p.add_argument('--out', required=True, type=Path, help='folder for eval.json and plots')
    which = p.add_mutually_exclusive_group()
    which.add_argument('--run', type=Path, help='training run: evaluate its validation split')
    which.add_argument('--episodes', nargs='+', help='episode names to evaluate')
    p.add_argument('--every', type=int, default=1, help='predict at every N-th tick')
    p.add_argument('--device', default='cpu')
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        names = args.episodes
        if args.run is not None:
            folder = state.latest(args.run)
            if folder is None:
                raise FileNotFoundError(f'{args.run} has no checkpoints/latest; is it a run '
                                        'folder written by train?')
            names = torch.load(folder / state.TRAINER_STATE, map_location='cpu',
                               weights_only=False)['split']['val']
            if not names:
                raise ValueError(f'run {args.run} held out no episodes (--val-fraction 0); '
                                 'pass --episodes')
        data = TrainingSet(args.data, names)
        policy = OftPolicy.from_pretrained(args.checkpoint, device=args.device)
        if args.every < 1:
            raise ValueError(f'--every {args.every} must be >= 1')
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f'evaluate: error: {exc}', file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    per_episode, errors, first_errors = {}, [], []
    for number, episode in enumerate(tqdm(data.episodes, desc='evaluate', unit='episode')):
        result = evaluate_episode(policy, data, number, args.every)
        error = np.abs(result['predicted'] - result['recorded'])  # (n, K, D)
        errors.append(error.reshape(-1, error.shape[-1]))
        first_errors.append(error[:, 0])
        per_episode[episode['name']] = {'l1': float(error.mean()), 'chunks': len(error)}
        plot_episode(args.out / f'{episode["folder"]}.png', episode['name'], result,
                     data.index['control_rate_hz'])
    all_errors = np.concatenate(errors)
    report = {
        'checkpoint': str(args.checkpoint), 'data': str(args.data),
        'l1': float(all_errors.mean()),
        'l1_first_action': float(np.concatenate(first_errors).mean()),
        'l1_per_dimension': dict(zip(robot.action_joint_names(),
                                     all_errors.mean(0).astype(float).tolist(), strict=True)),
        'episodes': per_episode,
    }
    (args.out / 'eval.json').write_text(json.dumps(report, indent=2) + '\n')
    width = max(len(n) for n in report['l1_per_dimension'])
    for name, value in report['l1_per_dimension'].items():
        print(f'{name.ljust(width)}  {value:.4f}')
    print(f'open-loop L1 {report["l1"]:.4f} (first action {report["l1_first_action"]:.4f}) '
          f'over {len(data.episodes)} episode(s); wrote {args.out / "eval.json"} and plots')
    return 0


if __name__ == '__main__':
    sys.exit(main())
