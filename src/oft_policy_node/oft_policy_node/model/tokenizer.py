"""Text tokenisation: a deterministic byte tokenizer for the small presets, Llama for real use.

Both expose the same small interface (`PromptTokenizer`): `encode(text) -> ids` without special
tokens, `bos_token_id`, `pad_token_id` and `vocab_size`, the size of the text vocabulary whose
last `num_action_bins` ids the baseline autoregressive decoding uses as action tokens (as
OpenVLA overwrites Llama's 256 least-used tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from oft_policy_node.model.checkpoint import CheckpointError

EMPTY_TOKEN = '\u2581'  # '▁', SentencePiece's word-start marker


class PromptTokenizer(Protocol):
    bos_token_id: int
    pad_token_id: int
    vocab_size: int
    prompt_suffix: list[int]  # ids every prompt ends with

    def encode(self, text: str) -> list[int]: ...


class ByteTokenizer:
    """UTF-8 bytes -> ids 3..258; 0 pad, 1 BOS, 2 EOS; ids 259..514 are the 256 action bins.

    Needs no file or download and never changes, so tiny checkpoints stay reproducible.
    """

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    _offset = 3
    prompt_suffix: list[int] = []  # nothing: the small presets' prompts end at "Out:"

    def __init__(self, num_action_bins: int = 256) -> None:
        self.vocab_size = self._offset + 256 + num_action_bins

    def encode(self, text: str) -> list[int]:
        return [b + self._offset for b in text.encode('utf-8')]


class HfTokenizer:
    """The Llama tokenizer stored in a checkpoint directory (transformers AutoTokenizer).

    `encode` leaves BOS out: the network puts BOS's embedding first in the sequence itself,
    ahead of the image patches, as OpenVLA's prompt `<s>In: What action...` has it.
    """

    def __init__(self, directory: str | Path) -> None:
        from transformers import AutoTokenizer  # heavy; only real checkpoints need it
        from transformers.utils import logging as hf_logging

        directory = Path(directory)
        # Without these files AutoTokenizer does not fail: it builds an empty Llama tokenizer
        # (3 ids) or one without special tokens, which would only break much later.
        missing = [
            name
            for name in ('tokenizer_config.json', 'tokenizer.json')
            if not (directory / name).is_file()
        ]
        if 'tokenizer.json' in missing and (directory / 'tokenizer.model').is_file():
            missing.remove('tokenizer.json')  # SentencePiece file (needs `sentencepiece`)
        if missing:
            raise CheckpointError(
                f'{directory}: no tokenizer, missing {missing}; copy the '
                'tokenizer files from the base OpenVLA checkpoint'
            )
        # A run folder of the authors' code also holds OpenVLA's config.json, which AutoTokenizer
        # reads and warns about (a model type it does not know): not a tokenizer problem.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            self._tok = AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f'{directory}: unusable tokenizer files: {exc}') from exc
        finally:
            hf_logging.set_verbosity(verbosity)
        if self._tok.bos_token_id is None:
            raise CheckpointError(
                f'{directory / "tokenizer_config.json"}: the tokenizer has no '
                'BOS token; copy the file from the base OpenVLA checkpoint'
            )
        self.bos_token_id = self._tok.bos_token_id
        self.pad_token_id = (
            self._tok.pad_token_id
            if self._tok.pad_token_id is not None
            else self._tok.unk_token_id or 0
        )
        self.vocab_size = self._tok.vocab_size  # 32000 for Llama-2 (without added pad)
        # OpenVLA's predict_action appends the empty token after "Out:" (id 29871 hard-coded:
        # Llama-2's '▁', SentencePiece's word-start piece), as its training prompts had it.
        empty = self._tok.convert_tokens_to_ids(EMPTY_TOKEN)
        if empty is None or empty == self._tok.unk_token_id:
            raise CheckpointError(
                f'{directory}: the tokenizer has no {EMPTY_TOKEN!r} token, which OpenVLA '
                'prompts end with; copy the tokenizer files from the base OpenVLA checkpoint'
            )
        self.prompt_suffix = [empty]

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)['input_ids'])

    def save(self, directory: str | Path) -> None:
        self._tok.save_pretrained(str(directory))


def load_tokenizer(kind: str, directory: str | Path | None, num_action_bins: int):
    """The tokenizer a config asks for; 'pretrained' reads it from `directory`."""
    if kind == 'bytes':
        return ByteTokenizer(num_action_bins)
    if directory is None:
        raise ValueError(
            "tokenizer='pretrained' needs a checkpoint directory; use "
            'OftPolicy.from_pretrained(directory) or pass tokenizer=...'
        )
    return HfTokenizer(directory)
