"""Sample conversations written for parley, with gold labels: what the demo trains on and sends.

Fifty-odd made-up contact-centre conversations (billing, deliveries, cancellations, accounts,
technical faults, complaints, sales; agent and customer turns), each utterance labelled with an
intent, a sentiment and a dialogue act. They live in parley/ because every package reads them: train/
fits the demo student on one part, engines/ verifies engines on them, stream/ sends them.

    conversations.jsonl   one utterance per line, in the ``utterances`` contract (docs/contracts.md)
    labels.jsonl          {"id": utterance_id, "task": ..., "label": ...}, the shared gold layout

``scripts/demo_conversations.py`` wrote both files (it states the labelling rules). The split into
training and held-out conversations is fixed by a seed and stratified by kind (``demo-<kind>-NNNN``),
so the demo's accuracy is measured on whole conversations the student never saw.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "HELD_OUT_FRACTION",
    "SPLIT_SEED",
    "TASKS",
    "Part",
    "SampleUtterance",
    "conversations_path",
    "labels_path",
    "read_conversations",
    "read_labels",
    "split",
    "write_part",
]

TASKS: Final[dict[str, list[str]]] = {
    "intent": [
        "greeting",
        "billing_question",
        "order_status",
        "cancel",
        "account",
        "tech_support",
        "complaint",
        "purchase",
        "thanks",
        "goodbye",
        "other",
    ],
    "sentiment": ["negative", "neutral", "positive"],
    "dialogue_act": ["inform", "question", "directive", "commissive"],
}
"""The label set of each task the sample conversations are labelled for, in the demo student's order."""

SPLIT_SEED: Final = 15
HELD_OUT_FRACTION: Final = 0.3

Part = Literal["all", "train", "held_out"]


@dataclass(frozen=True, slots=True)
class SampleUtterance:
    conversation_id: str
    utterance_id: str
    turn: int
    speaker: str
    text: str


def conversations_path() -> Path:
    """The JSONL file of sample conversations, one utterance per line in the utterances contract."""
    return _path("conversations.jsonl")


def labels_path() -> Path:
    """The gold labels of the sample utterances: one {"id", "task", "label"} per line."""
    return _path("labels.jsonl")


def _path(name: str) -> Path:
    with as_file(files(__name__) / name) as path:
        return Path(path)


def read_conversations(part: Part = "all") -> list[SampleUtterance]:
    """The sample utterances of ``part``, in file order (conversation by conversation)."""
    rows = [json.loads(line) for line in _lines(conversations_path())]
    utterances = [
        SampleUtterance(r["conversation_id"], r["utterance_id"], r["turn"], r["speaker"], r["text"])
        for r in rows
    ]
    if part == "all":
        return utterances
    train, held_out = split(u.conversation_id for u in utterances)
    keep = train if part == "train" else held_out
    return [u for u in utterances if u.conversation_id in keep]


def read_labels(path: Path | None = None) -> dict[str, dict[str, str]]:
    """{utterance_id: {task: label}} from a gold file in the shared layout (the samples' by default)."""
    gold: dict[str, dict[str, str]] = {}
    for line in _lines(path or labels_path()):
        row = json.loads(line)
        gold.setdefault(row["id"], {})[row["task"]] = row["label"]
    return gold


def split(
    conversation_ids: Iterable[str], held_out: float = HELD_OUT_FRACTION, seed: int = SPLIT_SEED
) -> tuple[set[str], set[str]]:
    """(training, held-out) conversation ids: within each kind (the id up to its last '-'), a seeded
    shuffle, of which the first ``held_out`` share (at least one) is held out."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for cid in sorted(set(conversation_ids)):
        by_kind[cid.rsplit("-", 1)[0]].append(cid)
    rng = random.Random(seed)
    train: set[str] = set()
    test: set[str] = set()
    for kind in sorted(by_kind):
        ids = rng.sample(by_kind[kind], len(by_kind[kind]))
        n = max(1, round(held_out * len(ids))) if len(ids) > 1 else 0
        test.update(ids[:n])
        train.update(ids[n:])
    return train, test


def write_part(part: Part, directory: Path, tag: str | None = None) -> tuple[Path, Path]:
    """Write ``part``'s conversations and gold labels into ``directory`` (conversations.jsonl,
    labels.jsonl); the conversations in timestamp order, interleaved as live traffic arrives.

    With ``tag``, every conversation id (and the utterance ids built on it) ends in ``-<tag>``: a
    second run then brings new conversations, whose state in Redis starts afresh, instead of replays
    the worker would recognise and not count again."""
    keep = {u.utterance_id for u in read_conversations(part)}
    rows = [json.loads(line) for line in _lines(conversations_path())]
    rows = sorted((r for r in rows if r["utterance_id"] in keep), key=lambda r: (r["timestamp"], r["turn"]))
    renamed = {r["utterance_id"]: r["utterance_id"] for r in rows}
    if tag:
        for r in rows:
            cid = r["conversation_id"]
            renamed[r["utterance_id"]] = r["utterance_id"].replace(cid, f"{cid}-{tag}", 1)
            r["conversation_id"], r["utterance_id"] = f"{cid}-{tag}", renamed[r["utterance_id"]]
    labels = [json.loads(line) for line in _lines(labels_path())]
    labels = [{**g, "id": renamed[g["id"]]} for g in labels if g["id"] in keep]
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "conversations.jsonl", directory / "labels.jsonl"
    for path, records in zip(paths, (rows, labels), strict=True):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return paths


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
