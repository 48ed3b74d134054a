"""Against the real broker: topics with partitions, keyed order, committed offsets surviving a restart."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest

from parley.clients import kafka_admin, kafka_consumer, kafka_producer
from parley.connections import KafkaSettings, TopicSettings
from stream.errors import TopicError
from stream.tail import read
from stream.topics import ensure_topics, parley_topics, partitions_of

pytestmark = pytest.mark.integration

TopicFactory = Callable[..., Awaitable[str]]


async def test_topics_are_created_with_their_partitions_and_creating_again_is_harmless(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str]
) -> None:
    """ensure_topics creates every topic with its partition count; a second call creates nothing."""
    from stream.topics import delete_topics

    names = TopicSettings(
        utterances=unique_name("in"),
        utterance_labels=unique_name("out"),
        utterances_dlq=unique_name("dlq"),
        model_events=unique_name("events"),
        labelling_queue=unique_name("queue"),
        partitions=4,
    )
    specs = parley_topics(names)
    try:
        first = await ensure_topics(kafka_settings, specs)
        assert [(s.name, s.partitions, s.created) for s in first] == [
            (names.utterances, 4, True),
            (names.utterance_labels, 4, True),
            (names.utterances_dlq, 4, True),
            (names.model_events, 1, True),
            (names.labelling_queue, 4, True),
        ]
        again = await ensure_topics(kafka_settings, specs)
        assert [s.created for s in again] == [False] * 5
        assert await partitions_of(kafka_settings, names.utterances) == [0, 1, 2, 3]
    finally:
        await delete_topics(kafka_settings, names.all_names())


async def test_missing_topic_is_a_clear_error(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str]
) -> None:
    """Reading a topic that does not exist says so and how to create it."""
    with pytest.raises(TopicError, match="parley stream topics create"):
        await partitions_of(kafka_settings, unique_name("absent"))


async def test_keyed_messages_keep_their_order_per_key(
    kafka_settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    """Messages keyed by conversation land on one partition each and come back in send order."""
    topic = await topic_factory(partitions=4)
    conversations = [f"conv-{i}" for i in range(12)]
    producer = kafka_producer(kafka_settings)
    await producer.start()
    try:
        acks = []
        for turn in range(15):
            for conv in conversations:
                acks.append(await producer.send(topic, f"{conv}:{turn}".encode(), key=conv.encode()))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()

    turns: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    async for record in read(
        kafka_settings, topic, start="beginning", max_messages=12 * 15, idle_timeout_s=20
    ):
        conv, turn = record.value.decode().split(":")
        turns[conv].append(int(turn))
        partitions[conv].add(record.partition)
    assert set(turns) == set(conversations)
    assert all(turns[c] == list(range(15)) for c in conversations)
    assert all(len(partitions[c]) == 1 for c in conversations)
    assert len(set().union(*partitions.values())) > 1  # the keys really were spread over partitions


async def test_consumer_group_resumes_from_its_committed_offsets(
    kafka_settings: KafkaSettings, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    """A group that committed after 10 of 25 messages resumes, after a restart, at message 11."""
    from aiokafka import TopicPartition

    topic = await topic_factory(partitions=1)
    group = group_factory()
    producer = kafka_producer(kafka_settings)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, str(i).encode(), key=b"k") for i in range(25)])
    finally:
        await producer.stop()

    async def consume(n: int) -> list[int]:
        consumer = kafka_consumer(kafka_settings, topic, group_id=group)
        await consumer.start()
        got: list[int] = []
        try:
            while len(got) < n:
                batch = await consumer.getmany(timeout_ms=1000, max_records=n - len(got))
                for records in batch.values():
                    got.extend(int(r.value) for r in records)
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    assert await consume(10) == list(range(10))
    admin = kafka_admin(kafka_settings)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert committed[TopicPartition(topic, 0)].offset == 10
    assert await consume(15) == list(range(10, 25))


async def test_uncommitted_messages_are_delivered_again(
    kafka_settings: KafkaSettings, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    """At-least-once: what a consumer read but did not commit comes back to the next one."""
    topic = await topic_factory(partitions=1)
    group = group_factory()
    producer = kafka_producer(kafka_settings)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, str(i).encode()) for i in range(5)])
    finally:
        await producer.stop()
    for _ in range(2):
        consumer = kafka_consumer(kafka_settings, topic, group_id=group)
        await consumer.start()
        try:
            got: list[bytes] = []
            while len(got) < 5:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    got.extend(r.value for r in records)
        finally:
            await consumer.stop()  # no commit
        assert got == [str(i).encode() for i in range(5)]
