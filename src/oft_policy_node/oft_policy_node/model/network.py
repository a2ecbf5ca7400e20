"""The OFT+ network: FiLM vision -> projector -> Llama over patches, proprio, prompt, action slots.

Sequence per sample (L = 1 + N*P + 1 + T + K*D tokens):

    [BOS][N*P patch tokens][proprio token][T prompt tokens, left-padded][K*D action slots]

Bidirectional attention, and why. OFT predicts all K*D actions in ONE forward pass (parallel
decoding). Under the Llama's causal mask, action slot i would only see slots < i, and the last
slots would carry most of the chunk's information; with bidirectional attention every slot sees
the whole observation, the prompt and every other slot, so the chunk is decoded jointly (the
paper's 26x throughput over one token per pass). How, on stock transformers 5: `LlamaModel`
passes a ready-made 4-D mask through `create_causal_mask` untouched, and SDPA/eager then add it
as-is (a 4-D mask also turns SDPA's `is_causal` off). `bidirectional_mask` builds that mask,
(B, 1, 1, L) additive: 0 for real keys, dtype-min for padding keys, identical for every query,
so nothing is causal. No fork, no monkey-patching, every attention backend that accepts a mask.
Padding sits inside the prompt segment; position ids count only real tokens, so a padded
sample sees exactly the positions it would see unpadded.

The action slots are "empty" inputs that differ only by position. The authors feed zeros: then
every slot leaves the first layer with the same state (RMSNorm(0) = 0, so its query is 0, which
attends uniformly whatever RoPE does to it), and RoPE tells the slots apart from the second
layer on, once their states are no longer zero (test_model_policy checks both). That is the
default (`action_slots='zeros'`); `action_slots='learned'` gives each slot a trained embedding
((K*D, H), 0.02-std init), still no content, only position, but distinct from the first layer.
The zeros measured better (docs/model.md); checkpoints saved before the option load as learned.

Real-time chunking (`cfg.prefix_steps` > 0): the first d rows of a chunk may be given, the
targets the robot follows while the model thinks (runtime/action_prefix.py). Their action slots
receive the normalised values on top of their usual input (`ActionPrefixEmbedding`: a "given"
embedding per joint plus a learned per-joint projection of the value); the other rows' slots
are untouched, so d = 0 computes exactly what a model without the option computes, and the
bidirectional attention lets every predicted row read the given ones.

The authors' layout (`cfg.sequence_layout == 'openvla_oft'`, checkpoints imported from
moojink/openvla-oft by import_oft.py) differs in three ways, each from their
prismatic/extern/hf/modeling_prismatic.py: predict_action appends a stop token (`</s>`, id 2)
after the action slots ("needed in non-causal bi-directional self-attention, as it appears at
train time"); FiLM's language vector is the mean over every non-action token, BOS and that stop
token included (`language_embeddings = input_embeddings[~all_actions_mask]`); and the action
head reads the hidden states one position early, from the prompt's last token to the
second-to-last slot (`_regression_or_discrete_prediction` slices from NUM_PATCHES +
NUM_PROMPT_TOKENS, where the slots start one later: the next-token alignment of training,
finetune.py `last_hidden_states[:, num_patches:-1]` against labels[:, 1:]). Their Llama is
bidirectional too: their transformers fork (v4.40.1 + one commit) gives every query the
padding-only mask, as `bidirectional_mask` does here.

The baseline mode (`decode_autoregressive`) is the original OpenVLA decoding on the same
weights: causal attention, one discrete token per forward with a KV cache, greedy over the
`num_action_bins` last ids of the text vocabulary, mapped as OpenVLA's ActionTokenizer
(action_tokens.py). It exists only to measure what parallel decoding buys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from oft_policy_node.model.action_tokens import ActionTokens
from oft_policy_node.model.base_init import BaseInit, base_init
from oft_policy_node.model.config import OftConfig
from oft_policy_node.model.heads import (
    ActionHead,
    ActionPrefixEmbedding,
    ProprioProjector,
    VisionProjector,
)
from oft_policy_node.model.vision import FilmParams, FilmVisionBackbone

# The authors' token ids (sequence_layout='openvla_oft'): prismatic/vla/constants.py STOP_INDEX,
# and the empty token predict_action appends after "Out:" (hard-coded there).
OPENVLA_OFT_STOP_ID = 2
OPENVLA_OFT_EMPTY_ID = 29871


@dataclass
class Conditioning:
    """Everything that depends on the instruction only: computed once, cached per instruction.

    bos (1, 1, H); prompt_embeds (B, T, H) left-padded; prompt_mask (B, T) bool;
    film: the per-block gammas/betas (None when the config turns FiLM off);
    stop (1, 1, H): the token after the action slots (authors' layout only, else None).
    """

    bos: torch.Tensor
    prompt_embeds: torch.Tensor
    prompt_mask: torch.Tensor
    film: FilmParams | None
    stop: torch.Tensor | None = None


@dataclass
class ActionPrefix:
    """Given rows: values (B, K, D) normalised (rows from `steps` on are ignored), steps (B,)
    long, the number of given rows of each sample."""

    values: torch.Tensor
    steps: torch.Tensor


def bidirectional_mask(key_valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) bool of real tokens -> (B, 1, 1, L) additive mask; every query sees every key."""
    mask = torch.zeros(key_valid.shape, dtype=dtype, device=key_valid.device)
    mask = mask.masked_fill(~key_valid, torch.finfo(dtype).min)
    return mask[:, None, None, :]


def build_llm(cfg: OftConfig) -> LlamaForCausalLM:
    c = cfg.llm
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_layers,
            num_attention_heads=c.num_heads,
            num_key_value_heads=c.num_heads,
            max_position_embeddings=c.max_position_embeddings,
            rms_norm_eps=c.rms_norm_eps,
            tie_word_embeddings=False,
            pad_token_id=0,
            attn_implementation='sdpa',
        )
    )


class OftNetwork(nn.Module):
    """The trainable network; pure tensors in and out (no tokenizer, no statistics)."""

    def __init__(self, cfg: OftConfig, init_base: BaseInit = True) -> None:
        """init_base=False: leave the base modules' weights uninitialised, for a caller that
        loads them next (see base_init)."""
        super().__init__()
        self.cfg = cfg
        h = cfg.llm.hidden_size
        self.vision = FilmVisionBackbone(cfg, init_base)
        with base_init(init_base):
            self.projector = VisionProjector(cfg.vision_dim, h)
        self.proprio_projector = ProprioProjector(cfg.proprio_dim, h)
        with base_init(init_base):
            self.llm = build_llm(cfg)
        if cfg.action_slots == 'zeros':  # not saved: nothing about them is learned
            self.register_buffer(
                'action_slots', torch.zeros(cfg.num_action_slots, h), persistent=False
            )
        else:
            self.action_slots = nn.Parameter(torch.randn(cfg.num_action_slots, h) * 0.02)
        self.action_head = ActionHead(cfg.action_dim, h, cfg.action_head_blocks)
        if cfg.prefix_steps > 0:
            self.action_prefix = ActionPrefixEmbedding(cfg.action_dim, h)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the ViT blocks' and Llama layers' activations in backward instead of
        keeping them: for openvla-7b at batch 4 that trades about a third more compute for
        most of the activation memory (docs/model.md, the memory table)."""
        self.vision.gradient_checkpointing = True
        self.llm.activation_checkpointing_enable({'use_reentrant': False})

    def condition(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, bos_token_id: int
    ) -> Conditioning:
        """Prompt ids (B, T) left-padded + mask (B, T) -> text embeddings and FiLM parameters.

        FiLM's language vector is the mean input embedding of the prompt's text tokens
        (template + instruction), never padding, never BOS; in the authors' layout BOS and the
        stop token count too.
        """
        embed = self.llm.get_input_embeddings()
        prompt_embeds = embed(prompt_ids)  # (B, T, H)
        bos = embed(torch.tensor([[bos_token_id]], device=prompt_ids.device))  # (1, 1, H)
        stop = None
        if self.cfg.sequence_layout == 'openvla_oft':
            stop = embed(torch.tensor([[OPENVLA_OFT_STOP_ID]], device=prompt_ids.device))
        film = None
        if self.cfg.use_film:
            w = prompt_mask.to(prompt_embeds.dtype)[..., None]  # (B, T, 1)
            total, count = (prompt_embeds * w).sum(1), w.sum(1)  # (B, H), (B, 1)
            if stop is not None:
                total, count = total + bos[:, 0] + stop[:, 0], count + 2
            film = self.vision.film_params(total / count.clamp(min=1.0))  # mean, (B, H)
        return Conditioning(bos, prompt_embeds, prompt_mask, film, stop)

    def prefix_embeds(
        self, images: torch.Tensor, proprio: torch.Tensor, cond: Conditioning
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, N, 3, S, S), proprio (B, P) -> prefix (B, L0, H) and its validity (B, L0)."""
        b = images.shape[0]
        patches = self.projector(self.vision(images, cond.film))  # (B, N*P, H)
        prop = self.proprio_projector(proprio.to(patches.dtype))[:, None]  # (B, 1, H)
        prompt = cond.prompt_embeds.expand(b, -1, -1)
        seq = torch.cat([cond.bos.expand(b, -1, -1), patches, prop, prompt], dim=1)
        valid = torch.ones(seq.shape[:2], dtype=torch.bool, device=seq.device)
        valid[:, -prompt.shape[1] :] = cond.prompt_mask.expand(b, -1)
        return seq, valid

    def slot_states(
        self,
        images: torch.Tensor,
        proprio: torch.Tensor,
        cond: Conditioning,
        action_prefix: ActionPrefix | None = None,
    ) -> torch.Tensor:
        """(B, N, 3, S, S), (B, P) -> the Llama's last hidden states of the K*D action slots,
        (B, K*D, H): what the action head decodes (and grounding co-training reads)."""
        prefix, valid = self.prefix_embeds(images, proprio, cond)
        b = prefix.shape[0]
        slots = self.action_slots.to(prefix.dtype)[None].expand(b, -1, -1)  # (B, K*D, H)
        if action_prefix is not None and bool((action_prefix.steps > 0).any()):
            slots = self._given_slots(slots, action_prefix)
        parts = [prefix, slots]
        start = prefix.shape[1]  # where the action head reads
        if cond.stop is not None:  # authors' layout: stop token last, read one position early
            parts.append(cond.stop.to(prefix.dtype).expand(b, -1, -1))
            start -= 1
        seq = torch.cat(parts, dim=1)  # (B, L, H)
        valid = torch.cat([valid, valid.new_ones(b, seq.shape[1] - valid.shape[1])], dim=1)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)  # real tokens counted only
        hidden = self.llm.model(
            inputs_embeds=seq,
            position_ids=positions,
            attention_mask=bidirectional_mask(valid, seq.dtype),
            use_cache=False,
        ).last_hidden_state  # (B, L, H)
        return hidden[:, start : start + slots.shape[1]]

    def _given_slots(self, slots: torch.Tensor, given: ActionPrefix) -> torch.Tensor:
        """(B, K*D, H) slots with the given rows' values added (ActionPrefixEmbedding)."""
        cfg = self.cfg
        if cfg.prefix_steps == 0:
            raise ValueError('this model was built without an action prefix (prefix_steps=0)')
        if int(given.steps.max()) > cfg.prefix_steps or int(given.steps.min()) < 0:
            raise ValueError(
                f'given rows {given.steps.tolist()} must be within 0..{cfg.prefix_steps}'
            )
        b, k, d = slots.shape[0], cfg.chunk_size, cfg.action_dim
        steps = given.steps.to(slots.device)
        values = given.values.to(slots.device)
        return self.action_prefix(slots.reshape(b, k, d, -1), values, steps).reshape(b, k * d, -1)

    def decode_slots(self, slot_states: torch.Tensor) -> torch.Tensor:
        """(B, K*D, H) action-slot states -> (B, K, D) normalised actions (the L1 head)."""
        b, k = slot_states.shape[0], self.cfg.chunk_size
        return self.action_head(slot_states.reshape(b, k, -1))  # (B, K, D*H) per step

    def forward(
        self,
        images: torch.Tensor,
        proprio: torch.Tensor,
        cond: Conditioning,
        action_prefix: ActionPrefix | None = None,
    ) -> torch.Tensor:
        """Parallel decoding: (B, N, 3, S, S), (B, P) -> (B, K, D) normalised actions."""
        return self.decode_slots(self.slot_states(images, proprio, cond, action_prefix))

    @torch.inference_mode()
    def decode_autoregressive(
        self, images: torch.Tensor, proprio: torch.Tensor, cond: Conditioning, text_vocab_size: int
    ) -> torch.Tensor:
        """Baseline OpenVLA decoding: causal, KV cache, one action token per forward.

        (1, N, 3, S, S), (1, P) -> (1, K, D) normalised actions (bin centres in [-1, 1]).
        """
        prefix, valid = self.prefix_embeds(images, proprio, cond)
        if not bool(valid.all()):
            raise ValueError('autoregressive baseline decodes unpadded prompts (batch of 1)')
        actions = ActionTokens(text_vocab_size, self.cfg.num_action_bins)
        first = actions.first_id
        out = self.llm(inputs_embeds=prefix, use_cache=True)  # causal by default
        tokens = []
        for step in range(self.cfg.num_action_slots):
            token = out.logits[:, -1, first:text_vocab_size].argmax(-1) + first  # (1,)
            tokens.append(token)
            if step + 1 < self.cfg.num_action_slots:
                out = self.llm(
                    input_ids=token[:, None], past_key_values=out.past_key_values, use_cache=True
                )
        values = actions.decode(torch.stack(tokens, dim=1)).to(prefix.device)  # (1, K*D)
        return values.reshape(1, self.cfg.chunk_size, self.cfg.action_dim)
