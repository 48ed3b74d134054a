"""The commit rule without a broker: offsets move only over inputs whose sends were acknowledged, in
the order batches were taken; a failed send stops all commits; a closed generation counts for nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from stream.delivery import Delivery, Partition
from stream.metrics import WorkerMetrics
from stream.processor import BatchReport, InRecord, Sent


def _records(partition: int, offsets: range, generation: int = 1) -> list[InRecord]:
    return [InRecord(None, b"{}", "in", partition, o, None, generation) for o in offsets]


class _Harness:
    def __init__(self) -> None:
        self.commits: list[dict[Partition, int]] = []
        self.fatal: list[BaseException] = []

        async def commit(offsets: dict[Partition, int]) -> bool:
            self.commits.append(dict(offsets))
            return True

        async def on_fatal(exc: BaseException) -> None:
            self.fatal.append(exc)

        async def emit(sent: Sent, still_ours: Callable[[], bool]) -> Sent:
            return sent  # stage one did the work here: each batch's sends are given whole

        self.delivery: Delivery[Sent] = Delivery(
            commit=commit, emit=emit, metrics=WorkerMetrics(), on_fatal=on_fatal, depth=4, drain_timeout_s=0.5
        )
        self.tasks = [
            asyncio.create_task(self.delivery.run_emitter()),
            asyncio.create_task(self.delivery.run_acker()),
        ]

    def sender(self, acks: list[asyncio.Future[object]]) -> Callable[..., object]:
        async def process(records: Sequence[InRecord], still_ours: Callable[[], bool]) -> Sent:
            return Sent(list(acks), BatchReport(size=len(records)))

        return process

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


def _future(result: BaseException | None = None) -> asyncio.Future[object]:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    if isinstance(result, BaseException):
        future.set_exception(result)
    elif result is None:
        future.set_result(None)
    return future


async def test_offsets_move_only_over_acknowledged_batches_in_the_order_taken() -> None:
    """Batch 2 is acknowledged before batch 1: nothing is committed until batch 1 is, then both."""
    h = _Harness()
    h.delivery.assigned(1)
    slow: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    await h.delivery.handle(_records(0, range(0, 5)), h.sender([slow]))  # type: ignore[arg-type]
    await h.delivery.handle(_records(0, range(5, 9)), h.sender([_future()]))  # type: ignore[arg-type]
    await h.settle()
    assert await h.delivery.commit_now() is True
    assert h.commits == []
    slow.set_result(None)
    await h.settle()
    await h.delivery.commit_now()
    assert h.commits == [{("in", 0): 9}]
    await h.delivery.commit_now()
    assert h.commits == [{("in", 0): 9}]  # nothing new, nothing sent
    h.close()


async def test_a_failed_send_stops_every_later_commit_and_ends_the_worker() -> None:
    """A send Kafka refused: on_fatal runs, and neither that batch nor any later one is committed,
    even once acknowledged; later batches are not even processed."""
    h = _Harness()
    h.delivery.assigned(1)
    await h.delivery.handle(_records(0, range(0, 3)), h.sender([_future()]))  # type: ignore[arg-type]
    await h.settle()
    await h.delivery.commit_now()
    await h.delivery.handle(_records(0, range(3, 6)), h.sender([_future(RuntimeError("topic gone"))]))  # type: ignore[arg-type]
    await h.settle()
    processed: list[int] = []

    async def later(records: Sequence[InRecord], still_ours: Callable[[], bool]) -> Sent:
        processed.append(len(records))
        return Sent([_future()], BatchReport(size=len(records)))

    await h.delivery.handle(_records(0, range(6, 9)), later)
    await h.settle()
    await h.delivery.commit_now()
    await h.delivery.release("shutdown")
    assert h.commits == [{("in", 0): 3}]
    assert [type(e) for e in h.fatal] == [RuntimeError]
    assert processed == []
    assert h.delivery.failed
    h.close()


async def test_an_exception_while_processing_is_fatal_not_skipped() -> None:
    """A batch whose processing raises (a send refused synchronously) is never committed."""
    h = _Harness()
    h.delivery.assigned(1)

    async def boom(records: Sequence[InRecord], still_ours: Callable[[], bool]) -> Sent:
        raise OSError("broker unreachable past the time-out")

    await h.delivery.handle(_records(1, range(0, 4)), boom)
    await h.delivery.commit_now()
    assert h.commits == []
    assert len(h.fatal) == 1
    h.close()


async def test_a_closed_generation_counts_for_nothing() -> None:
    """After a revocation, a batch of the old generation that completes late is not committed, and
    records fetched in the old generation are dropped unprocessed (they are read again)."""
    h = _Harness()
    h.delivery.assigned(1)
    late: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    await h.delivery.handle(_records(0, range(0, 4)), h.sender([late]))  # type: ignore[arg-type]
    await h.delivery.release("rebalance")  # drain times out after 0.5 s: the batch is given up
    h.delivery.assigned(2)
    late.set_result(None)
    await h.settle()
    processed: list[int] = []

    async def count(records: Sequence[InRecord], still_ours: Callable[[], bool]) -> Sent:
        processed.append(len(records))
        return Sent([_future()], BatchReport(size=len(records)))

    await h.delivery.handle(_records(0, range(4, 8), generation=1), count)
    await h.delivery.handle(_records(0, range(0, 2), generation=2), count)
    await h.settle()
    await h.delivery.commit_now()
    assert processed == [2]
    assert h.commits == [{("in", 0): 2}]
    h.close()


async def test_a_rebalance_waits_for_the_batch_in_flight_and_commits_it() -> None:
    """release() on a revocation lets the batch in flight finish, commits it, then closes."""
    h = _Harness()
    h.delivery.assigned(1)
    pending: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    await h.delivery.handle(_records(2, range(10, 20)), h.sender([pending]))  # type: ignore[arg-type]
    asyncio.get_running_loop().call_later(0.1, pending.set_result, None)
    await h.delivery.release("rebalance")
    assert h.commits == [{("in", 2): 20}]
    assert h.delivery.tracker.generation is None
    h.close()
