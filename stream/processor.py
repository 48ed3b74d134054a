"""One batch of input messages in, one output (or one DLQ record) per message out.

The steps, for a batch the agent took from ``utterances``:

1. decode every message against the contract; a bad one becomes a DLQ record with its reasons;
2. (if the model reads context) fetch the conversations' recent texts from Redis;
3. run the engine on the valid texts in a worker thread, so the event loop keeps serving
   heartbeats and metrics; if the batch fails, each message is retried alone, so one bad input
   fails alone (``inference_failed`` in the DLQ) and never takes its batch with it;
4. update conversation state in Redis, one pipelined round trip;
5. publish every output and DLQ record and wait until Kafka acknowledged all of them.

Only then does the agent take the next batch, which is when faust marks these offsets committable:
at-least-once, and every output carries its input's utterance_id for consumers to deduplicate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import structlog

from parley.contracts import ContractError, RejectCode, Rejection
from stream.contracts import (
    ConversationState,
    DlqRecord,
    ModelRef,
    SourceCoordinates,
    TextLimits,
    Utterance,
    UtteranceLabels,
    decode_utterance,
    encode,
)
from stream.engine_holder import EngineHolder, Serving
from stream.metrics import WorkerMetrics
from stream.predictions import predictions_for, sentiment_score
from stream.state import UNAVAILABLE, ConversationStore, StateUpdate

log = structlog.get_logger(__name__)

Publish = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[object]]]
"""publish(topic, key, value) → a future that resolves when Kafka acknowledged the message."""


@dataclass(frozen=True, slots=True)
class InRecord:
    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


@dataclass(slots=True)
class BatchReport:
    size: int
    labelled: int = 0
    dead_lettered: int = 0
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    model_version: str = ""
    inference_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Topics:
    labels: str
    dlq: str


@dataclass
class _Valid:
    record: InRecord
    utterance: Utterance
    truncated: bool


class BatchProcessor:
    def __init__(
        self,
        *,
        engines: EngineHolder,
        store: ConversationStore | None,
        publish: Publish,
        topics: Topics,
        limits: TextLimits,
        metrics: WorkerMetrics,
        top_k: int = 3,
        sentiment_task: str = "sentiment",
        intent_tasks: Sequence[str] = ("intent", "dialogue_act"),
        worker_id: str | None = None,
    ) -> None:
        self.engines = engines
        self.store = store
        self.publish = publish
        self.topics = topics
        self.limits = limits
        self.metrics = metrics
        self.top_k = top_k
        self.sentiment_task = sentiment_task
        self.intent_tasks = tuple(intent_tasks)
        self.worker_id = worker_id
        self._short_context_warned = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-infer")
        self._reported: Serving | None = None

    async def process(self, records: Sequence[InRecord]) -> BatchReport:
        started = time.perf_counter()
        report = BatchReport(size=len(records))
        self.metrics.events_in.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        if self.engines.swap_if_ready():
            self.metrics.engine_swaps.inc()
        serving = await self.engines.wait_ready()
        if serving is not self._reported:
            self._reported = serving
            self.metrics.engine.info(
                {"model": serving.model, "version": serving.version, "backend": serving.backend}
            )
        report.model_version = serving.version

        valid, dlq = self._decode(records)
        contexts = await self._contexts(valid, serving)
        t0 = time.perf_counter()
        probs, failed = await self._infer(serving, valid, contexts)
        report.inference_ms = (time.perf_counter() - t0) * 1000
        self.metrics.inference_seconds.observe(report.inference_ms / 1000)
        for index, reason in failed.items():
            dlq.append((valid[index].record, [reason]))
        labelled = [(i, v) for i, v in enumerate(valid) if i not in failed]
        states = await self._update_state(serving, labelled, probs)

        acks: list[Awaitable[object]] = []
        now = datetime.now(UTC)
        for (row, item), state in zip(labelled, states, strict=True):
            output = UtteranceLabels(
                conversation_id=item.utterance.conversation_id,
                utterance_id=item.utterance.utterance_id,
                turn=item.utterance.turn,
                predictions=predictions_for(row, probs, serving.labels, self.top_k),
                model=ModelRef(name=serving.model, version=serving.version, backend=serving.backend),
                state=state,
                text_truncated=item.truncated,
                processed_at=now,
                latency_ms=_latency_ms(item.record.timestamp_ms, now),
            )
            acks.append(
                await self.publish(
                    self.topics.labels, item.utterance.conversation_id.encode(), encode(output)
                )
            )
        for record, rejections in dlq:
            dead = DlqRecord.for_rejection(
                rejections,
                value=record.value,
                key=record.key,
                worker=self.worker_id,
                source=SourceCoordinates(
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    timestamp_ms=record.timestamp_ms,
                ),
            )
            acks.append(await self.publish(self.topics.dlq, record.key, encode(dead)))
            report.dlq_reasons[dead.reason.value] = report.dlq_reasons.get(dead.reason.value, 0) + 1
            self.metrics.events_dlq.labels(reason=dead.reason.value).inc()
        await asyncio.gather(*acks)  # every output acknowledged before these offsets may be committed

        done = datetime.now(UTC)
        for _, item in labelled:
            if item.record.timestamp_ms is not None:
                self.metrics.end_to_end_seconds.observe(
                    max(_latency_ms(item.record.timestamp_ms, done), 0) / 1000
                )
        report.labelled, report.dead_lettered = len(labelled), len(dlq)
        self.metrics.events_out.inc(report.labelled)
        report.total_ms = (time.perf_counter() - started) * 1000
        first, last = records[0], records[-1]
        log.info(
            "batch",
            size=report.size,
            labelled=report.labelled,
            dlq=report.dead_lettered,
            dlq_reasons=report.dlq_reasons or None,
            model_version=serving.version,
            backend=serving.backend,
            inference_ms=round(report.inference_ms, 1),
            total_ms=round(report.total_ms, 1),
            topic=first.topic,
            first=f"{first.partition}:{first.offset}",
            last=f"{last.partition}:{last.offset}",
            state=self.store.available if self.store else None,
        )
        return report

    def _decode(
        self, records: Sequence[InRecord]
    ) -> tuple[list[_Valid], list[tuple[InRecord, list[Rejection]]]]:
        valid, dlq = [], []
        for record in records:
            try:
                decoded = decode_utterance(record.value, self.limits)
            except ContractError as exc:
                dlq.append((record, exc.rejections))
                continue
            valid.append(_Valid(record, decoded.utterance, decoded.truncated_from is not None))
        return valid, dlq

    async def _contexts(self, valid: list[_Valid], serving: Serving) -> list[str | None] | None:
        """The previous turn(s) of each utterance, when the model reads context: from earlier in this
        batch where the conversation has them, otherwise from Redis."""
        n = serving.context_turns
        if n <= 0 or not valid:
            return None
        if self.store and n > self.store.recent and not self._short_context_warned:
            self._short_context_warned = True
            log.warning(
                "the model reads more previous turns than Redis keeps; raise PARLEY_WORKER_STATE_RECENT",
                context_turns=n,
                kept=self.store.recent,
            )
        stored = (
            await self.store.recent_texts([v.utterance.conversation_id for v in valid], n)
            if self.store
            else {}
        )
        history: dict[str, list[str]] = {cid: list(texts) for cid, texts in stored.items()}
        contexts: list[str | None] = []
        for item in valid:
            previous = history.setdefault(item.utterance.conversation_id, [])
            contexts.append(" ".join(previous[-n:]) or None)
            previous.append(item.utterance.text)
        return contexts

    async def _infer(
        self, serving: Serving, valid: list[_Valid], contexts: list[str | None] | None
    ) -> tuple[dict[str, np.ndarray], dict[int, Rejection]]:
        texts = [v.utterance.text for v in valid]
        if not texts:
            return {
                t: np.zeros((0, len(labels)), dtype=np.float32) for t, labels in serving.labels.items()
            }, {}
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, serving.engine.infer, texts, contexts), {}
        except Exception as exc:  # the batch failed: find the input(s) that did it, one by one
            log.warning("batch inference failed; retrying one by one", error=str(exc), size=len(texts))
        rows: dict[str, list[np.ndarray]] = {t: [] for t in serving.labels}
        failed: dict[int, Rejection] = {}
        for i, text in enumerate(texts):
            one_context = [contexts[i]] if contexts else None
            try:
                single = await loop.run_in_executor(self._executor, serving.engine.infer, [text], one_context)
            except Exception as exc:
                failed[i] = Rejection(
                    code=RejectCode.INFERENCE_FAILED,
                    field="text",
                    value=None,
                    message=f"the engine failed on this input: {str(exc)[:300]}",
                )
                single = {
                    t: np.full((1, len(labels)), np.nan, dtype=np.float32)
                    for t, labels in serving.labels.items()
                }
            for task in rows:
                rows[task].append(single[task])
        return {t: np.concatenate(parts) for t, parts in rows.items()}, failed

    async def _update_state(
        self, serving: Serving, labelled: list[tuple[int, _Valid]], probs: dict[str, np.ndarray]
    ) -> list[ConversationState]:
        if self.store is None:
            return [UNAVAILABLE] * len(labelled)
        labels = serving.labels
        intent_task = next((t for t in self.intent_tasks if t in labels), None)
        updates = []
        for row, item in labelled:
            sentiment = (
                sentiment_score(row, probs[self.sentiment_task], labels[self.sentiment_task])
                if self.sentiment_task in labels
                else None
            )
            intent = labels[intent_task][int(probs[intent_task][row].argmax())] if intent_task else None
            updates.append(
                StateUpdate(
                    item.utterance.conversation_id,
                    item.utterance.utterance_id,
                    item.utterance.text,
                    sentiment,
                    intent,
                )
            )
        states = await self.store.apply(updates)
        self.metrics.state_available.set(1 if self.store.available else 0)
        return states

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _latency_ms(timestamp_ms: int | None, now: datetime) -> float:
    if timestamp_ms is None:
        return 0.0
    return max(now.timestamp() * 1000 - timestamp_ms, 0.0)
