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
    max_padding=st.none() | st.floats(min_value=0, max_value=3),
    sort=st.booleans(),
)
def test_cuts_cover_every_row_once_within_every_limit(
    lengths: list[int], max_batch: int, max_tokens: int | None, max_padding: float | None, sort: bool
) -> None:
    """Property: the cuts are consecutive, cover every row once, never exceed max_batch rows, and
    never exceed max_tokens padded tokens or max_padding's share of pad tokens unless the cut is a
    single row."""
    order = np.argsort(lengths, kind="stable") if sort else np.arange(len(lengths))
    cuts = list(cut_batches(order, lengths, max_batch, max_tokens, max_padding))
    assert (np.concatenate(cuts).tolist() if cuts else []) == order.tolist()
    for cut in cuts:
        assert 0 < len(cut) <= max_batch
        width = max(lengths[i] for i in cut)
        if len(cut) > 1:
            assert max_tokens is None or len(cut) * width <= max_tokens
            real = sum(lengths[i] for i in cut)
            assert max_padding is None or len(cut) * width <= (1 + max_padding) * real
    # Greedy: no cut could have taken the next row without breaking a limit.
    for cut, following in itertools.pairwise(cuts):
        taken = [*cut, following[0]]
        rows, width, real = len(taken), max(lengths[i] for i in taken), sum(lengths[i] for i in taken)
        assert (
            rows > max_batch
            or (max_tokens is not None and rows * width > max_tokens)
            or (max_padding is not None and rows * width > (1 + max_padding) * real)
        )


def test_a_padding_cap_keeps_mixed_lengths_apart() -> None:
    """Sorted lengths 5, 5, 6, 20: with at most half as many pad tokens as real ones the 20-token
    row gets its own call (4 × 20 = 80 > 1.5 × 36), without a cap all four share one."""
    lengths = [20, 5, 6, 5]
    order = np.argsort(lengths, kind="stable")
    assert [c.tolist() for c in cut_batches(order, lengths, 64, None, 0.5)] == [[1, 3, 2], [0]]
    assert [c.tolist() for c in cut_batches(order, lengths, 64, None)] == [[1, 3, 2, 0]]
