"""Adaptive batching: a lone message goes at once, a backlog goes whole (up to the cap)."""

from __future__ import annotations

import asyncio

from stream.batching import next_batch


async def test_a_lone_message_is_not_held_back() -> None:
    """With nothing else waiting, the batch is the one message, taken without delay."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    assert await asyncio.wait_for(next_batch(queue, 128), 0.05) == [1]


async def test_everything_that_arrived_goes_in_one_batch_up_to_the_cap() -> None:
    """A backlog of 300 is taken as 128, 128 and 44, in order."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(300):
        queue.put_nowait(i)
    batches = [await next_batch(queue, 128) for _ in range(3)]
    assert [len(b) for b in batches] == [128, 128, 44]
    assert [i for b in batches for i in b] == list(range(300))


async def test_linger_waits_for_more_once_a_batch_started() -> None:
    """With a linger, messages arriving shortly after the first join its batch."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(0)
    loop = asyncio.get_running_loop()
    for i in (1, 2):
        loop.call_later(0.01 * i, queue.put_nowait, i)
    assert await next_batch(queue, 128, linger_s=0.2) == [0, 1, 2]
