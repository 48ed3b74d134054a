"""Labelling from the queue: the candidates the workers chose, labelled by the prompt bank into a pool.

A consumer group reads ``labelling-queue``. Each poll's candidates go through the same requests,
answer cache and backend as a file run (train.label.run), with the turns the worker sent as their
context; the answers are written to the pool as one segment per partition, and only then are the
offsets committed. Nothing is lost on the way:

- a labeller killed at any point resumes from the last commit: what it had asked is in the answer
  cache (paid once), a segment written but not committed is written again under the same name;
- a request the backend fails is asked again (``retries`` rounds, backing off); if it still fails,
  the run stops *without* committing that poll, so the next run asks it again;
- a message that does not decode as a LabellingCandidate is kept in ``<pool>/rejected/`` with its
  reasons, and counted, never silently dropped.

The run ends after ``idle_exit_s`` without a new message (a CronJob that drains the queue and
exits), after ``max_messages``, or never (``idle_exit_s=None``: a long-running consumer).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from parley.clients import kafka_consumer
from parley.connections import KafkaSettings
from parley.contracts import ContractError
from parley.messages import LabellingCandidate, decode_candidate
from train.data import Utterance
from train.errors import TrainError
from train.label.backend import Backend
from train.label.cache import AnswerCache
from train.label.run import LabelSummary, answer, collect, new_summary, plan
from train.label.spec import LabelTask, PromptBank, Turn
from train.pool import Pool, PoolItem

log = structlog.get_logger(__name__)


class QueueLabelError(TrainError):
    """Labelling from the queue stopped before committing (the next run retries what was left)."""


@dataclass(frozen=True)
class QueueOptions:
    topic: str
    group: str = "parley-labeller"
    batch_size: int = 64
    """Candidates per poll: one segment per partition of a poll, one commit per poll."""
    idle_exit_s: float | None = 10.0
    max_messages: int | None = None
    retries: int = 3
    max_poll_interval_s: int = 3600
    """Longest a poll's labelling may take before the group gives its partitions to another member."""
    request_batch: int = 8
    """Requests per backend call."""


@dataclass
class QueueSummary(LabelSummary):
    candidates: int = 0
    duplicates: int = 0
    rejected: int = 0
    segments: list[str] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)
    """``topic/partition`` → the next offset the group will read."""


def _turns_of(candidate: LabellingCandidate, depth: int) -> Turn:
    previous = tuple((None, t.text) for t in candidate.context[-depth:]) if depth else ()
    return Turn(candidate.text, candidate.speaker, previous)


async def _label_candidates(
    candidates: Sequence[tuple[LabellingCandidate, str]],
    tasks: Sequence[LabelTask],
    bank: PromptBank,
    backend: Backend,
    cache: AnswerCache,
    options: QueueOptions,
    summary: QueueSummary,
) -> list[PoolItem]:
    depth = max((p.context_turns for p in bank.prompts), default=0)
    utterances = {
        c.utterance_id: Utterance(c.utterance_id, c.conversation_id, c.turn or 0, c.text, "live", c.speaker)
        for c, _ in candidates
    }
    turns = {c.utterance_id: _turns_of(c, depth) for c, _ in candidates}
    jobs = plan(utterances, tasks, bank, backend, turns)
    answers = await answer(jobs, backend, cache, summary, options.request_batch, progress=False)
    for attempt in range(options.retries):
        missing = [j for j in jobs if j.request.key not in answers]
        if not missing:
            break
        await asyncio.sleep(min(2.0**attempt, 30.0))
        log.warning("asking failed requests again", requests=len(missing), attempt=attempt + 1)
        answers |= await answer(missing, backend, cache, summary, options.request_batch, progress=False)
    missing = [j for j in jobs if j.request.key not in answers]
    if missing:
        raise QueueLabelError(
            f"{len(missing)} request(s) still failed after {options.retries} more round(s) "
            f"({summary.failure_reasons}); these offsets are not committed: run again to retry them"
        )
    labelled = collect(jobs, answers, backend)
    summary.answered += labelled.answered
    summary.abstained += labelled.abstained
    for reason, n in labelled.reasons.items():
        summary.abstention_reasons[reason] = summary.abstention_reasons.get(reason, 0) + n
    records: dict[str, list[dict[str, Any]]] = {}
    for r in labelled.records:
        records.setdefault(r["id"], []).append(r)
    ensemble: dict[str, dict[str, dict[str, Any]]] = {}
    for e in labelled.ensemble:
        ensemble.setdefault(e["id"], {})[e["task"]] = {
            k: e[k] for k in ("label", "scores", "prompts", "abstained")
        }
    return [
        PoolItem(
            json.loads(c.model_dump_json(exclude_none=True)),
            records.get(c.utterance_id, []),
            ensemble.get(c.utterance_id, {}),
            source,
        )
        for c, source in candidates
    ]


async def label_queue(
    kafka: KafkaSettings,
    options: QueueOptions,
    tasks: Sequence[LabelTask],
    bank: PromptBank,
    backend: Backend,
    cache: AnswerCache,
    pool: Pool,
) -> QueueSummary:
    """Consume the queue into the pool until idle (or ``max_messages``); see the module docstring."""
    started = time.perf_counter()
    summary = new_summary(QueueSummary, tasks, bank, backend)
    pool.ensure_tasks({t.name: t.labels for t in tasks})
    await backend.check()
    # Labelling a poll can take minutes on a slow backend: the group must not drop the consumer
    # between two polls for it (a dropped consumer could commit nothing).
    consumer = kafka_consumer(
        kafka, options.topic, group_id=options.group, max_poll_interval_ms=options.max_poll_interval_s * 1000
    )
    await consumer.start()
    seen: set[str] = set()
    try:
        idle_since = time.monotonic()
        while options.max_messages is None or summary.candidates + summary.rejected < options.max_messages:
            room = options.batch_size
            if options.max_messages is not None:
                room = min(room, options.max_messages - summary.candidates - summary.rejected)
            polled = await consumer.getmany(timeout_ms=1000, max_records=room)
            if not any(polled.values()):
                if options.idle_exit_s is not None and time.monotonic() - idle_since >= options.idle_exit_s:
                    break
                continue
            idle_since = time.monotonic()
            offsets = {}
            for tp, messages in polled.items():
                if not messages:
                    continue
                name = f"{tp.topic}-{tp.partition:03d}-{messages[0].offset:012d}-{messages[-1].offset:012d}"
                good: list[tuple[LabellingCandidate, str]] = []
                bad: list[dict[str, Any]] = []
                for m in messages:
                    source = f"{tp.topic}/{tp.partition}/{m.offset}"
                    try:
                        candidate = decode_candidate(m.value)
                    except ContractError as e:
                        bad.append(
                            {
                                "source": source,
                                "reasons": [r.model_dump(mode="json") for r in e.rejections],
                                "value": (m.value or b"").decode("utf-8", errors="replace")[:4096],
                            }
                        )
                        continue
                    if candidate.utterance_id in seen:  # a replay the worker sent again
                        summary.duplicates += 1
                        continue
                    seen.add(candidate.utterance_id)
                    good.append((candidate, source))
                if bad:
                    pool.write_rejected(name, bad)
                    summary.rejected += len(bad)
                    log.warning("queue messages rejected", count=len(bad), segment=name)
                if good:
                    items = await _label_candidates(good, tasks, bank, backend, cache, options, summary)
                    summary.segments.append(pool.write_segment(name, items))
                    summary.candidates += len(items)
                offsets[tp] = messages[-1].offset + 1
            await consumer.commit(offsets)
            summary.committed.update({f"{tp.topic}/{tp.partition}": o for tp, o in offsets.items()})
            log.info(
                "queue labelled",
                candidates=summary.candidates,
                rejected=summary.rejected,
                backend_calls=summary.backend_calls,
                cache_hits=summary.cache_hits,
            )
    finally:
        await consumer.stop()
    summary.utterances = summary.candidates
    summary.estimated_cost = backend.cost(summary.prompt_tokens, summary.completion_tokens)
    summary.seconds = time.perf_counter() - started
    return summary
