"""evaluate: open-loop L1 of a checkpoint on held-out episodes, per joint, with plots.

    evaluate --checkpoint runs/pot/final --data datasets/pot --run runs/pot --out runs/pot/eval
    evaluate --checkpoint runs/pot/final --data datasets/pot --episodes put_green_pepper_017

At every tick of an episode the policy predicts a chunk from the recorded observation (the
inference path policy_node uses); its L1 against the recorded next K actions, in robot units
(rad; gripper opening 0..1), is averaged per dimension. `--run` evaluates the validation
episodes of that training run (its seeded split); `--episodes` names them; default: all.
Writes <out>/eval.json and <out>/<episode>.png (recorded vs predicted, 14 panels).

Input reliance: the same chunks are predicted twice more, once with the cameras of another
evaluated episode (same tick, own proprio and instruction) and once with another instruction
of the training set. A policy that looks at its cameras gets worse with a stranger's images;
one that does not scores the same, i.e. it replays trajectories from proprio and instruction.
The episode start is reported apart: there every episode has the same start pose, so only
the cameras can tell one layout from another (which object to reach for).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from oft_policy_node import robot
from oft_policy_node.model import OftPolicy
from oft_training.data.training_set import TrainingSet
from oft_training.training import state

# Predictions of the input-reliance probe, by the input that was swapped.
CAMERAS_SWAPPED = 'cameras_of_another_episode'
INSTRUCTION_SWAPPED = 'another_instruction'


def predict_chunks(
    policy: OftPolicy,
    arrays: dict[str, np.ndarray],
    ticks: np.ndarray,
    instruction: str,
    camera_arrays: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(n, K, D) chunks from `arrays`' proprio at `ticks`; the images come from `camera_arrays`
    (another episode's, its tick clamped to its length) when given, else from `arrays`."""
    cams = arrays if camera_arrays is None else camera_arrays
    names = policy.config.camera_names
    last = len(cams[names[0]]) - 1
    return np.stack(
        [
            policy.predict_action_chunk(
                {cam: np.array(cams[cam][min(t, last)]) for cam in names},
                np.asarray(arrays['proprio'][t]),
                instruction,
            )
            for t in ticks
        ]
    )


def evaluate_episode(
    policy: OftPolicy, data: TrainingSet, number: int, every: int
) -> dict[str, np.ndarray]:
    """Predicted chunks at ticks 0, every, ... with a full recorded chunk ahead, and those with
    swapped inputs (the swaps the evaluated data allows: another episode, another instruction)."""
    arrays = data.episode_arrays(number)
    k = data.chunk_size
    ticks = np.arange(0, len(arrays['actions']) - k + 1, every)
    instruction = data.episodes[number]['instruction']
    result = {
        'ticks': ticks,
        'predicted': predict_chunks(policy, arrays, ticks, instruction),
        'recorded': np.stack([np.asarray(arrays['actions'][t : t + k]) for t in ticks]),
        'actions': np.asarray(arrays['actions']),
    }
    if len(data.episodes) > 1:
        partner = data.episode_arrays((number + 1) % len(data.episodes))
        result[CAMERAS_SWAPPED] = predict_chunks(policy, arrays, ticks, instruction, partner)
    others = [text for text in data.instructions if text != instruction]
    if others:
        result[INSTRUCTION_SWAPPED] = predict_chunks(policy, arrays, ticks, others[0])
    return result


def input_reliance(results: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Mean L1 to the recorded chunks with the recorded inputs and with each swap, over every
    evaluated tick and over the episode starts (tick 0) alone."""
    keys = [
        'predicted',
        *(key for key in (CAMERAS_SWAPPED, INSTRUCTION_SWAPPED) if key in results[0]),
    ]
    report = {}
    for scope, rows in (('all_ticks', slice(None)), ('episode_start', slice(0, 1))):
        report[scope] = {
            'recorded_inputs' if key == 'predicted' else key: float(
                np.mean([np.abs(r[key][rows] - r['recorded'][rows]).mean() for r in results])
            )
            for key in keys
        }
    return report


def reliance_summary(reliance: dict[str, dict[str, float]]) -> str:
    """One printable paragraph: each swap's L1 as a ratio of the recorded inputs' L1."""
    lines = []
    for scope, values in reliance.items():
        base = values['recorded_inputs']
        swaps = ', '.join(
            f'{key.replace("_", " ")} {value:.4f} (x{value / base:.2f})'
            for key, value in values.items()
            if key != 'recorded_inputs'
        )
        lines.append(f'  {scope.replace("_", " ")}: recorded inputs {base:.4f}, {swaps}')
    start = reliance['episode_start']
    if start.get(CAMERAS_SWAPPED, np.inf) < 1.05 * start['recorded_inputs']:
        lines.append(
            '  the policy hardly reacts to its cameras where only they tell the '
            'layouts apart: it replays trajectories from proprio and instruction'
        )
    return 'input reliance (L1 with swapped inputs):\n' + '\n'.join(lines)


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
        ax.plot(
            t_pred,
            result['predicted'][:, 0, dim],
            color='tab:red',
            linestyle='--',
            label='predicted (first action of each chunk)',
        )
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
    p = argparse.ArgumentParser(
        prog='evaluate', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
                raise FileNotFoundError(
                    f'{args.run} has no checkpoints/latest; is it a run folder written by train?'
                )
            names = torch.load(
                folder / state.TRAINER_STATE, map_location='cpu', weights_only=False
            )['split']['val']
            if not names:
                raise ValueError(
                    f'run {args.run} held out no episodes (--val-fraction 0); pass --episodes'
                )
        data = TrainingSet(args.data, names)
        policy = OftPolicy.from_pretrained(args.checkpoint, device=args.device)
        if args.every < 1:
            raise ValueError(f'--every {args.every} must be >= 1')
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f'evaluate: error: {exc}', file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    per_episode, errors, first_errors, results = {}, [], [], []
    for number, episode in enumerate(tqdm(data.episodes, desc='evaluate', unit='episode')):
        result = evaluate_episode(policy, data, number, args.every)
        results.append(result)
        error = np.abs(result['predicted'] - result['recorded'])  # (n, K, D)
        errors.append(error.reshape(-1, error.shape[-1]))
        first_errors.append(error[:, 0])
        per_episode[episode['name']] = {'l1': float(error.mean()), 'chunks': len(error)}
        plot_episode(
            args.out / f'{episode["folder"]}.png',
            episode['name'],
            result,
            data.index['control_rate_hz'],
        )
    all_errors = np.concatenate(errors)
    report = {
        'checkpoint': str(args.checkpoint),
        'data': str(args.data),
        'l1': float(all_errors.mean()),
        'l1_first_action': float(np.concatenate(first_errors).mean()),
        'l1_per_dimension': dict(
            zip(robot.action_joint_names(), all_errors.mean(0).astype(float).tolist(), strict=True)
        ),
        'episodes': per_episode,
        'input_reliance': input_reliance(results),
    }
    (args.out / 'eval.json').write_text(json.dumps(report, indent=2) + '\n')
    width = max(len(n) for n in report['l1_per_dimension'])
    for name, value in report['l1_per_dimension'].items():
        print(f'{name.ljust(width)}  {value:.4f}')
    print(reliance_summary(report['input_reliance']))
    print(
        f'open-loop L1 {report["l1"]:.4f} (first action {report["l1_first_action"]:.4f}) '
        f'over {len(data.episodes)} episode(s); wrote {args.out / "eval.json"} and plots'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
