"""The labelled pool: what the labeller took from the labelling queue, and what people reviewed, on a
local disk or any fsspec URL.

    <pool>/pool.json                 {"tasks": {task: [labels]}}: written by the first labelling run;
                                     every later run and every review import must agree with it
    <pool>/queue/<segment>.jsonl     one line per candidate: the worker's message as it came, its
                                     Kafka coordinates, the prompt bank's records and the ensemble
    <pool>/human/<stamp>-<digest>.jsonl   imported reviews: {id, task, label}
    <pool>/rejected/<segment>.jsonl  queue messages that did not decode, with their reasons

Files are written whole (beside their name, then moved into place) and never changed: a segment is
named after its topic, partition and offsets, a review file after its import time and content. A pool
on an object store therefore needs neither append nor lock. A segment written twice (a labeller
killed between writing it and committing its offsets) holds the same candidates again; reading keeps
the first of each utterance, and the later of two reviews of one (utterance, task).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from train.errors import TrainError

POOL_FILE: Final = "pool.json"
QUEUE_DIR: Final = "queue"
HUMAN_DIR: Final = "human"
REJECTED_DIR: Final = "rejected"
PARTIAL: Final = ".partial"
CONTEXT_SEPARATOR: Final = " ⏎ "
"""Joins the turns before an utterance in one CSV cell of a review file."""


class PoolError(TrainError, ValueError):
    """The pool is unreadable, or a write or an import disagrees with it."""


@dataclass(frozen=True)
class PoolItem:
    """One candidate of the queue with its LLM labels."""

    candidate: dict[str, Any]
    """The LabellingCandidate as the worker sent it (JSON)."""
    records: list[dict[str, Any]]
    """The prompt bank's records ({id, task, prompt_id, label, scores, …}), the layout training reads."""
    ensemble: dict[str, dict[str, Any]]
    """Per task: {label, scores, prompts, abstained}."""
    source: str
    """``topic/partition/offset`` it was read from."""

    @property
    def id(self) -> str:
        return str(self.candidate["utterance_id"])


@dataclass
class PoolContents:
    tasks: dict[str, list[str]]
    items: dict[str, PoolItem] = field(default_factory=dict)
    human: dict[str, dict[str, str]] = field(default_factory=dict)
    """task → {utterance id → label}"""


class Pool:
    def __init__(self, uri: str) -> None:
        from fsspec.core import url_to_fs

        self.uri = uri
        self.fs, self.root = url_to_fs(uri)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def _write(self, path: str, data: bytes) -> None:
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path + PARTIAL, data)
        self.fs.mv(path + PARTIAL, path)

    def tasks(self) -> dict[str, list[str]] | None:
        path = self._path(POOL_FILE)
        if not self.fs.exists(path):
            return None
        try:
            tasks = json.loads(self.fs.cat_file(path))["tasks"]
        except (ValueError, KeyError, TypeError) as e:
            raise PoolError(f"{self.uri}/{POOL_FILE} is not a pool description: {e}") from None
        return {str(t): [str(x) for x in labels] for t, labels in tasks.items()}

    def ensure_tasks(self, tasks: Mapping[str, Sequence[str]]) -> None:
        """Record the pool's tasks and labels on first use; refuse a run with other ones after."""
        wanted = {t: list(labels) for t, labels in tasks.items()}
        have = self.tasks()
        if have is None:
            self._write(self._path(POOL_FILE), json.dumps({"tasks": wanted}, indent=2).encode())
        elif have != wanted:
            raise PoolError(
                f"the pool {self.uri} holds tasks {have}, this run labels {wanted}: use the same task "
                "specs, or another pool"
            )

    def write_segment(self, name: str, items: Iterable[PoolItem]) -> str:
        lines = [
            json.dumps(
                {
                    "candidate": i.candidate,
                    "source": i.source,
                    "records": i.records,
                    "ensemble": i.ensemble,
                },
                ensure_ascii=False,
            )
            for i in items
        ]
        path = self._path(QUEUE_DIR, f"{name}.jsonl")
        self._write(path, ("\n".join(lines) + "\n").encode("utf-8"))
        return path

    def write_rejected(self, name: str, rows: Sequence[dict[str, Any]]) -> str:
        """Queue messages that did not decode, with their reasons (kept, never used for training)."""
        path = self._path(REJECTED_DIR, f"{name}.jsonl")
        self._write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
        return path

    def _files(self, folder: str) -> list[str]:
        path = self._path(folder)
        if not self.fs.exists(path):
            return []
        return sorted(p for p in self.fs.ls(path, detail=False) if str(p).endswith(".jsonl"))

    def _lines(self, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
        text = self.fs.cat_file(path).decode("utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise PoolError(f"{path}, line {number}: not JSON ({e})") from None
            if not isinstance(row, dict):
                raise PoolError(f"{path}, line {number}: not a JSON object")
            yield number, row

    def read(self) -> PoolContents:
        tasks = self.tasks()
        if tasks is None:
            raise PoolError(f"{self.uri} is not a pool yet (no {POOL_FILE}): label into it first")
        contents = PoolContents(tasks)
        for path in self._files(QUEUE_DIR):
            for number, row in self._lines(path):
                try:
                    item = PoolItem(row["candidate"], row["records"], row["ensemble"], row["source"])
                    uid = item.id
                except (KeyError, TypeError) as e:
                    raise PoolError(f"{path}, line {number}: not a pool item ({e})") from None
                contents.items.setdefault(uid, item)
        for path in self._files(HUMAN_DIR):
            for number, row in self._lines(path):
                try:
                    contents.human.setdefault(str(row["task"]), {})[str(row["id"])] = str(row["label"])
                except KeyError as e:
                    raise PoolError(
                        f"{path}, line {number}: a review needs id, task and label ({e})"
                    ) from None
        return contents

    def add_reviews(self, rows: Sequence[dict[str, str]]) -> str | None:
        """Store reviewed labels ({id, task, label}); the same rows imported twice are stored once.
        The path written, or None when nothing was new."""
        body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
        digest = hashlib.sha256(body).hexdigest()[:16]
        if any(p.rsplit("/", 1)[-1].endswith(f"-{digest}.jsonl") for p in self._files(HUMAN_DIR)):
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self._path(HUMAN_DIR, f"{stamp}-{digest}.jsonl")
        self._write(path, body)
        return path


# ---- human review: export and import -------------------------------------------------------------

REVIEW_FIXED: Final = ("id", "conversation_id", "context", "text", "priority")


def review_priority(contents: PoolContents) -> dict[str, float]:
    """How much a person's label of each utterance is worth, in [0, 1], the largest over its tasks of:

    - 1 where the serving engine's label (the worker's prediction) and the LLM ensemble's differ:
      one of the two is wrong, and a person settles which;
    - how much rarer than uniform the ensemble's label is in the pool (1 − frequency × number of
      labels, at least 0): the few labels of rare classes are the ones a small budget lacks;

    plus, to break ties, a tenth of the ensemble's doubt (1 − its top score)."""
    counts: dict[str, dict[str, int]] = {t: {} for t in contents.tasks}
    for item in contents.items.values():
        for task in contents.tasks:
            label = (item.ensemble.get(task) or {}).get("label")
            if label:
                counts[task][label] = counts[task].get(label, 0) + 1
    out = {}
    for uid, item in contents.items.items():
        best, doubt = 0.0, 0.0
        for task, names in contents.tasks.items():
            got = item.ensemble.get(task) or {}
            label, scores = got.get("label"), got.get("scores") or {}
            if not label:
                continue
            served = ((item.candidate.get("predictions") or {}).get(task) or {}).get("label")
            total = sum(counts[task].values()) or 1
            rarity = max(0.0, 1.0 - counts[task].get(label, 0) / total * len(names))
            best = max(best, 1.0 if served and served != label else 0.0, rarity)
            doubt = max(doubt, 1.0 - float(scores.get(label, 0.0)))
        out[uid] = round(min(1.0, best + 0.1 * doubt), 6)
    return out


def review_rows(
    contents: PoolContents, only_unreviewed: bool = True, limit: int | None = None
) -> list[dict[str, Any]]:
    """One row per utterance, the most worth reviewing first (:func:`review_priority`; at most
    ``limit``): its id, conversation, context and text, the priority; per task the ensemble's top
    labels (``<task>_llm``: ``label (0.62), label (0.21)``) and an empty ``<task>`` for the reviewer."""
    priority = review_priority(contents)
    rows = []
    for uid, item in sorted(contents.items.items(), key=lambda kv: -priority[kv[0]]):
        if only_unreviewed and all(uid in contents.human.get(t, {}) for t in contents.tasks):
            continue
        c = item.candidate
        row: dict[str, Any] = {
            "id": uid,
            "conversation_id": c.get("conversation_id"),
            "context": [t.get("text", "") for t in c.get("context") or []],
            "text": c.get("text"),
            "priority": priority[uid],
        }
        for task in contents.tasks:
            scores = (item.ensemble.get(task) or {}).get("scores") or {}
            top = sorted(scores.items(), key=lambda kv: -kv[1])[:3]
            row[f"{task}_llm"] = ", ".join(f"{k} ({v:.2f})" for k, v in top)
            row[task] = contents.human.get(task, {}).get(uid, "")
        rows.append(row)
    return rows[:limit] if limit is not None else rows


def write_review(rows: Sequence[dict[str, Any]], tasks: Sequence[str], out: Path) -> None:
    """JSONL or CSV by the file's suffix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        columns = [*REVIEW_FIXED, *(c for t in tasks for c in (f"{t}_llm", t))]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "context": CONTEXT_SEPARATOR.join(row["context"])})
        out.write_text(buffer.getvalue(), encoding="utf-8")
    elif out.suffix == ".jsonl":
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        raise PoolError(f"{out}: write the review as .jsonl or .csv")


def read_review(path: Path, contents: PoolContents) -> list[dict[str, str]]:
    """The labels a reviewer filled in, as {id, task, label}, checked against the pool: an unknown
    utterance or a label outside its task's set is an error naming the row; empty cells are skipped."""
    where = "row" if path.suffix == ".csv" else "line"
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(enumerate(csv.DictReader(f), 2))
    elif path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as e:
                    raise PoolError(f"{path}, line {number}: not JSON ({e})") from None
    else:
        raise PoolError(f"{path}: a review is read from .jsonl or .csv")
    labels: list[dict[str, str]] = []
    for number, row in rows:
        if not isinstance(row, dict) or not row.get("id"):
            raise PoolError(f"{path}, {where} {number}: no id")
        uid = str(row["id"])
        if uid not in contents.items:
            raise PoolError(f"{path}, {where} {number}: utterance {uid!r} is not in the pool")
        for task, names in contents.tasks.items():
            value = str(row.get(task) or "").strip()
            if not value:
                continue
            if value not in names:
                raise PoolError(
                    f"{path}, {where} {number}: {value!r} is not a {task} label; one of {', '.join(names)}"
                )
            labels.append({"id": uid, "task": task, "label": value})
    return labels


# ---- the pool as training data ---------------------------------------------------------------------


def training_rows(
    contents: PoolContents, prefix: str = "pool/", split: str = "pool"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, str]]]:
    """(utterances, LLM records, human labels) of the pool in the layout training reads. Each
    candidate is an utterance of ``split`` in a dialogue named after its conversation, with the turns
    before it as unlabelled utterances of the same dialogue (context for the student, partners for
    the pairs). Utterance and dialogue ids get ``prefix``, so they never meet the earlier data's."""
    utterances: dict[str, dict[str, Any]] = {}
    for uid, item in contents.items.items():
        c = item.candidate
        context = c.get("context") or []
        turn = c.get("turn")
        turn = len(context) if turn is None else int(turn)
        dialogue = prefix + str(c["conversation_id"])
        utterances[uid] = {
            "id": prefix + uid,
            "dialogue_id": dialogue,
            "turn": turn,
            "speaker": c.get("speaker"),
            "text": c["text"],
            "split": split,
        }
        for k, previous in enumerate(context):
            pid = str(previous["utterance_id"])
            if pid not in contents.items:
                utterances.setdefault(
                    pid,
                    {
                        "id": prefix + pid,
                        "dialogue_id": dialogue,
                        "turn": max(turn - len(context) + k, 0),
                        "text": previous["text"],
                        "split": split,
                    },
                )
    records = [
        {**r, "id": prefix + str(r["id"])}
        for item in contents.items.values()
        for r in item.records
        if not r.get("abstained")
    ]
    human = [
        {"id": prefix + uid, "task": task, "label": label}
        for task, by_id in contents.human.items()
        for uid, label in by_id.items()
        if uid in contents.items
    ]
    return list(utterances.values()), records, human
