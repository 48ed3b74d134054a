"""Cutting length-sorted rows into engine calls by rows and by padded tokens (no model needed)."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engines.tokenize import cut_batches


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=128), min_size=0, max_size=300),
    max_batch=st.integers(min_value=1, max_value=64),
    max_tokens=st.none() | st.integers(min_value=1, max_value=4096),
)
def test_cuts_cover_every_row_once_within_both_limits(
    lengths: list[int], max_batch: int, max_tokens: int | None
) -> None:
    """Property: the cuts are consecutive, cover every row once, never exceed max_batch rows, and
    never exceed max_tokens padded tokens unless a single row is longer than the budget."""
    order = np.argsort(lengths, kind="stable")
    cuts = list(cut_batches(order, lengths, max_batch, max_tokens))
    assert np.concatenate(cuts).tolist() if cuts else order.tolist() == []
    for cut in cuts:
        assert 0 < len(cut) <= max_batch
        width = max(lengths[i] for i in cut)
        if max_tokens is not None and len(cut) > 1:
            assert len(cut) * width <= max_tokens
    # Greedy: no cut could have taken the next row without breaking a limit.
    for cut, following in itertools.pairwise(cuts):
        rows = len(cut) + 1
        width = max(lengths[i] for i in [*cut, following[0]])
        assert rows > max_batch or (max_tokens is not None and rows * width > max_tokens)
