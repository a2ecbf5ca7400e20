"""The policy a training run starts from: the preset with its tokenizer and the data's
statistics, the base OpenVLA weights, a pretrained vision backbone or all the weights of a
trained policy, and the checks that the data fits it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from oft_policy_node.model import checkpoint
from oft_policy_node.model.base_init import materialize_meta
from oft_policy_node.model.config import get_preset
from oft_policy_node.model.network import OftNetwork
from oft_policy_node.model.normalization import NormStats
from oft_policy_node.model.openvla_weights import load_openvla_base
from oft_policy_node.model.policy import OftPolicy
from oft_policy_node.model.tokenizer import load_tokenizer
from oft_training.data.training_set import TrainingSet
from oft_training.training import state
from oft_training.vision_pretraining import load_backbone

PREFIX_WEIGHTS = ('action_prefix.given', 'action_prefix.value')
CPU = torch.device('cpu')


def build_policy(
    config_name: str,
    base: str | None,
    stats: NormStats,
    instructions: Sequence[str],
    no_film: bool = False,
    init_vision: str | None = None,
    action_slots: str | None = None,
    prefix_steps: int = 0,
    device: torch.device = CPU,
    base_dtype: torch.dtype = torch.float32,
    trainable_dtype: torch.dtype = torch.float32,
) -> OftPolicy:
    """The policy to train, on `device`. With a base checkpoint its weights are built on the
    meta device and streamed from the shards straight into `base_dtype` storage on `device`
    (bf16 for openvla-7b: 15 GB per GPU where a float32 host build took 34 GB of host memory
    per rank); what trains is then cast to `trainable_dtype`. Without one (the CPU presets) the
    policy is built and initialised on the host in float32, as it always was."""
    config = get_preset(config_name)
    if no_film:
        config = config.replace(use_film=False)
    if action_slots is not None:
        config = config.replace(action_slots=action_slots)
    if prefix_steps:
        config = config.replace(prefix_steps=prefix_steps)
    tokenizer = load_tokenizer(config.tokenizer, base, config.num_action_bins)
    if base is None:
        policy = OftPolicy(config, tokenizer=tokenizer, stats=stats, instructions=instructions).to(
            device
        )
    else:

        def load_base(network: OftNetwork) -> None:
            materialize_meta(network, device, base_dtype)
            load_openvla_base(network, base)

        with device:  # the modules fine-tuning adds are initialised there, in float32
            policy = OftPolicy(
                config,
                tokenizer=tokenizer,
                stats=stats,
                instructions=instructions,
                load_base=load_base,
            )
        for param in policy.parameters():
            if param.requires_grad:
                param.data = param.data.to(trainable_dtype)
        policy.base_checkpoint = Path(base)  # saves refer to it (training/state.py)
    if init_vision is not None:
        metrics = load_backbone(init_vision, policy.network.vision, config)
        print(
            f'train: vision backbone from {init_vision} (held-out localisation error, cm: '
            f'{metrics.get("error_cm")})'
        )
    return policy


def init_policy_weights(policy: OftPolicy, folder: Path) -> dict:
    """Load every network weight of a trained policy into `policy` (fine-tuning a trained
    policy on new demos). `folder`: a policy folder (`final`) or a training checkpoint
    (`checkpoints/step_N`), whose trainer state is returned (else {}): with --grounding its
    head starts where that run left it. The new data's normalisation statistics are kept."""
    is_training_checkpoint = (folder / state.TRAINER_STATE).is_file()
    weights_dir = folder / state.POLICY_DIR if is_training_checkpoint else folder
    if not (weights_dir / checkpoint.WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f'--init-policy {folder}: neither a policy folder (with '
            f'{checkpoint.WEIGHTS_FILE}) nor a training checkpoint'
        )
    saved = checkpoint.read_config(weights_dir)
    mine = policy.config
    if (saved.name, saved.use_film) != (mine.name, mine.use_film):
        raise ValueError(
            f'--init-policy {folder} is preset {saved.name!r} with '
            f'use_film={saved.use_film}; this run builds {mine.name!r} with '
            f'use_film={mine.use_film}'
        )
    if saved.prefix_steps and not mine.prefix_steps:
        raise ValueError(
            f'--init-policy {folder} was trained with an action prefix (prefix_steps='
            f'{saved.prefix_steps}); pass --prefix-steps to keep it'
        )
    # A policy trained without an action prefix gains one: its embedding starts fresh.
    fresh = PREFIX_WEIGHTS if mine.prefix_steps and not saved.prefix_steps else ()
    print(
        f'train: all weights from {weights_dir}'
        + (' (the action-prefix embedding starts fresh)' if fresh else '')
    )
    if is_training_checkpoint:
        return state.load(folder, policy, fresh)
    state.load_weights(weights_dir, policy, fresh)
    return {}


def check_data(data: TrainingSet, policy: OftPolicy) -> None:
    cfg = policy.config
    if data.chunk_size != cfg.chunk_size:
        raise ValueError(
            f'{data.root} was converted for K={data.chunk_size} but preset '
            f'{cfg.name!r} has K={cfg.chunk_size}; re-run convert --preset '
            f'{cfg.name}'
        )
    missing = [c for c in cfg.camera_names if c not in data.cameras]
    if missing:
        raise ValueError(f'{data.root} lacks cameras {missing} that preset {cfg.name!r} uses')
