"""The faust-streaming worker: micro-batches from ``utterances`` through the engine to ``utterance-labels``.

    run_worker(WorkerSettings())     # what ``parley stream worker`` does

Start-up, in order: the HTTP endpoints (alive, not ready), then the first engine, retried with a
back-off for as long as it takes (Redis down, no pointer, a version that does not load); only then
does faust start and the worker join its consumer group, so a worker without an engine holds no
partitions.

One agent (concurrency 1) reads events into a bounded intake; a batcher takes whatever has arrived
(``stream.batching``: no waiting for a batch to fill, up to ``batch_max_size``) and hands it to
:class:`stream.delivery.Delivery`, which processes it (:class:`stream.processor.BatchProcessor`) and
commits its offsets only once Kafka acknowledged its outputs; faust's own acks are off for the input
topic. On a rebalance and on
SIGTERM the batches in flight finish and are committed before the partitions go.

Alongside: the acker and committer tasks, a task that follows ``engine_ready`` on ``model-events``
with a group-less reader (every worker must see every event), a timer that re-reads the pointer;
each catches its dependency's errors (a crashed faust task would end the worker).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from contextlib import aclosing
from typing import Any

import faust
import structlog
from faust.types import TP
from faust.worker import Worker as FaustWorker
from mode import CrashingSupervisor

from engines.base import EngineOptions
from engines.events import EngineReady, decode_model_event
from engines.node import usable_cpus
from engines.pointer import PointerStore
from engines.registry import Registry
from parley.clients import kafka_ssl_context, redis_client
from parley.connections import KafkaSettings
from parley.contracts import ContractError
from stream.batching import next_batch
from stream.contracts import DLQ_KEY_MAX_BYTES
from stream.delivery import Delivery, Partition
from stream.engine_holder import EngineHolder
from stream.inference import Inference
from stream.labelling_queue import LabellingTap
from stream.metrics import WorkerMetrics
from stream.processor import BatchProcessor, InRecord, Prepared, Topics
from stream.selection import SelectionPolicy, Selector
from stream.settings import WorkerSettings
from stream.state import ConversationStore
from stream.web import WebServer

log = structlog.get_logger(__name__)

# aiokafka counts a record batch's header and the record's own framing against max_request_size.
_RECORD_FRAMING_BYTES = 512


def _broker(kafka: KafkaSettings) -> tuple[list[str], Any]:
    servers = [f"kafka://{s.strip()}" for s in kafka.bootstrap_servers.split(",") if s.strip()]
    credentials: Any = None
    if kafka.sasl_mechanism is not None:
        assert kafka.sasl_password is not None
        credentials = faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=kafka_ssl_context(kafka),
        )
    elif kafka.uses_tls:
        credentials = faust.SSLCredentials(kafka_ssl_context(kafka))
    return servers, credentials


class Worker:
    """The parts of a running worker, built from its settings (and stopped with it)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.instance = settings.instance or socket.gethostname()
        self.redis = redis_client(settings.redis)
        self.store = ConversationStore(
            settings.redis,
            ttl_s=settings.state_ttl_s,
            recent=settings.state_recent,
            alpha=settings.sentiment_alpha,
            seen_max=settings.state_seen_max,
            backlog_max=settings.state_backlog_max,
            on_dropped=lambda n: self.metrics.state_backlog_dropped.inc(n),
        )
        self.engines = EngineHolder(
            registry=Registry(settings.registry_uri),
            pointers=PointerStore(self.redis, settings.redis.key_prefix)
            if settings.bundle_path is None
            else None,
            model=settings.model,
            target=settings.target,
            bundle_path=settings.bundle_path,
            options=EngineOptions(
                threads=settings.engine_threads,
                lanes=settings.engine_lanes or usable_cpus(),
                max_batch=settings.engine_max_batch,
                max_tokens=settings.engine_max_tokens,
                max_padding=settings.engine_max_padding,
            ),
            retry_s=settings.engine_retry_s,
        )
        events = {
            "swap": self.metrics.engine_swaps,
            "fallback": self.metrics.engine_fallbacks,
            "load_failed": self.metrics.engine_load_failures,
        }
        self.engines.on_event = lambda kind: events[kind].inc() if kind in events else None
        self.web = WebServer(settings.web_host, settings.web_port, self.metrics.registry, self.status)
        self.stop_requested = asyncio.Event()
        self.delivery: Delivery[Prepared] | None = None
        self.processor: BatchProcessor | None = None

    def ready(self) -> bool:
        return bool(
            self.engines.ready
            and self.delivery is not None
            and self.delivery.kafka_ok
            and not self.delivery.failed
            and not self.stop_requested.is_set()
        )

    def status(self) -> dict[str, Any]:
        ok = self.ready()
        self.metrics.ready.set(1 if ok else 0)
        return {
            "ready": ok,
            "engine": self.engines.ready,
            "kafka": bool(self.delivery and self.delivery.kafka_ok and not self.delivery.failed),
            "state": self.store.available,
        }

    async def close(self) -> None:
        if self.processor is not None:
            self.processor.close()
        self.engines.close()
        await self.store.aclose()
        await self.redis.aclose()


def create_app(settings: WorkerSettings) -> tuple[faust.App, Worker]:
    servers, credentials = _broker(settings.kafka)
    app = faust.App(
        settings.consumer_group,
        broker=servers,
        broker_credentials=credentials,
        broker_client_id=settings.kafka.client_id,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 5, 1.0),
        key_serializer="raw",
        value_serializer="raw",
        topic_allow_declare=False,  # topics are created on purpose (parley stream topics create)
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=settings.max_record_bytes,
        producer_request_timeout=settings.publish_timeout_s,
        producer_linger=settings.publish_linger_ms / 1000,
        web_enabled=False,  # parley serves /metrics, /healthz, /readyz itself (stream.web)
        datadir=f"/tmp/parley-faust-{settings.consumer_group}",
    )
    worker = Worker(settings)
    topics = settings.topics
    # acks=False: faust neither records nor commits this topic's offsets; stream.delivery does.
    source = app.topic(topics.utterances, key_type=bytes, value_type=bytes, acks=False)

    async def publish(topic: str, key: bytes | None, value: bytes) -> Any:
        # The producer itself, not faust's Topic.send: one record, one future, no per-message
        # FutureMessage bookkeeping (a seventh of the worker's event-loop time under load).
        return await app.producer.send(topic, key, value, None, None, None)

    async def commit(offsets: dict[Partition, int]) -> bool:
        return bool(
            await app.consumer._commit(  # type: ignore[attr-defined]
                {TP(t, p): o for (t, p), o in offsets.items()}
            )
        )

    async def fatal(exc: BaseException) -> None:
        await app.crash(exc)

    inference = Inference()  # the engine's one thread, shared with the labelling tap
    worker.engines.retire = inference.retire
    worker.processor = BatchProcessor(
        engines=worker.engines,
        store=worker.store,
        publish=publish,
        topics=Topics(
            labels=topics.utterance_labels, dlq=topics.utterances_dlq, labelling_queue=topics.labelling_queue
        ),
        limits=settings.text_limits,
        metrics=worker.metrics,
        top_k=settings.top_k,
        worker_id=worker.instance,
        dlq_max_bytes=settings.max_record_bytes - DLQ_KEY_MAX_BYTES - _RECORD_FRAMING_BYTES,
        inference=inference,
        tap=_labelling_tap(settings, worker, inference) if settings.select_share > 0 else None,
    )
    delivery = worker.delivery = Delivery(
        commit=commit,
        emit=worker.processor.emit,
        metrics=worker.metrics,
        on_fatal=fatal,
        depth=settings.pipeline_depth,
        commit_interval_s=settings.commit_interval_s,
        drain_timeout_s=settings.drain_timeout_s,
        on_delivered=worker.processor.observe_delivered,
    )
    processor = worker.processor

    # The agent only reads; the batcher takes whatever has arrived (stream.batching).
    intake: asyncio.Queue[InRecord] = asyncio.Queue(maxsize=settings.batch_max_size)

    @app.agent(source, concurrency=1, supervisor_strategy=CrashingSupervisor)
    async def read(stream: Any) -> None:
        async for event in stream.events():
            await intake.put(_in_record(event))

    @app.task
    async def batcher() -> None:
        while True:
            records = await next_batch(intake, settings.batch_max_size, settings.batch_max_wait_ms / 1000)
            await delivery.handle(records, processor.prepare)
            _record_lag(app, worker, records)

    @app.task
    async def emitter() -> None:
        await delivery.run_emitter()

    @app.task
    async def acker() -> None:
        await delivery.run_acker()

    @app.task
    async def committer() -> None:
        await delivery.run_committer()

    @app.timer(interval=settings.pointer_poll_s)
    async def poll_pointer() -> None:
        try:
            await worker.engines.refresh()
        except Exception as exc:  # Redis down: keep serving what we have, read the pointer later
            worker.metrics.dependency_errors.labels(task="pointer_poll").inc()
            log.warning("could not read the engine pointer; trying again", error=str(exc)[:300])

    @app.task
    async def follow_model_events() -> None:
        await _follow_model_events(settings, worker)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any = None, **kwargs: Any) -> None:
        delivery.assigned(app.consumer_generation_id)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any = None, **kwargs: Any) -> None:
        await delivery.release("rebalance")
        worker.metrics.forget_partitions((tp.topic, tp.partition) for tp in revoked or ())

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        worker.stop_requested.set()
        await delivery.release("shutdown")

    return app, worker


async def _follow_model_events(settings: WorkerSettings, worker: Worker) -> None:
    """Re-read the pointer on every ``engine_ready`` for our model; survive Kafka being away."""
    from stream.tail import read

    wait = 1.0
    while True:
        try:
            async with aclosing(read(settings.kafka, settings.topics.model_events, start="end")) as events:
                async for record in events:
                    wait = 1.0
                    try:
                        event = decode_model_event(record.value)
                    except ContractError:
                        continue
                    if isinstance(event, EngineReady) and event.model == settings.model:
                        log.info("engine_ready received", version=event.version, backend=event.backend)
                        await worker.engines.refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            worker.metrics.dependency_errors.labels(task="model_events").inc()
            log.warning("following model-events failed; trying again", error=str(exc)[:300], retry_in_s=wait)
        await asyncio.sleep(wait)
        wait = min(wait * 2, 30.0)


def _labelling_tap(settings: WorkerSettings, worker: Worker, inference: Inference) -> LabellingTap:
    policy = SelectionPolicy(
        share=settings.select_share,
        min_score=settings.select_min_score,
        quota_per_class=settings.select_quota_per_class,
        quota_window_s=settings.select_quota_window_s,
    )
    return LabellingTap(
        Selector(policy),
        engines=worker.engines,
        inference=inference,
        store=worker.store,
        metrics=worker.metrics,
        top_k=settings.top_k,
        disagreement_s=settings.select_disagreement_s,
        worker_id=worker.instance,
    )


def _in_record(event: Any) -> InRecord:
    m = event.message
    return InRecord(
        key=m.key,
        value=m.value,
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        timestamp_ms=int(m.timestamp * 1000) if m.timestamp else None,
        generation=m.generation_id,
    )


def _record_lag(app: faust.App, worker: Worker, records: Sequence[InRecord]) -> None:
    last: dict[tuple[str, int], int] = {}
    for r in records:
        last[(r.topic, r.partition)] = r.offset
    for (topic, partition), offset in last.items():
        highwater = app.consumer.highwater(TP(topic, partition))
        if highwater is not None:
            worker.metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(
                max(highwater - offset - 1, 0)
            )


class _ParleyFaustWorker(FaustWorker):
    """faust's worker, with parley's endpoints up first and the first engine loaded before the
    app (and its consumer) starts, and parley's logging left as the entry point configured it."""

    def __init__(self, app: faust.App, parley: Worker, **kwargs: Any) -> None:
        # override_logging=False: mode would otherwise replace the root logger's handlers with its
        # own plain-text ones and redirect stdout into a logger. quiet: no banner, no "OK ^".
        super().__init__(app, quiet=True, override_logging=False, redirect_stdouts=False, **kwargs)
        self.parley = parley
        # faust's start-up spinner (turned off by mode's logging set-up, which no longer runs) writes
        # cursor escapes to stdout even off a terminal; without it faust logs "Ready" instead.
        self.spinner = None

    async def on_start(self) -> None:
        await super().on_start()
        await self.parley.web.start()
        log.info("endpoints up", port=self.parley.settings.web_port)
        if not await self.parley.engines.start(self.parley.stop_requested):
            return
        self.parley.metrics.engine_healthy.set(1)

    async def on_stop(self) -> None:
        self.parley.stop_requested.set()
        await super().on_stop()

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self.parley.web.stop()


def run_worker(settings: WorkerSettings) -> None:
    """Run until SIGTERM/SIGINT: the batches in flight finish and are committed, then the worker
    leaves its group. Exits non-zero when a record could not be delivered (nothing is committed
    past it)."""
    app, worker = create_app(settings)
    _ParleyFaustWorker(app, worker).execute_from_commandline()
