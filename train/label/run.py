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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    utterances: dict[str, Utterance], tasks: Sequence[LabelTask], bank: PromptBank, backend: Backend
) -> list[_Job]:
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
    summary = LabelSummary(
        utterances=len(utterances),
        tasks=[t.name for t in tasks],
        prompts={t.name: [p.id for p in bank.for_task(t.name)] for t in tasks},
        backend=backend.kind,
        model=backend.model,
    )
    for t in tasks:
        if not bank.for_task(t.name):
            raise SpecError(f"no prompt of the bank applies to task {t.name!r}")
    await backend.check()
    jobs = plan(utterances, tasks, bank, backend)
    summary.requests = len(jobs)
    unique = {j.request.key: j.request for j in jobs}
    summary.unique_requests = len(unique)
    answers: dict[str, Answer] = cache.get_many(unique)
    summary.cache_hits = len(answers)
    missing = [r for k, r in unique.items() if k not in answers]
    bar = _Progress(len(missing), progress)
    failures: Counter[str] = Counter()
    try:
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            got = await backend.score(batch)
            summary.backend_calls += len(batch)
            for request, answer in zip(batch, got, strict=True):
                summary.prompt_tokens += answer.prompt_tokens
                summary.completion_tokens += answer.completion_tokens
                if answer.failed:
                    failures[answer.failed] += 1
                else:
                    answers[request.key] = answer
            cache.put_many((r.key, a) for r, a in zip(batch, got, strict=True))
            bar.advance(len(batch))
            if on_batch:
                on_batch(summary.backend_calls)
    finally:
        bar.close()
    summary.failed = sum(failures.values())
    summary.failure_reasons = dict(failures.most_common(10))
    summary.estimated_cost = backend.cost(summary.prompt_tokens, summary.completion_tokens)
    _write_outputs(jobs, answers, backend, out, summary)
    summary.seconds = time.perf_counter() - started
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
    return summary


def _write_outputs(
    jobs: Sequence[_Job], answers: dict[str, Answer], backend: Backend, out: Path, summary: LabelSummary
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    reasons: Counter[str] = Counter()
    ensemble: dict[tuple[str, str], list[Answer]] = {}
    abstentions: Counter[tuple[str, str]] = Counter()
    order: list[tuple[str, str]] = []
    labels_of: dict[str, tuple[str, ...]] = {}
    tmp = out / "llm_labels.jsonl.partial"
    with tmp.open("w", encoding="utf-8") as f:
        for job in jobs:
            answer = answers.get(job.request.key)
            if answer is None:  # failed this run: no record, asked again next run
                continue
            pair = (job.utterance, job.task)
            if pair not in ensemble:
                ensemble[pair] = []
                order.append(pair)
                labels_of[job.task] = job.request.labels
            record: dict[str, Any] = {
                "id": job.utterance,
                "task": job.task,
                "prompt_id": job.prompt,
                "label": answer.label,
                "scores": {k: round(v, 6) for k, v in (answer.scores or {}).items()},
                "model": backend.model,
                "backend": backend.kind,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
            }
            if answer.scores:
                summary.answered += 1
                ensemble[pair].append(answer)
            else:
                reason = answer.abstained or "no label"
                record["abstained"] = reason
                summary.abstained += 1
                reasons[reason.split(":")[0]] += 1
                abstentions[pair] += 1
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(out / "llm_labels.jsonl")
    summary.abstention_reasons = dict(reasons.most_common())
    tmp = out / "ensemble.jsonl.partial"
    with tmp.open("w", encoding="utf-8") as f:
        for uid, task in order:
            got = ensemble[(uid, task)]
            labels = labels_of[task]
            mean = (
                {k: sum((a.scores or {}).get(k, 0.0) for a in got) / len(got) for k in labels} if got else {}
            )
            f.write(
                json.dumps(
                    {
                        "id": uid,
                        "task": task,
                        "label": max(mean, key=mean.__getitem__) if mean else None,
                        "scores": {k: round(v, 6) for k, v in mean.items()},
                        "prompts": len(got),
                        "abstained": abstentions[(uid, task)],
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    tmp.replace(out / "ensemble.jsonl")
