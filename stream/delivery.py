"""parley owns its commits: an offset is committed only when the output or DLQ record of that input,
and of every earlier input of its partition, has been acknowledged by the broker.

faust's own acking is switched off for the input topic (``acks=False``): faust neither records nor
commits its offsets, and its rebalance and shutdown paths wait for nothing of ours. Instead:

- the batcher hands every batch to :meth:`Delivery.handle`, which prepares it (decode, infer) and
  queues it for the emitter (:meth:`Delivery.run_emitter`: state, sends), which queues its send
  futures for the acker — three stages, so the engine works on batch k+1 while batch k is sent and
  batch k-1 is acknowledged;
- one acker awaits each batch's futures **in the order the batches were taken** and then marks its
  offsets done in the :class:`CommitTracker`, so per partition the committable offset only moves
  over inputs whose records Kafka holds;
- a committer commits what is done every ``commit_interval_s``, on a rebalance (after the batches
  in flight finish, bounded by ``drain_timeout_s``) and on shutdown;
- a send Kafka does not acknowledge (the output topic unwritable past the producer's retries) is
  fatal: nothing more is committed, the worker stops consuming and exits non-zero, and the inputs
  from the last commit on are read again by whoever gets the partitions. A crash loop beats a
  silent skip.

Rebalances are handled by generation: the tracker is open for one consumer-group generation at a
time. A revocation drains, commits and closes it; records fetched in a closed generation are
dropped unprocessed (they are read again from the committed offset), and a batch still in flight
when its generation closed is neither sent (if it had not been) nor committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from stream.metrics import WorkerMetrics
from stream.processor import InRecord, Sent

log = structlog.get_logger(__name__)

Partition = tuple[str, int]
Commit = Callable[[dict[Partition, int]], Awaitable[bool]]
"""commit({(topic, partition): next_offset}) → True when Kafka stored the offsets."""
P = TypeVar("P")
StillOurs = Callable[[], bool]
Prepare = Callable[[Sequence[InRecord], StillOurs], Awaitable[P | None]]
"""Stage one of a batch (decode, infer); None when it stopped being ours before it was done."""
Emit = Callable[[P, StillOurs], Awaitable[Sent]]
"""Stage two (state, sends), in the order batches were prepared."""


class CommitTracker:
    """Per partition, the offset after the last input whose records Kafka acknowledged."""

    def __init__(self) -> None:
        self.generation: int | None = None
        self._done: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}
        self.failed: BaseException | None = None

    def open(self, generation: int) -> None:
        """A new assignment: positions restart from the committed offsets."""
        self.generation = generation
        self._done.clear()
        self._committed.clear()

    def close(self) -> None:
        """The assignment ends: nothing done from now on counts."""
        self.generation = None

    def owns(self, generation: int) -> bool:
        return self.failed is None and self.generation is not None and generation == self.generation

    def done(self, generation: int, records: Sequence[InRecord]) -> None:
        """Every record of a batch was acknowledged; batches arrive here in the order taken."""
        if not self.owns(generation):
            return
        for r in records:
            tp = (r.topic, r.partition)
            if r.offset + 1 > self._done.get(tp, -1):
                self._done[tp] = r.offset + 1

    def to_commit(self) -> dict[Partition, int]:
        if self.failed is not None:
            return {}
        return {tp: o for tp, o in self._done.items() if self._committed.get(tp) != o}

    def committed(self, offsets: dict[Partition, int]) -> None:
        self._committed.update(offsets)


@dataclass(slots=True)
class _InFlight:
    records: Sequence[InRecord]
    generation: int
    sent: Sent


class Delivery(Generic[P]):
    """The stages, acker and committer of one worker (see the module docstring)."""

    def __init__(
        self,
        *,
        commit: Commit,
        emit: Emit[P],
        metrics: WorkerMetrics,
        on_fatal: Callable[[BaseException], Awaitable[None]],
        depth: int = 2,
        commit_interval_s: float = 1.0,
        drain_timeout_s: float = 20.0,
        on_delivered: Callable[[Sequence[InRecord]], None] = lambda records: None,
    ) -> None:
        self.tracker = CommitTracker()
        self._commit = commit
        self._emit = emit
        self._to_emit: asyncio.Queue[tuple[Sequence[InRecord], int, P]] = asyncio.Queue(maxsize=1)
        self.metrics = metrics
        self._on_fatal = on_fatal
        self.commit_interval_s = commit_interval_s
        self.drain_timeout_s = drain_timeout_s
        self._on_delivered = on_delivered
        self._queue: asyncio.Queue[_InFlight] = asyncio.Queue(maxsize=depth)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = False
        self._commit_lock = asyncio.Lock()
        self.kafka_ok = False

    # -- the agent's side ---------------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return self.tracker.failed is not None

    def assigned(self, generation: int) -> None:
        self.tracker.open(generation)
        self._accepting = True
        self.kafka_ok = True

    async def handle(self, records: Sequence[InRecord], prepare: Prepare[P]) -> None:
        """Prepare one batch and queue it for the emitter. Never raises: a failure that cannot be
        confined to one record stops the worker without committing."""
        if self.failed:
            return
        mine = [r for r in records if self._accepting and self.tracker.owns(r.generation)]
        if len(mine) < len(records):
            log.info(
                "records of a revoked assignment dropped unprocessed; they will be read again",
                dropped=len(records) - len(mine),
            )
        if not mine:
            return
        generation = mine[0].generation
        self._begin()
        try:
            # A batch started before a drain is finished (and committed) by it; it is abandoned only
            # once its generation closed, i.e. after the drain gave up on it.
            prepared = await prepare(mine, self._still_ours(generation))
        except Exception as exc:
            self._end()
            await self.fail(exc)
            return
        except BaseException:  # cancelled: nothing of it is on our books
            self._end()
            raise
        if prepared is None:
            self.metrics.batches_abandoned.inc()
            self._end()
            return
        await self._to_emit.put((mine, generation, prepared))

    def _still_ours(self, generation: int) -> StillOurs:
        return lambda: self.tracker.owns(generation)

    async def run_emitter(self) -> None:
        """Stage two of each batch, in the order prepared; its sends go to the acker."""
        while True:
            records, generation, prepared = await self._to_emit.get()
            try:
                sent = await self._emit(prepared, self._still_ours(generation))
            except Exception as exc:
                self._end()
                await self.fail(exc)
                return
            if sent.abandoned:
                self.metrics.batches_abandoned.inc()
                self._end()
                continue
            await self._queue.put(_InFlight(records, generation, sent))

    def _begin(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _end(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    # -- background tasks ---------------------------------------------------------------------------
    async def run_acker(self) -> None:
        """Await each batch's acknowledgements in the order the batches were taken."""
        while True:
            batch = await self._queue.get()
            try:
                await asyncio.gather(*batch.sent.acks)
            except Exception as exc:
                self.metrics.delivery_failures.inc()
                self._end()
                await self.fail(exc)
                return
            self.kafka_ok = True
            self.tracker.done(batch.generation, batch.records)
            self._on_delivered(batch.records)
            self._end()

    async def run_committer(self) -> None:
        while not self.failed:
            await asyncio.sleep(self.commit_interval_s)
            await self.commit_now()

    async def commit_now(self) -> bool:
        """Commit every offset done and not yet committed; False when nothing could be."""
        async with self._commit_lock:
            offsets = self.tracker.to_commit()
            if not offsets:
                return True
            generation = self.tracker.generation
            ok = await self._commit(offsets)
            if ok and generation == self.tracker.generation:
                self.tracker.committed(offsets)
                for (topic, partition), offset in offsets.items():
                    self.metrics.committed.labels(topic=topic, partition=str(partition)).set(offset)
            return ok

    # -- rebalance, shutdown, failure -----------------------------------------------------------------
    async def drain(self, why: str) -> bool:
        """Stop taking batches; wait (bounded) for the ones in flight to be acknowledged."""
        self._accepting = False
        if self._in_flight == 0:
            return True
        log.info("waiting for batches in flight", batches=self._in_flight, why=why)
        try:
            await asyncio.wait_for(self._idle.wait(), self.drain_timeout_s)
        except TimeoutError:
            log.warning(
                "batches still in flight after the drain time-out; their inputs will be read again",
                batches=self._in_flight,
                timeout_s=self.drain_timeout_s,
                why=why,
            )
            return False
        return True

    async def release(self, why: str) -> None:
        """Partitions are revoked or the worker stops: drain, commit, close the generation."""
        await self.drain(why)
        if not self.failed:
            with contextlib.suppress(Exception):
                await self.commit_now()
        self.tracker.close()

    async def fail(self, exc: BaseException) -> None:
        """Stop for good without committing anything more; the caller's on_fatal ends the worker."""
        if self.failed:
            return
        self.tracker.failed = exc
        self._accepting = False
        self.kafka_ok = False
        log.error(
            "a record could not be delivered: stopping without committing; inputs from the last "
            "commit on will be read again",
            error=f"{type(exc).__name__}: {str(exc)[:300]}",
        )
        await self._on_fatal(exc)
