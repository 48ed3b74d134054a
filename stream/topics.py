"""Creating and checking parley's topics with Kafka's admin API (idempotent: safe to run again)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import structlog

from parley.clients import kafka_admin
from parley.connections import KafkaSettings, TopicSettings
from stream.errors import TopicError

if TYPE_CHECKING:
    from aiokafka.admin import AIOKafkaAdminClient

log = structlog.get_logger(__name__)

_TOPIC_ALREADY_EXISTS: Final = 36
_UNKNOWN_TOPIC: Final = 3
_VISIBLE_TIMEOUT_S: Final = 15.0


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TopicStatus:
    name: str
    partitions: int
    created: bool
    """True when this call created it; False when it already existed."""


def parley_topics(topics: TopicSettings) -> list[TopicSpec]:
    """parley's five topics (docs/contracts.md) with the configured names and partition counts."""
    rf = topics.replication_factor
    return [
        TopicSpec(topics.utterances, topics.partitions, rf),
        TopicSpec(topics.utterance_labels, topics.partitions, rf),
        # The DLQ is read rarely but must keep its records long enough for someone to look.
        TopicSpec(topics.utterances_dlq, topics.partitions, rf, {"retention.ms": str(14 * 24 * 3600 * 1000)}),
        # Few events, and every consumer wants them in one global order.
        TopicSpec(topics.model_events, 1, rf, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        # Chosen utterances wait here until the labeller reads them: days, not hours.
        TopicSpec(
            topics.labelling_queue, topics.partitions, rf, {"retention.ms": str(14 * 24 * 3600 * 1000)}
        ),
    ]


async def ensure_topics(kafka: KafkaSettings, specs: list[TopicSpec]) -> list[TopicStatus]:
    """Create the topics that do not exist; report the partitions of every one."""
    from aiokafka.admin import NewTopic

    admin = kafka_admin(kafka)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs) for s in specs]
        )
        created = set()
        for name, code, message in response.topic_errors:
            if code == 0:
                created.add(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise TopicError(f"Kafka refused to create topic {name!r}: error {code}: {message}")
        described = await _describe_when_visible(admin, [s.name for s in specs])
    finally:
        await admin.close()
    statuses = []
    for spec in specs:
        partitions = len(described[spec.name]["partitions"])
        if spec.name not in created and partitions < spec.partitions:
            # Adding partitions to a keyed topic moves keys between partitions and breaks the order of
            # conversations in flight, so parley only reports it.
            log.warning(
                "topic has fewer partitions than configured",
                topic=spec.name,
                partitions=partitions,
                configured=spec.partitions,
            )
        statuses.append(TopicStatus(spec.name, partitions, spec.name in created))
    log.info("topics ready", created=sorted(created), topics=[s.name for s in specs])
    return statuses


async def _describe_when_visible(
    admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = _VISIBLE_TIMEOUT_S
) -> dict[str, dict[str, Any]]:
    """Describe topics, waiting until the broker's metadata shows every one of them: a topic just
    created through the controller reaches the brokers' metadata caches a moment later."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = {d["topic"]: d for d in await admin.describe_topics(names)}
        missing = [
            n
            for n in names
            if n not in described or described[n]["error_code"] != 0 or not described[n]["partitions"]
        ]
        if not missing:
            return described
        if time.monotonic() > deadline:
            raise TopicError(
                f"topics {missing} are not visible in the cluster metadata after {timeout_s:.0f}s"
            )
        await asyncio.sleep(0.1)


async def partitions_of(kafka: KafkaSettings, topic: str) -> list[int]:
    """The partition ids of a topic; TopicError if it does not exist."""
    admin = kafka_admin(kafka)
    await admin.start()
    try:
        (info,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if info["error_code"] == _UNKNOWN_TOPIC or not info["partitions"]:
        raise TopicError(f"topic {topic!r} does not exist; create it with 'parley stream topics create'")
    if info["error_code"] != 0:
        raise TopicError(f"Kafka could not describe topic {topic!r}: error {info['error_code']}")
    return sorted(p["partition"] for p in info["partitions"])


async def delete_topics(kafka: KafkaSettings, names: list[str]) -> None:
    admin = kafka_admin(kafka)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def committed_offsets(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """A consumer group's committed offset per partition of ``topic`` (absent: never committed)."""
    admin = kafka_admin(kafka)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0
    }
