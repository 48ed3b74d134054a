"""Prometheus metrics of the worker (one registry per worker, exposed on /metrics)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events_in = Counter("parley_events_in", "Utterance messages read.", registry=r)
        self.events_out = Counter("parley_events_out", "Labelled utterances published.", registry=r)
        self.events_dlq = Counter(
            "parley_events_dlq", "Messages sent to the DLQ, by reason.", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "parley_batch_size", "Messages per batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "parley_inference_seconds", "Engine time per batch.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "parley_end_to_end_seconds",
            "From the input's Kafka timestamp to its output's acknowledgement.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "parley_consumer_lag",
            "Messages behind the end of each partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.state_available = Gauge(
            "parley_state_available", "1 when Redis answered the last batch.", registry=r
        )
        self.engine = Info("parley_engine", "The engine serving now.", registry=r)
        self.engine_swaps = Counter(
            "parley_engine_swaps", "Engines put in service after start-up.", registry=r
        )
        self.engine_failures = Counter(
            "parley_engine_failures",
            "Times the serving engine failed a known-good input (then: fallback or stop).",
            registry=r,
        )
        self.engine_fallbacks = Counter(
            "parley_engine_fallbacks", "Times the previous engine was put back in service.", registry=r
        )
        self.engine_load_failures = Counter(
            "parley_engine_load_failures", "Engines that failed to load or activate.", registry=r
        )
        self.engine_healthy = Gauge(
            "parley_engine_healthy",
            "0 while the engine fails every input and consumption is held.",
            registry=r,
        )
        self.state_backlog = Gauge(
            "parley_state_backlog", "State updates waiting for Redis to come back.", registry=r
        )
        self.state_backlog_dropped = Counter(
            "parley_state_backlog_dropped",
            "State updates dropped from a full backlog (their conversations' counts run low).",
            registry=r,
        )
        self.ready = Gauge("parley_ready", "1 when the worker is ready to consume.", registry=r)
        self.committed = Gauge(
            "parley_committed_offset",
            "Last offset committed by parley, per partition (the next one to read).",
            ["topic", "partition"],
            registry=r,
        )
        self.batches_abandoned = Counter(
            "parley_batches_abandoned",
            "Batches dropped unsent because their partitions were revoked (they are read again).",
            registry=r,
        )
        self.delivery_failures = Counter(
            "parley_delivery_failures",
            "Sends Kafka did not acknowledge: the worker stops without committing.",
            registry=r,
        )
        self.dependency_errors = Counter(
            "parley_dependency_errors",
            "Errors from Redis or Kafka in background tasks (pointer poll, model events).",
            ["task"],
            registry=r,
        )
        self.selection_considered = Counter(
            "parley_selection_considered",
            "Labelled utterances in the share considered for labelling.",
            registry=r,
        )
        self.selection_chosen = Counter(
            "parley_selection_chosen",
            "Utterances sent to the labelling queue, by reason.",
            ["reason"],
            registry=r,
        )
        self.selection_dropped = Counter(
            "parley_selection_dropped",
            "Considered utterances not sent: below the score, a near-duplicate, or over the class quota.",
            ["why"],
            registry=r,
        )
        self.selection_errors = Counter(
            "parley_selection_errors",
            "Batches whose selection failed (their outputs are sent all the same).",
            registry=r,
        )

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the per-partition series of partitions this worker no longer owns, so a revoked
        partition's last lag and offset do not linger (and alert) beside its new owner's."""
        for topic, partition in partitions:
            for gauge in (self.consumer_lag, self.committed):
                with contextlib.suppress(KeyError):  # never set on this worker
                    gauge.remove(topic, str(partition))
