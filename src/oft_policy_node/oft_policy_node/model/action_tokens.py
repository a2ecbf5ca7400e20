"""OpenVLA's discrete actions, for the autoregressive baseline decoding.

As OpenVLA's ActionTokenizer (moojink/openvla-oft prismatic/vla/action_tokenizer.py): a
normalised action in [-1, 1] is clipped and put in one of 256 bins by `np.digitize` over 256
uniform edges, which answers 1..256; its token is `vocab_size - bin`, so the text vocabulary's
last 256 ids (Llama-2: 31744..31999) are actions, the highest id the lowest value. A token
decodes to the centre of its bin interval, of which there are 255: `vocab_size - id - 1`,
clipped to 0..254, indexes the centres (bin 256, only reached by exactly 1.0, shares the last).
"""

from __future__ import annotations

import torch


class ActionTokens:
    def __init__(self, vocab_size: int, bins: int = 256) -> None:
        if not 2 <= bins <= vocab_size:
            raise ValueError(f'{bins} action bins do not fit a vocabulary of {vocab_size}')
        self.vocab_size, self.bins = vocab_size, bins
        self.edges = torch.linspace(-1.0, 1.0, bins, dtype=torch.float64)  # (bins,)
        self.centers = (self.edges[:-1] + self.edges[1:]) / 2.0  # (bins - 1,)

    @property
    def first_id(self) -> int:
        """The lowest token id an action uses (the value 1.0)."""
        return self.vocab_size - self.bins

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised actions, any shape -> token ids (long), as ActionTokenizer.__call__."""
        clipped = torch.as_tensor(actions, dtype=torch.float64).clamp(-1.0, 1.0)
        bins = torch.bucketize(clipped, self.edges, right=True)  # np.digitize: 1..bins
        return self.vocab_size - bins

    def decode(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> bin centres (float32), as decode_token_ids_to_actions."""
        index = (self.vocab_size - torch.as_tensor(token_ids) - 1).clamp(0, self.bins - 2)
        return self.centers[index.cpu()].to(torch.float32)
