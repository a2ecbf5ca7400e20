"""Whether building the network initialises the base modules' weights.

The base modules (both ViTs, the projector, the Llama) are overwritten whole by a base OpenVLA
checkpoint (`openvla_weights.load_openvla_base`) or by a saved policy (`checkpoint.load_state`
refuses a file that lacks any tensor), so loading skips their random initialisation: for
openvla-7b on two CPU cores that initialisation took 141 s of a 147 s `from_openvla`. Buffers
(RoPE frequencies, position ids) are computed in the modules' constructors, not by the init
functions, so they are the same either way (tested).
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager


def base_init(enabled: bool) -> AbstractContextManager[None]:
    """Build inside this: with enabled=False torch's and transformers' weight init do nothing,
    and the weights hold whatever memory they were given until they are loaded."""
    if enabled:
        return contextlib.nullcontext()
    from transformers.initialization import no_init_weights

    return no_init_weights()
