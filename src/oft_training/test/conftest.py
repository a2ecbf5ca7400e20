"""A small converted training set shared by the training and evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from oft_training.convert import main as convert
from oft_training.testing import BagSpec, write_bag

INSTRUCTIONS = ('put green pepper into pot', 'put red pepper into pot', 'put yellow corn into pot')


@pytest.fixture(scope='session')
def training_set(tmp_path_factory) -> Path:
    """Three 2 s episodes (26 samples each at K = 25), one instruction each, tiny image size."""
    root = tmp_path_factory.mktemp('demos')
    for i, text in enumerate(INSTRUCTIONS):
        write_bag(
            root / f'episode_{i}', BagSpec(instruction=text, start_ns=(1000 + 10 * i) * 10**9)
        )
    out = root / 'set'
    assert convert([str(root), '--out', str(out), '--preset', 'tiny']) == 0
    return out
