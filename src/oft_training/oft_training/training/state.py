"""Training checkpoints: the policy (loadable by policy_node) + everything needed to resume.

    <out>/checkpoints/step_0000300/policy/           OftPolicy.save_pretrained (weights, config,
                                                     stats, instructions)
    <out>/checkpoints/step_0000300/trainer_state.pt  step, optimizer, scheduler, RNG states,
                                                     the run settings and the episode split
    <out>/checkpoints/latest                         name of the newest complete checkpoint

A checkpoint is written to a temporary folder and renamed into place, and `latest` is updated
last, so a run killed while saving resumes from the previous complete checkpoint.

A run fine-tuning a base checkpoint (train --base) saves what trains only: the frozen base stays
where it is, named in the policy folder's base_checkpoint.json (save_pretrained's 'reference'),
so each save of openvla-7b writes 3.4 GB of weights and 6.7 GB of AdamW states (float32)
instead of a 33 GB float32 model. Under DDP every rank holds the same optimizer state, so the
main rank writes it once; resuming loads the base from --base (a setting frozen on resume)
and the saved tensors on top.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from oft_policy_node.model import checkpoint, openvla_weights
from oft_policy_node.model.policy import OftPolicy

TRAINER_STATE = 'trainer_state.pt'
POLICY_DIR = 'policy'
LATEST = 'latest'


def rng_state() -> dict:
    state = {
        'python': random.getstate(),
        'numpy': np.random.get_state(),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def staging(out: Path, step: int) -> Path:
    """Where checkpoint `step` is written before it is renamed into place."""
    return Path(out) / 'checkpoints' / f'.step_{step:07d}.tmp'


def write(
    out: Path,
    step: int,
    policy: OftPolicy,
    trainer_state: dict,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint `step` (policy + trainer_state) into its staging folder; `weights`:
    the network's tensors when they are not its own (gathered from FSDP shards)."""
    tmp = staging(out, step)
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp / POLICY_DIR, base_weights=base_weights(policy), state=weights)
    torch.save({**trainer_state, 'step': step, 'rng': rng_state()}, tmp / TRAINER_STATE)
    return tmp


def commit(out: Path, step: int, keep: int) -> Path:
    """Rename the staged checkpoint `step` into place, point `latest` at it and keep only the
    newest `keep`."""
    root = Path(out) / 'checkpoints'
    final = root / f'step_{step:07d}'
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging(out, step), final)
    latest_tmp = root / (LATEST + '.tmp')
    latest_tmp.write_text(final.name + '\n')
    os.replace(latest_tmp, root / LATEST)
    for old in sorted(root.glob('step_*'))[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def save(out: Path, step: int, policy: OftPolicy, trainer_state: dict, keep: int) -> Path:
    """Write checkpoint `step` (policy + trainer_state) and keep only the newest `keep`."""
    write(out, step, policy, trainer_state)
    return commit(out, step, keep)


def base_weights(policy: OftPolicy) -> str:
    """'reference' for a LoRA fine-tune of a base checkpoint, else 'full'."""
    return 'reference' if policy.base_checkpoint and policy.config.lora_rank else 'full'


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    pointer = Path(out) / 'checkpoints' / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    if not (folder / TRAINER_STATE).is_file():
        raise FileNotFoundError(
            f'{pointer} names {folder}, which has no {TRAINER_STATE}; '
            'delete the pointer to resume from an older checkpoint'
        )
    return folder


def load(folder: Path, policy: OftPolicy, fresh: tuple[str, ...] = ()) -> dict:
    """Load weights into `policy` (exactly, every tensor but `fresh`) and return the trainer
    state."""
    load_weights(folder / POLICY_DIR, policy, fresh)
    return torch.load(folder / TRAINER_STATE, map_location='cpu', weights_only=False)


def load_weights(weights_dir: Path, policy: OftPolicy, fresh: tuple[str, ...] = ()) -> None:
    """Load a saved policy folder's weights into `policy`: exactly, every tensor but the ones
    named in `fresh` (new parts that keep their initial values). A folder that holds its base by
    reference gets that base loaded first, unless `policy` was built from it already."""
    expected = set(policy.network.state_dict())
    base = openvla_weights.read_reference(weights_dir)
    if base is not None:
        if policy.base_checkpoint is None or Path(policy.base_checkpoint).resolve() != base:
            openvla_weights.load_openvla_base(policy.network, base)
            policy.base_checkpoint = base
        expected = set(openvla_weights.fine_tuned_keys(expected))
    checkpoint.load_state(
        policy.network,
        checkpoint.read_weights(weights_dir),
        str(weights_dir / checkpoint.WEIGHTS_FILE),
        only=expected - set(fresh),
    )
