"""Publishing model-events (keyed by model, acknowledged by every in-sync replica)."""

from __future__ import annotations

from engines.events import ModelEvent, event_key
from parley.clients import kafka_producer
from parley.connections import KafkaSettings


async def publish(kafka: KafkaSettings, topic: str, *events: ModelEvent) -> None:
    producer = kafka_producer(kafka)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, event.model_dump_json().encode("utf-8"), key=event_key(event))
    finally:
        await producer.stop()
