"""The faust-streaming worker: micro-batches from ``utterances`` through the engine to ``utterance-labels``.

    app = create_app(WorkerSettings())
    run_worker(app)            # what ``parley stream worker`` does

The agent takes batches bounded in size (``batch_max_size``) and in waiting time
(``batch_max_wait_ms``) with ``Stream.take_events`` and hands each to :class:`BatchProcessor`, which
returns only after Kafka acknowledged every output. faust marks a batch's offsets committable when
the agent asks for the next batch, so offsets follow acknowledged outputs (at-least-once). On
shutdown the batch in flight is finished (it is shielded from the agent's cancellation) before
faust commits and leaves.

Alongside: a task that follows ``engine_ready`` on ``model-events`` with a group-less reader (every
worker must see every event) and re-reads the pointer; ``/metrics``, ``/healthz`` and ``/readyz`` on
faust's web server.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import aclosing
from typing import Any

import faust
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engines.base import EngineOptions
from engines.events import EngineReady, decode_model_event
from engines.pointer import PointerStore
from engines.registry import Registry
from parley.clients import kafka_ssl_context, redis_client
from parley.connections import KafkaSettings
from parley.contracts import ContractError
from stream.engine_holder import EngineHolder
from stream.metrics import WorkerMetrics
from stream.processor import BatchProcessor, InRecord, Topics
from stream.settings import WorkerSettings
from stream.state import ConversationStore

log = structlog.get_logger(__name__)


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
        )
        self.engines = EngineHolder(
            registry=Registry(settings.registry_uri),
            pointers=PointerStore(self.redis, settings.redis.key_prefix)
            if settings.bundle_path is None
            else None,
            model=settings.model,
            target=settings.target,
            bundle_path=settings.bundle_path,
            options=EngineOptions(threads=settings.engine_threads, max_batch=settings.engine_max_batch),
        )
        self.kafka_ok = False
        self.processor: BatchProcessor | None = None

    def ready(self) -> bool:
        return self.engines.ready and self.kafka_ok

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
        stream_ack_exceptions=False,
        stream_ack_cancelled_tasks=False,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        datadir=f"/tmp/parley-faust-{settings.consumer_group}",
    )
    worker = Worker(settings)
    topics = settings.topics
    source = app.topic(topics.utterances, key_type=bytes, value_type=bytes)
    labels_topic = app.topic(topics.utterance_labels, key_type=bytes, value_type=bytes)
    dlq_topic = app.topic(topics.utterances_dlq, key_type=bytes, value_type=bytes)
    by_name = {topics.utterance_labels: labels_topic, topics.utterances_dlq: dlq_topic}

    async def publish(topic: str, key: bytes | None, value: bytes) -> Any:
        try:
            return await by_name[topic].send(key=key, value=value)
        except Exception:
            worker.kafka_ok = False
            raise

    worker.processor = BatchProcessor(
        engines=worker.engines,
        store=worker.store,
        publish=publish,
        topics=Topics(labels=topics.utterance_labels, dlq=topics.utterances_dlq),
        limits=settings.text_limits,
        metrics=worker.metrics,
        top_k=settings.top_k,
        worker_id=worker.instance,
    )
    processor = worker.processor

    @app.agent(source)
    async def label(stream: Any) -> None:
        await worker.engines.wait_ready()
        async for events in stream.take_events(
            settings.batch_max_size, within=settings.batch_max_wait_ms / 1000
        ):
            records = [
                InRecord(
                    key=e.message.key,
                    value=e.message.value,
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    timestamp_ms=int(e.message.timestamp * 1000) if e.message.timestamp else None,
                )
                for e in events
            ]
            batch = asyncio.ensure_future(processor.process(records))
            try:
                await asyncio.shield(batch)
            except asyncio.CancelledError:
                await batch  # shutting down: finish this batch (outputs acknowledged), then stop
                raise
            worker.kafka_ok = True
            _record_lag(app, worker, events)

    @app.task
    async def start_engine() -> None:
        await worker.engines.start()

    @app.timer(interval=settings.pointer_poll_s)
    async def poll_pointer() -> None:
        await worker.engines.refresh()

    @app.task
    async def follow_model_events() -> None:
        from stream.tail import read

        async with aclosing(read(settings.kafka, topics.model_events, start="end")) as events:
            async for record in events:
                try:
                    event = decode_model_event(record.value)
                except ContractError:
                    continue
                if isinstance(event, EngineReady) and event.model == settings.model:
                    log.info("engine_ready received", version=event.version, backend=event.backend)
                    await worker.engines.refresh()

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(worker.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "alive"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ok = worker.ready()
        body = {"ready": ok, "engine": worker.engines.ready, "kafka": worker.kafka_ok}
        return web.json(body, status=200 if ok else 503)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, **kwargs: Any) -> None:
        worker.kafka_ok = True

    return app, worker


def _record_lag(app: faust.App, worker: Worker, events: Any) -> None:
    last: dict[Any, int] = {}
    for e in events:
        last[e.message.tp] = e.message.offset
    for tp, offset in last.items():
        highwater = app.consumer.highwater(tp)
        if highwater is not None:
            worker.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                max(highwater - offset - 1, 0)
            )


def run_worker(settings: WorkerSettings) -> None:
    """Run until SIGTERM/SIGINT; faust finishes the batch in flight, commits and stops."""
    from faust.worker import Worker as FaustWorker

    app, _ = create_app(settings)
    # Engines, Redis clients and the inference thread end with the process; faust has already
    # finished the batch in flight and committed by then.
    FaustWorker(
        app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False
    ).execute_from_commandline()
