"""``parley engine watch``: rebuild engines when training publishes a model.

For each ``model_trained`` on ``model-events`` the watcher opens the bundle from the registry, builds
the engines this node can build (TensorRT on a GPU node, ONNX Runtime on CPU), verifies them against
torch, moves this node kind's pointer in Redis and publishes ``engine_ready``. A failure publishes
``engine_failed`` with the stage and the reason and leaves the pointer where it was.

Offsets are committed after the outcome is published (at-least-once). A replayed event is
recognised by a Redis marker per (target, model, version) and changes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from engines.build import VerificationFailed, build_for_this_node
from engines.errors import EngineError
from engines.events import EngineFailed, EngineReady, ModelEvent, ModelTrained, decode_model_event
from engines.node import detect_node
from engines.pointer import PointerStore
from engines.promotion import backend_for, choose_engine
from engines.publish import publish
from engines.registry import Registry
from engines.settings import EngineBuilderSettings
from parley.clients import kafka_consumer, redis_client
from parley.contracts import ContractError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    model: str
    version: str
    status: str  # "ready", "failed", "replay"
    events: tuple[ModelEvent, ...] = ()


class Watcher:
    def __init__(self, settings: EngineBuilderSettings, target: str | None = None) -> None:
        self.settings = settings
        self.registry = Registry(settings.registry_uri)
        self.node = detect_node(settings.device)
        self.target = target or self.node.target
        self.redis = redis_client(settings.redis)
        self.pointers = PointerStore(self.redis, settings.redis.key_prefix)

    def _done_key(self, event: ModelTrained) -> str:
        return f"{self.settings.redis.key_prefix}watch:{self.target}:{event.model}:{event.version}"

    async def handle(self, event: ModelTrained) -> Outcome:
        """Build, verify, promote and announce one model; never raises for a bad bundle."""
        if await self.redis.exists(self._done_key(event)):
            log.info("model_trained replayed: already built here", model=event.model, version=event.version)
            return Outcome(event.model, event.version, "replay")
        stage = "load"
        try:
            bundle = await asyncio.to_thread(self.registry.open, event.model, event.version)
            stage = "build"
            results = await asyncio.to_thread(build_for_this_node, bundle, self.registry, self.node)
        except VerificationFailed as exc:
            return await self._fail(event, "verify", exc)
        except (EngineError, OSError, ValueError) as exc:
            return await self._fail(event, stage, exc)
        try:  # among the engines just built, the one the promotion rule picks for this target
            best = choose_engine(
                [r.record for r in results], self.target, model=event.model, version=event.version
            )
        except EngineError as exc:
            return await self._fail(event, "register", exc)
        await self.pointers.promote(event.model, event.version, best.engine_id, best.backend, self.target)
        ready = EngineReady(
            model=event.model,
            version=event.version,
            backend=best.backend,
            precision=best.precision,
            gpu_arch=best.gpu_arch,
            runtime_version=best.runtime_version,
            engine_uri=f"{self.registry.uri.rstrip('/')}/{event.model}/{event.version}/{best.file}",
        )
        await publish(self.settings.kafka, self.settings.topics.model_events, ready)
        await self.redis.set(self._done_key(event), best.engine_id)
        log.info(
            "engine ready",
            model=event.model,
            version=event.version,
            engine=best.engine_id,
            target=self.target,
        )
        return Outcome(event.model, event.version, "ready", (ready,))

    async def _fail(self, event: ModelTrained, stage: str, exc: Exception) -> Outcome:
        failed = EngineFailed(
            model=event.model,
            version=event.version,
            backend=backend_for(self.target),
            stage=stage,
            reason=str(exc)[:2000],
        )
        await publish(self.settings.kafka, self.settings.topics.model_events, failed)
        log.error(
            "engine build failed; the current engine stays",
            model=event.model,
            version=event.version,
            stage=stage,
            reason=str(exc),
        )
        return Outcome(event.model, event.version, "failed", (failed,))

    async def run(
        self, stop: asyncio.Event | None = None, idle_timeout_s: float | None = None
    ) -> list[Outcome]:
        """Consume model-events until ``stop`` is set (or nothing arrived for ``idle_timeout_s``)."""
        stop = stop or asyncio.Event()
        consumer = kafka_consumer(
            self.settings.kafka, self.settings.topics.model_events, group_id=self.settings.consumer_group
        )
        outcomes: list[Outcome] = []
        await consumer.start()
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    if idle_timeout_s is not None and loop.time() - idle_since > idle_timeout_s:
                        break
                    continue
                idle_since = loop.time()
                for records in batch.values():
                    for record in records:
                        outcome = await self._handle_record(record.value)
                        if outcome is not None:
                            outcomes.append(outcome)
                await consumer.commit()
        finally:
            await consumer.stop()
            await self.redis.aclose()
        return outcomes

    async def _handle_record(self, value: bytes) -> Outcome | None:
        try:
            event = decode_model_event(value)
        except ContractError as exc:
            log.warning("skipping a model-events message that breaks the contract", reason=str(exc))
            return None
        if not isinstance(event, ModelTrained):
            return None  # engine_ready / engine_failed: for workers and operators
        return await self.handle(event)
