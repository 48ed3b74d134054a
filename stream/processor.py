"""One batch of input messages in, one output or one DLQ record per message out, whatever the bytes.

The steps, for a batch the agent took from ``utterances``:

1. decode every message against the contract; a bad one becomes a DLQ record with its reasons;
2. (if the model reads context) give each utterance its conversation's previous turns: from earlier
   in this batch, or from Redis, where a replayed utterance finds the turns it had the first time;
3. run the engine (:mod:`stream.inference`): a bad input fails alone (``inference_failed``,
   ``not_finite``); an engine that fails a known-good input makes the worker fall back to the
   previous engine, or wait without consuming, instead of filing the batch in the DLQ;
4. update conversation state in Redis, one pipelined round trip;
5. send every output and DLQ record, and hand back the futures that resolve when Kafka acknowledged
   them. :mod:`stream.delivery` awaits those before the batch's offsets may be committed.

Steps 1-3 are :meth:`BatchProcessor.prepare` and steps 4-5 :meth:`BatchProcessor.emit`: the worker
runs them as a pipeline, so the engine labels batch k+1 while batch k's state is written and its
records are sent (a model that reads context waits for the state of earlier batches first).

Isolation is per record: anything that goes wrong with one input (decoding, validation, encoding
its output) becomes that input's DLQ record (``internal_error`` for what parley did not foresee),
and a DLQ record always fits the producer's size limit. What cannot be confined to one record
(Kafka refusing a send) raises: the caller stops without committing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from engines.base import Probabilities
from parley.contracts import ContractError, RejectCode, Rejection
from stream.contracts import (
    DLQ_DEFAULT_MAX_BYTES,
    ConversationState,
    DlqRecord,
    SourceCoordinates,
    TextLimits,
    Utterance,
    decode_utterance,
    encode,
)
from stream.engine_holder import EngineHolder, Serving
from stream.inference import EngineBroken, Inference
from stream.labelling_queue import LabellingTap
from stream.metrics import WorkerMetrics
from stream.predictions import batch_predictions, encode_labels, sentiment_scores, timestamp
from stream.state import UNAVAILABLE, ConversationStore, StateUpdate, Turn, context_for

log = structlog.get_logger(__name__)

Publish = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[object]]]
"""publish(topic, key, value) → a future that resolves when Kafka acknowledged the message."""


@dataclass(frozen=True, slots=True)
class InRecord:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    generation: int = 0
    """The consumer-group generation the record was fetched in (see stream.delivery)."""


@dataclass(slots=True)
class BatchReport:
    size: int
    labelled: int = 0
    dead_lettered: int = 0
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    model_version: str = ""
    inference_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(slots=True)
class Sent:
    """A processed batch: the acknowledgements to await before its offsets may be committed."""

    acks: list[Awaitable[object]]
    report: BatchReport
    abandoned: bool = False
    """True when the batch stopped being ours (a rebalance) before anything was sent."""


@dataclass
class _Valid:
    record: InRecord
    utterance: Utterance
    truncated: bool


Rejected = tuple[InRecord, list[Rejection]]


@dataclass(slots=True)
class Prepared:
    """A batch after stage one (decoded, inferred), waiting for stage two (state, sends)."""

    records: Sequence[InRecord]
    serving: Serving
    probs: Probabilities
    labelled: list[tuple[int, _Valid]]
    dlq: list[Rejected]
    report: BatchReport
    started: float


@dataclass(frozen=True, slots=True)
class Topics:
    labels: str
    dlq: str
    labelling_queue: str | None = None


def _internal(where: str, exc: BaseException) -> list[Rejection]:
    return [
        Rejection(
            code=RejectCode.INTERNAL_ERROR,
            message=f"parley failed while {where} this input ({type(exc).__name__}: {str(exc)[:200]}); "
            "it is kept here instead of being lost",
        )
    ]


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
        inference: Inference | None = None,
        top_k: int = 3,
        sentiment_task: str = "sentiment",
        intent_tasks: Sequence[str] = ("intent", "dialogue_act"),
        worker_id: str | None = None,
        dlq_max_bytes: int = DLQ_DEFAULT_MAX_BYTES,
        broken_retry_s: float = 5.0,
        tap: LabellingTap | None = None,
    ) -> None:
        self.engines = engines
        self.store = store
        self.publish = publish
        self.topics = topics
        self.limits = limits
        self.metrics = metrics
        self.inference = inference or Inference()
        self.top_k = top_k
        self.sentiment_task = sentiment_task
        self.intent_tasks = tuple(intent_tasks)
        self.worker_id = worker_id
        self.dlq_max_bytes = dlq_max_bytes
        self.broken_retry_s = broken_retry_s
        self.tap = tap
        """Chooses utterances for the labelling queue (stream.labelling_queue); None: selection off."""
        self._short_context_warned = False
        self._reported: Serving | None = None
        self._awaiting_emit = 0
        self._all_emitted = asyncio.Event()
        self._all_emitted.set()

    async def process(
        self, records: Sequence[InRecord], still_ours: Callable[[], bool] = lambda: True
    ) -> Sent:
        """Both stages, one after the other (the worker runs them as a pipeline)."""
        prepared = await self.prepare(records, still_ours)
        if prepared is None:
            return Sent([], BatchReport(size=len(records)), abandoned=True)
        return await self.emit(prepared, still_ours)

    async def prepare(
        self, records: Sequence[InRecord], still_ours: Callable[[], bool] = lambda: True
    ) -> Prepared | None:
        """Stage one: decode and infer. None when the batch stopped being ours while an engine that
        fails every input held it."""
        started = time.perf_counter()
        report = BatchReport(size=len(records))
        self.metrics.events_in.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        valid, dlq = self._decode(records)
        t0 = time.perf_counter()
        outcome = await self._infer(valid, still_ours)
        if outcome is None:
            return None
        serving, probs, failed = outcome
        report.inference_ms = (time.perf_counter() - t0) * 1000
        report.model_version = serving.version
        self.metrics.inference_seconds.observe(report.inference_ms / 1000)
        dlq.extend((valid[i].record, [reason]) for i, reason in failed.items())
        labelled = [(i, v) for i, v in enumerate(valid) if i not in failed]
        self._awaiting_emit += 1
        self._all_emitted.clear()
        return Prepared(records, serving, probs, labelled, dlq, report, started)

    async def emit(self, prepared: Prepared, still_ours: Callable[[], bool] = lambda: True) -> Sent:
        """Stage two: conversation state, then every output and DLQ record sent; batches must come
        here in the order they were prepared."""
        try:
            return await self._emit(prepared, still_ours)
        finally:
            self._awaiting_emit -= 1
            if self._awaiting_emit == 0:
                self._all_emitted.set()

    async def _emit(self, prepared: Prepared, still_ours: Callable[[], bool]) -> Sent:
        serving, probs, labelled, dlq, report = (
            prepared.serving,
            prepared.probs,
            prepared.labelled,
            list(prepared.dlq),
            prepared.report,
        )
        # Candidates first: their context is the conversation's state before this batch's turns.
        candidates = await self._candidates(serving, labelled, probs) if self.tap is not None else []
        states = await self._update_state(serving, labelled, probs)
        if not still_ours():
            return Sent([], report, abandoned=True)
        acks: list[Awaitable[object]] = []
        now = datetime.now(UTC)
        processed_at = timestamp(now)
        model = {"name": serving.model, "version": serving.version, "backend": serving.backend}
        predictions = batch_predictions(probs, serving.labels, self.top_k)
        for (row, item), state in zip(labelled, states, strict=True):
            try:
                value = encode_labels(
                    conversation_id=item.utterance.conversation_id,
                    utterance_id=item.utterance.utterance_id,
                    turn=item.utterance.turn,
                    predictions=predictions[row],
                    model=model,
                    state=state,
                    text_truncated=item.truncated,
                    processed_at=processed_at,
                    latency_ms=_latency_ms(item.record.timestamp_ms, now),
                )
            except Exception as exc:  # a bug of ours must cost one record its output, not be lost
                dlq.append((item.record, _internal("labelling", exc)))
                continue
            acks.append(
                await self.publish(self.topics.labels, item.utterance.conversation_id.encode(), value)
            )
            report.labelled += 1
        if self.topics.labelling_queue:
            for key, value in candidates:
                acks.append(await self.publish(self.topics.labelling_queue, key, value))
        for record, rejections in dlq:
            dead = self._dead_letter(record, rejections)
            acks.append(await self.publish(self.topics.dlq, dead.kafka_key, encode(dead)))
            report.dlq_reasons[dead.reason.value] = report.dlq_reasons.get(dead.reason.value, 0) + 1
            self.metrics.events_dlq.labels(reason=dead.reason.value).inc()
        report.dead_lettered = len(dlq)
        self.metrics.events_out.inc(report.labelled)
        report.total_ms = (time.perf_counter() - prepared.started) * 1000
        self._log(prepared.records, report, serving)
        return Sent(acks, report)

    # -- 1 decode -----------------------------------------------------------------------------------
    def _decode(self, records: Sequence[InRecord]) -> tuple[list[_Valid], list[Rejected]]:
        valid: list[_Valid] = []
        dlq: list[Rejected] = []
        for record in records:
            try:
                decoded = decode_utterance(record.value, self.limits)
            except ContractError as exc:
                dlq.append((record, exc.rejections))
            except Exception as exc:
                dlq.append((record, _internal("decoding", exc)))
            else:
                valid.append(_Valid(record, decoded.utterance, decoded.truncated_from is not None))
        return valid, dlq

    # -- 2 + 3 context and inference ----------------------------------------------------------------
    async def _infer(
        self, valid: list[_Valid], still_ours: Callable[[], bool]
    ) -> tuple[Serving, Probabilities, dict[int, Rejection]] | None:
        """Run the serving engine; on EngineBroken fall back, or hold the batch (not consuming) until
        an engine works. None when the batch stopped being ours meanwhile."""
        if self.engines.swap_if_ready():
            self.metrics.engine_swaps.inc()
        while True:
            serving = self.engines.current
            assert serving is not None, "the worker consumes only once an engine serves"
            self._report_engine(serving)
            texts = [v.utterance.text for v in valid]
            contexts = await self._contexts(valid, serving)
            try:
                probs, failed = await self.inference.run(serving, texts, contexts)
                return serving, probs, failed
            except EngineBroken as exc:
                self.metrics.engine_failures.inc()
                if self.engines.fall_back(serving, str(exc)):
                    continue
            self.metrics.engine_healthy.set(0)
            if not await self._until_an_engine_works(serving, still_ours):
                return None
            self.metrics.engine_healthy.set(1)

    async def _until_an_engine_works(self, broken: Serving, still_ours: Callable[[], bool]) -> bool:
        while still_ours():
            await asyncio.sleep(self.broken_retry_s)
            if self.engines.swap_if_ready():
                self.metrics.engine_swaps.inc()
                return True
            try:
                await self.inference.check_engine(broken)
            except EngineBroken:
                continue
            self.engines.recovered(broken)
            return True
        return False

    async def _contexts(self, valid: list[_Valid], serving: Serving) -> list[str | None] | None:
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
        # Earlier batches' turns must be in Redis before this one reads them: with the stages
        # pipelined, wait until every prepared batch has been emitted (context models only).
        await self._all_emitted.wait()
        ids = [v.utterance.conversation_id for v in valid]
        history: dict[str, list[Turn]] = await self.store.history(ids) if self.store else {}
        return [
            context_for(
                history.setdefault(v.utterance.conversation_id, []),
                v.utterance.utterance_id,
                v.utterance.text,
                n,
            )
            for v in valid
        ]

    # -- 4 state ------------------------------------------------------------------------------------
    async def _update_state(
        self, serving: Serving, labelled: list[tuple[int, _Valid]], probs: Probabilities
    ) -> list[ConversationState]:
        if self.store is None:
            return [UNAVAILABLE] * len(labelled)
        labels = serving.labels
        intent_task = next((t for t in self.intent_tasks if t in labels), None)
        rows = [row for row, _ in labelled]
        sentiments: Sequence[float | None] = (
            sentiment_scores(probs[self.sentiment_task][rows], labels[self.sentiment_task])
            if self.sentiment_task in labels and rows
            else [None] * len(rows)
        )
        intents = (
            [labels[intent_task][i] for i in probs[intent_task][rows].argmax(axis=1).tolist()]
            if intent_task and rows
            else [None] * len(rows)
        )
        updates = [
            StateUpdate(
                item.utterance.conversation_id,
                item.utterance.utterance_id,
                item.utterance.text,
                sentiment,
                intent,
            )
            for (_, item), sentiment, intent in zip(labelled, sentiments, intents, strict=True)
        ]
        states = await self.store.apply(updates)
        self.metrics.state_available.set(1 if self.store.available else 0)
        self.metrics.state_backlog.set(self.store.backlog)
        return states

    async def _candidates(
        self, serving: Serving, labelled: list[tuple[int, _Valid]], probs: Probabilities
    ) -> list[tuple[bytes, bytes]]:
        """The labelling queue's messages for this batch; a failure costs the batch its candidates,
        never its outputs."""
        assert self.tap is not None
        try:
            pairs = [(row, v.utterance) for row, v in labelled]
            return await self.tap.candidates(serving, pairs, probs, datetime.now(UTC))
        except Exception as exc:
            self.metrics.selection_errors.inc()
            log.warning(
                "choosing utterances for labelling failed", error=f"{type(exc).__name__}: {exc}"[:300]
            )
            return []

    # -- 5 outputs ----------------------------------------------------------------------------------
    def _dead_letter(self, record: InRecord, rejections: list[Rejection]) -> DlqRecord:
        source = SourceCoordinates(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
        )
        try:
            return DlqRecord.for_rejection(
                rejections,
                value=record.value,
                key=record.key,
                source=source,
                worker=self.worker_id,
                max_bytes=self.dlq_max_bytes,
            )
        except Exception as exc:  # the reasons themselves would not encode: keep the input anyway
            return DlqRecord.for_rejection(
                _internal("filing", exc),
                value=record.value,
                key=record.key,
                source=source,
                worker=self.worker_id,
                max_bytes=self.dlq_max_bytes,
            )

    def _report_engine(self, serving: Serving) -> None:
        if serving is not self._reported:
            self._reported = serving
            self.metrics.engine.info(
                {"model": serving.model, "version": serving.version, "backend": serving.backend}
            )

    def _log(self, records: Sequence[InRecord], report: BatchReport, serving: Serving) -> None:
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

    def observe_delivered(self, records: Sequence[InRecord]) -> None:
        """End-to-end latency, once the batch's records are acknowledged."""
        done = datetime.now(UTC).timestamp() * 1000
        for record in records:
            if record.timestamp_ms is not None:
                self.metrics.end_to_end_seconds.observe(max(done - record.timestamp_ms, 0) / 1000)

    def close(self) -> None:
        self.inference.close()


def _latency_ms(timestamp_ms: int | None, now: datetime) -> float:
    if timestamp_ms is None:
        return 0.0
    return max(now.timestamp() * 1000 - timestamp_ms, 0.0)
