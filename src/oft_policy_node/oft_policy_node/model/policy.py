"""`OftPolicy`: the network + tokenizer + normalisation statistics, with the fixed policy API.

Inference: `predict_action_chunk(images, proprio, instruction) -> (K, D)` in robot units.
Training: `loss, metrics = policy(batch)` with the batch dict

    batch = {
        'images':       float tensor (B, N, 3, S, S) in [0, 1], cameras in config.camera_names
                        order, already augmented (`processing.augment_images` per sample),
        'proprio':      float tensor (B, P), normalised to [-1, 1] (`NormStats.normalize_proprio`),
        'actions':      float tensor (B, K, D), normalised to [-1, 1]
                        (`NormStats.normalize_actions`),
        'instructions': list of B strings (the raw instruction; the template is added here),
        'prefix_steps': optional long tensor (B,): the first d rows of 'actions' are given to
                        the model (real-time chunking, config.prefix_steps > 0),
    }

    loss:    scalar L1 between predicted and target normalised actions (differentiable), over
             the rows that are not given;
    metrics: {'l1': float, 'l1_first_action': float (the first predicted step, the one that is
             executed first)}.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oft_policy_node.model import checkpoint
from oft_policy_node.model.config import OftConfig
from oft_policy_node.model.lora import apply_lora, parameter_table, set_trainable
from oft_policy_node.model.network import (
    OPENVLA_OFT_EMPTY_ID,
    ActionPrefix,
    Conditioning,
    OftNetwork,
)
from oft_policy_node.model.normalization import NormStats
from oft_policy_node.model.openvla_oft_run import RunOptions, collect_run, is_oft_run, prepare_run
from oft_policy_node.model.processing import observation_pixels
from oft_policy_node.model.tokenizer import ByteTokenizer, HfTokenizer, load_tokenizer

DECODING_MODES = ('parallel', 'autoregressive')
BASE_WEIGHTS_MODES = ('full', 'reference')
_CACHE_SIZE = 32  # instructions whose text embedding + FiLM parameters stay cached


class OftPolicy(nn.Module):
    """OpenVLA-OFT+ policy. Random init from a config; `from_pretrained` for checkpoints."""

    def __init__(
        self,
        config: OftConfig,
        *,
        tokenizer: Any = None,
        stats: NormStats | None = None,
        instructions: Sequence[str] = (),
        init_base: bool = True,
        load_base: Callable[[OftNetwork], None] | None = None,
    ) -> None:
        """init_base=False: the base weights stay uninitialised for a caller that loads them
        next (from_openvla, from_pretrained; model/base_init.py). `load_base`: the base
        parameters are built on the meta device instead, and this is called to give them
        storage and values before LoRA wraps them (peft puts adapters on their base layer's
        device and dtype), so a base is only ever allocated where and as it will stay."""
        super().__init__()
        self.config = config
        self.network = OftNetwork(config, 'meta' if load_base is not None else init_base)
        if load_base is not None:
            load_base(self.network)
        if config.lora_rank:
            apply_lora(self.network, config)
        set_trainable(self.network, config)
        if tokenizer is None and config.tokenizer == 'bytes':
            tokenizer = ByteTokenizer(config.num_action_bins)
        if tokenizer is not None:
            _check_tokenizer(tokenizer, config)
        self._tokenizer = tokenizer
        self.stats = stats
        self.instructions = tuple(instructions)
        # The OpenVLA directory the frozen base weights came from (from_openvla, or a checkpoint
        # saved with base_weights='reference'); the default for save_pretrained's reference.
        self.base_checkpoint: Path | None = None
        self._conditioning_cache: OrderedDict[str, Conditioning] = OrderedDict()

    # ---- properties -------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            raise RuntimeError(
                "this config uses tokenizer='pretrained': load the policy with "
                'OftPolicy.from_pretrained(directory) or pass tokenizer=...'
            )
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self.network.action_slots.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.action_slots.dtype

    def parameter_table(self) -> str:
        return parameter_table(self.network)

    # ---- text -------------------------------------------------------------------------------
    def prompt(self, instruction: str) -> str:
        """OpenVLA's prompt: `In: What action should the robot take to {instruction.lower()}?
        \nOut:` (vla-scripts/deploy.py; instructions arrive stripped, validated upstream)."""
        return self.config.instruction_template.format(instruction.lower())

    def tokenize(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """B instructions -> prompt ids (B, T) left-padded and their mask (B, T) bool; each
        prompt ends with the tokenizer's `prompt_suffix` (Llama: the empty token 29871 that
        OpenVLA's predict_action appends after "Out:")."""
        tok = self.tokenizer
        suffix = tok.prompt_suffix
        if self.config.sequence_layout == 'openvla_oft':
            suffix = [OPENVLA_OFT_EMPTY_ID]  # the authors hard-code the id, whatever tokenizer
        ids = [tok.encode(self.prompt(text)) + suffix for text in instructions]
        length = max(len(i) for i in ids)
        out = torch.full((len(ids), length), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), length), dtype=torch.bool)
        for row, seq in enumerate(ids):
            out[row, length - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, length - len(seq) :] = True
        return out.to(self.device), mask.to(self.device)

    def conditioning(self, instruction: str) -> Conditioning:
        """Text embedding + FiLM gammas/betas of one instruction, cached (LRU)."""
        cond = self._conditioning_cache.get(instruction)
        if cond is None:
            with torch.inference_mode():
                cond = self.network.condition(
                    *self.tokenize([instruction]), self.tokenizer.bos_token_id
                )
            self._conditioning_cache[instruction] = cond
            if len(self._conditioning_cache) > _CACHE_SIZE:
                self._conditioning_cache.popitem(last=False)
        self._conditioning_cache.move_to_end(instruction)
        return cond

    def quantize(self, mode: str) -> int:
        """Weight-only quantization for inference, in place: 'none', 'int8' or 'int4' (CUDA)
        (model/quantization.py); returns how many linear layers were quantized."""
        from oft_policy_node.model.quantization import quantize_llm

        count = quantize_llm(self.network, mode)
        self.reset()
        return count

    def reset(self) -> None:
        """Forget cached per-instruction conditioning (weights changed, new episode)."""
        self._conditioning_cache.clear()

    def train(self, mode: bool = True) -> OftPolicy:
        self.reset()  # cached conditioning would go stale as soon as the weights move
        return super().train(mode)

    # ---- inference --------------------------------------------------------------------------
    def predict_action_chunk(
        self,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray,
        instruction: str,
        decoding: str = 'parallel',
        prefix: np.ndarray | None = None,
    ) -> np.ndarray:
        """One chunk: {camera: (H, W, 3) uint8 RGB}, (P,) robot units, text -> (K, D) float32.

        Robot units: arm joints in rad, grippers as normalised opening 0 closed .. 1 open, in
        the layout of `robot.action_joint_names()`. `prefix`: (d, D) given first rows (robot
        units, d <= config.prefix_steps), returned as they are, the rest predicted after them.
        Bad input raises ValueError naming it.
        """
        if self.stats is None:
            raise RuntimeError(
                'no normalisation statistics: load a checkpoint with '
                'OftPolicy.from_pretrained or set policy.stats'
            )
        if decoding not in DECODING_MODES:
            raise ValueError(f'decoding={decoding!r}; expected one of {DECODING_MODES}')
        instruction = _check_instruction(instruction)
        proprio = _check_proprio(proprio, self.config.proprio_dim)
        given = _check_prefix(prefix, self.config)
        if len(given) and decoding != 'parallel':
            raise ValueError('an action prefix needs parallel decoding')
        cfg = self.config
        pixels = observation_pixels(images, cfg)[None].to(
            self.device, self.dtype
        )  # (1, N, 3, S, S)
        prop = torch.from_numpy(self.stats.normalize_proprio(proprio))[None].to(
            self.device, self.dtype
        )
        cond = self.conditioning(instruction)
        action_prefix = None
        if len(given):
            values = np.zeros((1, cfg.chunk_size, cfg.action_dim), np.float32)
            values[0, : len(given)] = self.stats.normalize_actions(given)
            action_prefix = ActionPrefix(
                torch.from_numpy(values).to(self.device, self.dtype),
                torch.tensor([len(given)], device=self.device),
            )
        with torch.inference_mode():
            if decoding == 'parallel':
                normalized = self.network(pixels, prop, cond, action_prefix)  # (1, K, D)
            else:
                normalized = self.network.decode_autoregressive(
                    pixels, prop, cond, self.tokenizer.vocab_size
                )
        actions = self.stats.unnormalize_actions(normalized[0].float().cpu().numpy())
        actions[: len(given)] = given  # what the robot follows meanwhile, as it was given
        return actions

    # ---- training ---------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training step forward: see the module docstring for the batch format."""
        self._check_batch(batch, ('images', 'proprio', 'actions', 'instructions'))
        steps = batch.get('prefix_steps')
        action_prefix = None
        if steps is not None:
            # Training gives each sample its recorded first rows: the committed targets the
            # robot would follow while the model thinks.
            action_prefix = ActionPrefix(batch['actions'].to(self.device, self.dtype), steps)
        return self.action_loss(self._slot_states(batch, action_prefix), batch['actions'], steps)

    def encode(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """'images', 'proprio', 'instructions' of a batch -> action-slot states (B, K*D, H)."""
        self._check_batch(batch, ('images', 'proprio', 'instructions'))
        return self._slot_states(batch)

    def _check_batch(self, batch: Mapping[str, Any], keys: tuple[str, ...]) -> None:
        """Every key present and shaped for the config, before any forward pass."""
        cfg = self.config
        missing = [k for k in keys if k not in batch]
        if missing:
            raise ValueError(f'batch lacks {missing}; see oft_policy_node.model.policy')
        b = batch['images'].shape[0]
        expect = {
            'images': (b, len(cfg.camera_names), 3, cfg.image_size, cfg.image_size),
            'proprio': (b, cfg.proprio_dim),
            'actions': (b, cfg.chunk_size, cfg.action_dim),
        }
        for key in (k for k in keys if k in expect):
            if tuple(batch[key].shape) != expect[key]:
                raise ValueError(
                    f'batch[{key!r}] has shape {tuple(batch[key].shape)}, expected {expect[key]}'
                )
        if len(batch['instructions']) != b:
            raise ValueError(
                f"batch['instructions'] has {len(batch['instructions'])} "
                f'entries for a batch of {b}'
            )

    def _slot_states(
        self, batch: Mapping[str, Any], action_prefix: ActionPrefix | None = None
    ) -> torch.Tensor:
        cond = self.network.condition(
            *self.tokenize(batch['instructions']), self.tokenizer.bos_token_id
        )
        return self.network.slot_states(
            batch['images'].to(self.device, self.dtype),
            batch['proprio'].to(self.device, self.dtype),
            cond,
            action_prefix,
        )

    def action_loss(
        self, slots: torch.Tensor, actions: torch.Tensor, prefix_steps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Slot states (B, K*D, H) and target normalised actions (B, K, D) -> L1 and metrics;
        the first `prefix_steps` (B,) rows of each sample were given and are not counted."""
        pred = self.network.decode_slots(slots)  # (B, K, D)
        l1 = (pred.float() - actions.to(self.device).float()).abs()  # (B, K, D)
        b, k, _ = l1.shape
        steps = torch.zeros(b, dtype=torch.long, device=l1.device)
        if prefix_steps is not None:
            steps = prefix_steps.to(l1.device).long()
        predicted = torch.arange(k, device=l1.device)[None] >= steps[:, None]  # (B, K)
        weights = predicted[..., None].to(l1.dtype)  # (B, K, 1)
        loss = (l1 * weights).sum() / (weights.sum() * l1.shape[2])
        first = l1[torch.arange(b, device=l1.device), steps.clamp(max=k - 1)]  # (B, D)
        return loss, {'l1': loss.item(), 'l1_first_action': first.mean().item()}

    # ---- checkpoints ------------------------------------------------------------------------
    def save_pretrained(
        self,
        directory: str | Path,
        stats: NormStats | None = None,
        instructions: Sequence[str] | None = None,
        *,
        base_weights: str = 'full',
        base_checkpoint: str | Path | None = None,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write the checkpoint directory (layout in `checkpoint`); returns it.

        base_weights='full' (default) writes every tensor. 'reference' (LoRA configs only)
        writes just the fine-tuned tensors (`openvla_weights.fine_tuned_keys`) plus a reference
        to the base OpenVLA directory `base_checkpoint` (default: the one this policy's base
        weights were loaded from); `from_pretrained` then reads the base from there first.
        Saving checks that the base's norms and biases equal this model's, so a reference to
        the wrong base is refused here rather than discovered at load time. `state`: the
        network's tensors when its own state dict does not hold them whole (training gathers
        them from FSDP shards): those to save and, with 'reference', every 1-D base tensor.
        """
        from oft_policy_node.model import openvla_weights

        stats = stats if stats is not None else self.stats
        if stats is None:
            raise ValueError('save_pretrained needs stats=NormStats(...) (none set on the policy)')
        if base_weights not in BASE_WEIGHTS_MODES:
            raise ValueError(
                f'base_weights={base_weights!r}; expected one of {BASE_WEIGHTS_MODES}'
            )
        instructions = tuple(instructions) if instructions is not None else self.instructions
        state = dict(self.network.state_dict() if state is None else state)
        if base_weights == 'reference':
            base = self._reference_base(base_checkpoint)
            openvla_weights.check_base_matches(state, base)
            state = {k: state[k] for k in openvla_weights.fine_tuned_keys(state)}
        elif base_checkpoint is not None:
            raise ValueError(
                f'base_checkpoint={str(base_checkpoint)!r} is only used with '
                "base_weights='reference'"
            )
        path = checkpoint.write_checkpoint(directory, self.config, state, stats, instructions)
        if base_weights == 'reference':
            openvla_weights.write_reference(path, base)
        else:  # a stale reference would make from_pretrained treat the full file as an overlay
            (path / openvla_weights.REFERENCE_FILE).unlink(missing_ok=True)
        if isinstance(self._tokenizer, HfTokenizer):
            self._tokenizer.save(path)
        return path

    def _reference_base(self, base_checkpoint: str | Path | None) -> Path:
        if not self.config.lora_rank:
            raise ValueError(
                f"base_weights='reference' needs a LoRA config; {self.config.name!r}"
                ' has lora_rank=0, so every weight trains: save it in full'
            )
        base = base_checkpoint if base_checkpoint is not None else self.base_checkpoint
        if base is None:
            raise ValueError(
                "base_weights='reference' needs base_checkpoint=<the OpenVLA "
                'directory the base weights were loaded from>'
            )
        return Path(base)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | torch.device = 'cpu',
        dtype: torch.dtype | None = None,
        compile: bool = False,
    ) -> OftPolicy:
        """Load a checkpoint directory. dtype default: bfloat16 on CUDA, float32 elsewhere.

        A checkpoint saved with base_weights='reference' first loads the base OpenVLA weights
        from the directory its base_checkpoint.json names, then its own tensors on top. A run
        folder of the authors' finetune.py loads as `from_oft_run` with its defaults.
        Raises `checkpoint.CheckpointError` (a ValueError) naming the file and tensor.
        """
        from oft_policy_node.model.openvla_weights import (
            fine_tuned_keys,
            load_openvla_base,
            read_reference,
        )

        directory = Path(directory)
        if not directory.is_dir():
            raise checkpoint.CheckpointError(f'{directory}: not a checkpoint directory')
        if is_oft_run(directory):
            return cls.from_oft_run(directory, device=device, dtype=dtype, compile=compile)
        config = checkpoint.read_config(directory)
        stats = checkpoint.read_stats(directory)
        instructions = checkpoint.read_instructions(directory)
        weights = checkpoint.read_weights(directory)
        base = read_reference(directory)
        tokenizer = load_tokenizer(config.tokenizer, directory, config.num_action_bins)
        _check_stats(stats, config, directory)
        policy = cls._build(config, tokenizer, stats, device, dtype, init_base=False)
        policy.instructions = instructions
        source = str(directory / checkpoint.WEIGHTS_FILE)
        if base is None:
            checkpoint.load_state(policy.network, weights, source)
        else:
            load_openvla_base(policy.network, base)
            checkpoint.load_state(
                policy.network, weights, source, only=fine_tuned_keys(policy.network.state_dict())
            )
            policy.base_checkpoint = base
        policy.eval()
        if compile:
            policy.network.compile()
        return policy

    @classmethod
    def from_oft_run(
        cls,
        directory: str | Path,
        device: str | torch.device = 'cpu',
        dtype: torch.dtype | None = None,
        compile: bool = False,
        options: RunOptions | None = None,
        instructions: Sequence[str] = (),
    ) -> OftPolicy:
        """A run folder written by the authors' finetune.py (model/openvla_oft_run.py): every
        tensor mapped and checked, built directly on `device` in `dtype`; options: what the
        folder alone does not say (default: its only step and dataset, merged, centre crop)."""
        options = options or RunOptions()
        run, config, stats, tokenizer = prepare_run(directory, options)
        policy = cls._build(config, tokenizer, stats, device, dtype, init_base=False)
        policy.instructions = tuple(instructions)
        targets = dict(policy.network.state_dict(keep_vars=True))
        with torch.no_grad():
            for name, tensor in collect_run(run, config, options.base):
                targets[name].copy_(tensor)
        policy.eval()
        if compile:
            policy.network.compile()
        return policy

    @classmethod
    def from_openvla(
        cls,
        directory: str | Path,
        stats: NormStats | None = None,
        config: OftConfig | None = None,
        device: str | torch.device = 'cpu',
        dtype: torch.dtype | None = None,
    ) -> OftPolicy:
        """Start fine-tuning from a base OpenVLA checkpoint directory (`openvla/openvla-7b`).

        Built directly on `device` in `dtype` (`_build`); base weights from the shards, FiLM /
        proprio / head / LoRA freshly initialised; tokenizer from the same directory when the
        config asks. Remembers `directory` as the default for base_weights='reference'.
        """
        from oft_policy_node.model.config import get_preset
        from oft_policy_node.model.openvla_weights import load_openvla_base

        config = config or get_preset('openvla-7b')
        tokenizer = load_tokenizer(config.tokenizer, directory, config.num_action_bins)
        policy = cls._build(config, tokenizer, stats, device, dtype, init_base=False)
        load_openvla_base(policy.network, directory)
        policy.base_checkpoint = Path(directory)
        return policy

    @classmethod
    def _build(
        cls,
        config: OftConfig,
        tokenizer: Any,
        stats: NormStats | None,
        device: str | torch.device,
        dtype: torch.dtype | None,
        init_base: bool = True,
    ) -> OftPolicy:
        """A policy built directly on `device` in `dtype` (default: bfloat16 on CUDA, float32
        elsewhere), so a 7B model is never materialised twice before its weights are loaded."""
        device = torch.device(device)
        dtype = dtype or (torch.bfloat16 if device.type == 'cuda' else torch.float32)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with device:
                policy = cls(config, tokenizer=tokenizer, stats=stats, init_base=init_base)
        finally:
            torch.set_default_dtype(previous)
        return policy.to(device)  # any tensor a module created on an explicit device


def _check_tokenizer(tokenizer: Any, config: OftConfig) -> None:
    """Every id the prompt can hold must index the Llama's embedding table."""
    rows = config.llm.vocab_size
    ids = {
        'bos_token_id': tokenizer.bos_token_id,
        'pad_token_id': tokenizer.pad_token_id,
        'vocab_size - 1': tokenizer.vocab_size - 1,
    }
    too_big = {name: value for name, value in ids.items() if not 0 <= value < rows}
    if too_big:
        raise ValueError(
            f'tokenizer ids {too_big} do not fit the Llama embedding table of '
            f'config.llm.vocab_size={rows}: use the tokenizer the model was built '
            'for, or a config whose llm.vocab_size covers it'
        )
    if tokenizer.vocab_size < config.num_action_bins:
        raise ValueError(
            f'tokenizer vocab_size={tokenizer.vocab_size} is smaller than '
            f'config.num_action_bins={config.num_action_bins}'
        )


def _check_stats(stats: NormStats, config: OftConfig, directory: Path) -> None:
    if stats.action_min.shape != (config.action_dim,) or stats.proprio_min.shape != (
        config.proprio_dim,
    ):
        raise checkpoint.CheckpointError(
            f'{directory / "norm_stats.json"}: action stats have {stats.action_min.shape[0]} '
            f'dims and proprio {stats.proprio_min.shape[0]}; config.json says action_dim='
            f'{config.action_dim}, proprio_dim={config.proprio_dim}'
        )


def _check_instruction(instruction: object) -> str:
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f'instruction must be a non-empty string, got {instruction!r}')
    return instruction


def _check_prefix(prefix: object, config: OftConfig) -> np.ndarray:
    """(d, D) finite given rows, d <= config.prefix_steps; (0, D) for None."""
    if prefix is None:
        return np.zeros((0, config.action_dim), np.float32)
    arr = np.asarray(prefix, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != config.action_dim:
        raise ValueError(f'prefix must be (d, {config.action_dim}), got shape {arr.shape}')
    if len(arr) > config.prefix_steps:
        raise ValueError(
            f'prefix has {len(arr)} rows; this policy takes at most prefix_steps='
            f'{config.prefix_steps} (0: trained without an action prefix)'
        )
    if not np.isfinite(arr).all():
        raise ValueError('prefix has non-finite values')
    return arr


def _check_proprio(proprio: object, dim: int) -> np.ndarray:
    arr = np.asarray(proprio)
    if arr.shape != (dim,) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(
            f'proprio must be a ({dim},) numeric array, got shape {arr.shape} dtype {arr.dtype}'
        )
    bad = [i for i in range(dim) if not math.isfinite(float(arr[i]))]
    if bad:
        raise ValueError(f'proprio has non-finite values at dims {bad}: {arr.tolist()}')
    return arr.astype(np.float32)
