"""Which language instructions the policy accepts at run time (ROS-free)."""

from __future__ import annotations

from collections.abc import Collection

MAX_INSTRUCTION_LENGTH = 256  # characters after trimming (SetInstruction.srv)


def validate_instruction(text: str, known: Collection[str], allow_unknown: bool) -> str:
    """The trimmed instruction, or ValueError saying why it cannot be followed."""
    instruction = text.strip()
    if not instruction:
        raise ValueError('the instruction is empty; send e.g. "put green pepper into pot"')
    if len(instruction) > MAX_INSTRUCTION_LENGTH:
        raise ValueError(
            f'the instruction has {len(instruction)} characters, at most '
            f'{MAX_INSTRUCTION_LENGTH} are allowed'
        )
    if not instruction.isprintable():
        bad = sorted({repr(ch) for ch in instruction if not ch.isprintable()})
        raise ValueError(f'the instruction contains non-printable characters {", ".join(bad)}')
    if not allow_unknown and instruction not in known:
        raise ValueError(
            f'{instruction!r} was not seen in training; known instructions: '
            f'{sorted(known)} (or set allow_unknown_instructions:=true)'
        )
    return instruction
