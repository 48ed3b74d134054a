"""The foundation's demo: conversations through real Kafka and Redis and back, checked.

1. note where the ``utterances`` topic ends now, per partition;
2. send every utterance keyed by conversation_id and wait for Kafka's acknowledgements;
3. read from the noted offsets until every sent utterance came back: each exactly once, each
   conversation whole, in order, and on a single partition;
4. count turns per conversation in Redis in one pipelined round trip, read them back, compare.

Any difference raises RoundTripError. The worker's issue turns this into the full labelling loop.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from contextlib import aclosing
from dataclasses import dataclass, field

import structlog

from parley.clients import redis_client
from parley.errors import ServiceUnavailable
from stream.contracts import Utterance, decode_utterance
from stream.errors import RoundTripError
from stream.send import messages_for, send_messages
from stream.settings import WorkerSettings
from stream.tail import end_offsets, read
from stream.topics import TopicSpec, ensure_topics

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ConversationTrip:
    conversation_id: str
    sent: int = 0
    received: int = 0
    partitions: set[int] = field(default_factory=set)
    in_order: bool = True
    redis_turns: int | None = None


@dataclass(frozen=True, slots=True)
class RoundTripReport:
    topic: str
    conversations: list[ConversationTrip]
    sent: int
    received: int
    send_seconds: float
    total_seconds: float


async def roundtrip(
    settings: WorkerSettings, utterances: list[Utterance], *, timeout_s: float = 60.0
) -> RoundTripReport:
    if not utterances:
        raise RoundTripError("nothing to send: the sample has no utterances")
    topic = settings.topics.utterances
    started = time.perf_counter()
    await ensure_topics(
        settings.kafka, [TopicSpec(topic, settings.topics.partitions, settings.topics.replication_factor)]
    )
    start = await end_offsets(settings.kafka, topic)

    trips: dict[str, ConversationTrip] = {}
    for u in utterances:
        trips.setdefault(u.conversation_id, ConversationTrip(u.conversation_id)).sent += 1
    expected = {u.utterance_id: u for u in utterances}
    if len(expected) != len(utterances):
        raise RoundTripError("the sample repeats utterance_ids; each must be unique")

    report = await send_messages(settings.kafka, topic, messages_for(utterances))
    log.info("sent", topic=topic, utterances=report.sent, seconds=round(report.seconds, 3))

    last_turn: dict[str, int] = defaultdict(lambda: -1)
    seen: set[str] = set()
    async with aclosing(read(settings.kafka, topic, start=start, idle_timeout_s=timeout_s)) as records:
        async for record in records:
            u = decode_utterance(record.value).utterance
            if u.utterance_id not in expected:
                continue  # someone else's message on a shared topic
            if u.utterance_id in seen:
                raise RoundTripError(f"utterance {u.utterance_id} came back twice")
            seen.add(u.utterance_id)
            trip = trips[u.conversation_id]
            trip.received += 1
            trip.partitions.add(record.partition)
            turn = u.turn if u.turn is not None else last_turn[u.conversation_id] + 1
            trip.in_order &= turn > last_turn[u.conversation_id]
            last_turn[u.conversation_id] = turn
            if len(seen) == len(expected):
                break

    await _count_turns_in_redis(settings, list(trips.values()))
    total = time.perf_counter() - started
    result = RoundTripReport(topic, list(trips.values()), len(utterances), len(seen), report.seconds, total)
    _check(result)
    log.info("round trip complete", utterances=len(seen), conversations=len(trips), seconds=round(total, 3))
    return result


async def _count_turns_in_redis(settings: WorkerSettings, trips: list[ConversationTrip]) -> None:
    """Per conversation, count its turns under a run-scoped key: one pipeline to write, one to read."""
    from redis.exceptions import RedisError

    run = uuid.uuid4().hex[:12]
    keys = [f"{settings.redis.key_prefix}roundtrip:{run}:{trip.conversation_id}" for trip in trips]
    client = redis_client(settings.redis)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key, trip in zip(keys, trips, strict=True):
                pipe.hincrby(key, "turns", trip.received)
                pipe.expire(key, 300)
            await pipe.execute()
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "turns")
            values = await pipe.execute()
        await client.delete(*keys)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(f"Redis at {settings.redis.address} did not answer: {exc}") from exc
    finally:
        await client.aclose()
    for trip, value in zip(trips, values, strict=True):
        trip.redis_turns = int(value) if value is not None else None


def _check(report: RoundTripReport) -> None:
    problems = []
    if report.received != report.sent:
        problems.append(f"sent {report.sent} utterances but {report.received} came back")
    for trip in report.conversations:
        if len(trip.partitions) > 1:
            problems.append(f"{trip.conversation_id} was spread over partitions {sorted(trip.partitions)}")
        if not trip.in_order:
            problems.append(f"{trip.conversation_id} came back out of order")
        if trip.redis_turns != trip.received:
            problems.append(
                f"{trip.conversation_id}: Redis counted {trip.redis_turns}, Kafka gave {trip.received}"
            )
    if problems:
        raise RoundTripError("round trip failed: " + "; ".join(problems))
