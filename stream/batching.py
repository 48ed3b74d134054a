"""Adaptive batching: a batch is whatever has arrived, never a wait for a batch to fill.

The agent puts every record it reads into a bounded queue (the intake); the batcher takes the first
record as soon as there is one and, with it, everything else already waiting, up to ``max_size``.
When the engine is idle a lone message goes through at once; under load, records pile up while the
engine works on the previous batch, so batches grow exactly as large as the load makes them — and
the engine gets everything in flight to sort by length and cut by tokens. ``linger_s`` (0 by
default) optionally waits that long for more once a batch has started, for sparse traffic where a
larger batch matters more than a millisecond.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

T = TypeVar("T")


async def next_batch(queue: asyncio.Queue[T], max_size: int, linger_s: float = 0.0) -> list[T]:
    """The next batch from ``queue``: at least one item, at most ``max_size``."""
    batch = [await queue.get()]
    deadline = time.monotonic() + linger_s
    while len(batch) < max_size:
        if not queue.empty():
            batch.append(queue.get_nowait())
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            batch.append(await asyncio.wait_for(queue.get(), left))
        except TimeoutError:
            break
    return batch
