"""A labelling run: every (utterance, task, prompt) is asked once, ever.

Requests are rendered, looked up in the answer cache, and only the misses go to the backend, in
batches whose answers are committed to the cache as they come back: a killed run resumes where it
stopped and a finished run costs nothing to repeat. At the end the run writes, into its output
folder:

    llm_labels.jsonl   {id, task, prompt_id, label, scores, model, backend, prompt_tokens,
                        completion_tokens[, abstained]}      (the layout training reads)
    ensemble.jsonl     {id, task, label, scores, prompts, abstained}: the mean over answering prompts
    summary.json       requests, cache hits, backend calls, failures, abstentions by reason,
                       tokens, estimated cost, seconds
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from train.data import Utterance, group_dialogues
from train.label.backend import Answer, Backend, LabelRequest
from train.label.cache import AnswerCache, request_key
from train.label.spec import LabelTask, PromptBank, SpecError, Turn, render

log = structlog.get_logger(__name__)

CONTENT_FREE = "N/A"
"""The utterance a calibrating backend scores to measure a prompt's own label bias."""


@dataclass
class LabelSummary:
    utterances: int = 0
    tasks: list[str] = field(default_factory=list)
    prompts: dict[str, list[str]] = field(default_factory=dict)
    requests: int = 0
    unique_requests: int = 0
    cache_hits: int = 0
    backend_calls: int = 0
    answered: int = 0
    abstained: int = 0
    failed: int = 0
    abstention_reasons: dict[str, int] = field(default_factory=dict)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost: float | None = None
    seconds: float = 0.0
    backend: str = ""
    model: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Job:
    utterance: str
    task: str
    prompt: str
    request: LabelRequest


def _turns(utterances: dict[str, Utterance], depth: int) -> dict[str, Turn]:
    turns = {}
    for us in group_dialogues(utterances.values()).values():
        for k, u in enumerate(us):
            previous = tuple((p.speaker, p.text) for p in us[max(0, k - depth) : k])
            turns[u.id] = Turn(u.text, u.speaker, previous)
    return turns


def plan(
    utterances: dict[str, Utterance],
    tasks: Sequence[LabelTask],
    bank: PromptBank,
    backend: Backend,
    turns: Mapping[str, Turn] | None = None,
) -> list[_Job]:
    """Every (utterance, task, prompt) request, rendered. The turns before each utterance come from
    its dialogue in ``utterances``, or from ``turns`` when the caller has them (the labelling queue's
    candidates carry their own)."""
    if turns is None:
        depth = max((p.context_turns for p in bank.prompts), default=0)
        turns = _turns(utterances, depth)
    jobs = []
    for uid in utterances:
        for task in tasks:
            for prompt in bank.for_task(task.name):
                rendered = render(task, prompt, turns[uid])
                key = request_key(backend.kind, backend.model, rendered, task.labels)
                free = render(task, prompt, Turn(CONTENT_FREE, turns[uid].speaker))
                jobs.append(_Job(uid, task.name, prompt.id, LabelRequest(key, rendered, task.labels, free)))
    return jobs


class _Progress:
    """A rich progress bar on a terminal (rate, ETA); a log line every 15 s otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.started, self._last_log = total, 0, time.monotonic(), 0.0
        self._bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("labelling"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._bar.add_task("label", total=total, rate="")
            self._bar.start()
        self.enabled = enabled

    def advance(self, n: int) -> None:
        self.done += n
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = f"{self.done / elapsed:.2f} req/s"
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=rate)
        elif self.enabled and time.monotonic() - self._last_log > 15:
            self._last_log = time.monotonic()
            eta = (self.total - self.done) / max(self.done / elapsed, 1e-9)
            log.info("labelling", done=self.done, total=self.total, rate=rate, eta_s=round(eta))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


_S = TypeVar("_S", bound="LabelSummary")


def new_summary(kind: type[_S], tasks: Sequence[LabelTask], bank: PromptBank, backend: Backend) -> _S:
    """An empty summary of a run of ``tasks`` × ``bank`` on ``backend``; a task no prompt of the
    bank applies to is an error, before anything is asked."""
    for t in tasks:
        if not bank.for_task(t.name):
            raise SpecError(f"no prompt of the bank applies to task {t.name!r}")
    return kind(
        tasks=[t.name for t in tasks],
        prompts={t.name: [p.id for p in bank.for_task(t.name)] for t in tasks},
        backend=backend.kind,
        model=backend.model,
    )


async def label(
    utterances: dict[str, Utterance],
    tasks: Sequence[LabelTask],
    bank: PromptBank,
    backend: Backend,
    cache: AnswerCache,
    out: Path,
    batch_size: int = 16,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> LabelSummary:
    """Label everything, resuming from the cache; write the records, the ensemble and the summary."""
    started = time.perf_counter()
    summary = new_summary(LabelSummary, tasks, bank, backend)
    summary.utterances = len(utterances)
    await backend.check()
    jobs = plan(utterances, tasks, bank, backend)
    answers = await answer(jobs, backend, cache, summary, batch_size, progress, on_batch)
    summary.estimated_cost = backend.cost(summary.prompt_tokens, summary.completion_tokens)
    _write_outputs(jobs, answers, backend, out, summary)
    summary.seconds = time.perf_counter() - started
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
    return summary


async def answer(
    jobs: Sequence[_Job],
    backend: Backend,
    cache: AnswerCache,
    summary: LabelSummary,
    batch_size: int = 16,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Answer]:
    """The answers to ``jobs`` by request key: from the cache, then the misses from the backend in
    batches, each batch committed to the cache as it comes back. Failed requests have no answer;
    the summary counts requests, hits, calls, tokens and failures."""
    summary.requests += len(jobs)
    unique = {j.request.key: j.request for j in jobs}
    summary.unique_requests += len(unique)
    answers: dict[str, Answer] = cache.get_many(unique)
    summary.cache_hits += len(answers)
    missing = [r for k, r in unique.items() if k not in answers]
    bar = _Progress(len(missing), progress)
    failures: Counter[str] = Counter(summary.failure_reasons)
    try:
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            got = await backend.score(batch)
            summary.backend_calls += len(batch)
            for request, reply in zip(batch, got, strict=True):
                summary.prompt_tokens += reply.prompt_tokens
                summary.completion_tokens += reply.completion_tokens
                if reply.failed:
                    failures[reply.failed] += 1
                    summary.failed += 1
                else:
                    answers[request.key] = reply
            cache.put_many((r.key, a) for r, a in zip(batch, got, strict=True))
            bar.advance(len(batch))
            if on_batch:
                on_batch(summary.backend_calls)
    finally:
        bar.close()
    summary.failure_reasons = dict(failures.most_common(10))
    return answers


@dataclass
class Labelled:
    """What a labelling run's answers make: one record per (utterance, task, prompt) asked and
    answered (or abstained), and one ensemble row per (utterance, task), in the order asked."""

    records: list[dict[str, Any]] = field(default_factory=list)
    ensemble: list[dict[str, Any]] = field(default_factory=list)
    answered: int = 0
    abstained: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def collect(jobs: Sequence[_Job], answers: Mapping[str, Answer], backend: Backend) -> Labelled:
    """Records and ensemble rows of ``jobs``; a job whose request failed has none (it is asked again
    by the next run)."""
    out = Labelled()
    members: dict[tuple[str, str], list[Answer]] = {}
    abstentions: Counter[tuple[str, str]] = Counter()
    labels_of: dict[str, tuple[str, ...]] = {}
    for job in jobs:
        reply = answers.get(job.request.key)
        if reply is None:
            continue
        pair = (job.utterance, job.task)
        members.setdefault(pair, [])
        labels_of[job.task] = job.request.labels
        record: dict[str, Any] = {
            "id": job.utterance,
            "task": job.task,
            "prompt_id": job.prompt,
            "label": reply.label,
            "scores": {k: round(v, 6) for k, v in (reply.scores or {}).items()},
            "model": backend.model,
            "backend": backend.kind,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
        }
        if reply.scores:
            out.answered += 1
            members[pair].append(reply)
        else:
            reason = reply.abstained or "no label"
            record["abstained"] = reason
            out.abstained += 1
            out.reasons[reason.split(":")[0]] += 1
            abstentions[pair] += 1
        out.records.append(record)
    for (uid, task), got in members.items():
        labels = labels_of[task]
        mean = {k: sum((a.scores or {}).get(k, 0.0) for a in got) / len(got) for k in labels} if got else {}
        out.ensemble.append(
            {
                "id": uid,
                "task": task,
                "label": max(mean, key=mean.__getitem__) if mean else None,
                "scores": {k: round(v, 6) for k, v in mean.items()},
                "prompts": len(got),
                "abstained": abstentions[(uid, task)],
            }
        )
    return out


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _write_outputs(
    jobs: Sequence[_Job], answers: dict[str, Answer], backend: Backend, out: Path, summary: LabelSummary
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    labelled = collect(jobs, answers, backend)
    summary.answered, summary.abstained = labelled.answered, labelled.abstained
    summary.abstention_reasons = dict(labelled.reasons.most_common())
    _write_jsonl(out / "llm_labels.jsonl", labelled.records)
    _write_jsonl(out / "ensemble.jsonl", labelled.ensemble)
