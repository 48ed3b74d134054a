"""Reading a topic without joining a consumer group: ``parley stream tail`` and the round trip.

The reader assigns itself every partition and seeks, so it commits nothing and disturbs no group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from parley.clients import kafka_consumer
from parley.connections import KafkaSettings
from stream.topics import partitions_of


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


Start = Literal["beginning", "end"] | dict[int, int]
"""Where to start: the earliest offsets, the end (only new messages), or an offset per partition."""


async def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """The next offset to be written, per partition: a reader starting there sees only new messages."""
    from aiokafka import TopicPartition

    partitions = await partitions_of(kafka, topic)
    consumer = kafka_consumer(kafka)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def read(
    kafka: KafkaSettings,
    topic: str,
    *,
    start: Start = "end",
    max_messages: int | None = None,
    idle_timeout_s: float | None = None,
) -> AsyncGenerator[Record, None]:
    """Yield records of every partition from ``start``; stop after ``max_messages`` or when nothing
    arrived for ``idle_timeout_s`` seconds (None: follow forever)."""
    from aiokafka import TopicPartition

    partitions = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
    consumer = kafka_consumer(kafka)
    await consumer.start()
    try:
        consumer.assign(partitions)
        if start == "beginning":
            await consumer.seek_to_beginning(*partitions)
        elif start == "end":
            await consumer.seek_to_end(*partitions)
        else:
            for tp in partitions:
                consumer.seek(tp, start.get(tp.partition, 0))
        seen = 0
        last = time.monotonic()
        while max_messages is None or seen < max_messages:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    return
                await asyncio.sleep(0)
                continue
            last = time.monotonic()
            for tp_records in batch.values():
                for msg in tp_records:
                    yield Record(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key, msg.value)
                    seen += 1
                    if max_messages is not None and seen >= max_messages:
                        return
    finally:
        await consumer.stop()


async def read_to_end(
    kafka: KafkaSettings, topic: str, idle_timeout_s: float = 5.0
) -> AsyncGenerator[Record, None]:
    """Every record of ``topic`` from the earliest offsets up to the end as it was when called
    (or until nothing arrived for ``idle_timeout_s``: the log may end in markers no record shows)."""
    ends = {p: o for p, o in (await end_offsets(kafka, topic)).items()}
    remaining = {p for p, o in ends.items() if o > 0}
    if not remaining:
        return
    async with aclosing(read(kafka, topic, start="beginning", idle_timeout_s=idle_timeout_s)) as records:
        async for record in records:
            if record.partition in remaining and record.offset < ends[record.partition]:
                yield record
            if record.offset >= ends[record.partition] - 1:
                remaining.discard(record.partition)
                if not remaining:
                    return
