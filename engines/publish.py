"""Publishing model-events (keyed by model, acknowledged by every in-sync replica), and the one way a
checkpoint becomes an announced bundle (used by `parley engine export --publish` and
`parley train fit --publish`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.events import ModelEvent, ModelTrained, event_key

if TYPE_CHECKING:
    from engines.export import SampleRow
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


def register_checkpoint(
    checkpoint: Path, registry_uri: str, sample: Sequence[SampleRow], version: str | None = None
) -> tuple[Any, ModelTrained]:
    """Export ``checkpoint`` into the registry; the bundle and the model_trained event announcing it."""
    from engines.export import build_bundle
    from engines.registry import Registry

    registry = Registry(registry_uri)
    staged = build_bundle(checkpoint, registry.staging_dir(), sample, version)
    bundle = registry.put(staged)
    event = ModelTrained(
        model=bundle.manifest.model,
        version=bundle.manifest.version,
        bundle_uri=f"{registry.uri.rstrip('/')}/{bundle.manifest.model}/{bundle.manifest.version}",
    )
    return bundle, event
