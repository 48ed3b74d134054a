"""The sample conversations: valid inputs, fully labelled, a fair split, and the generator behind them."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from collections import Counter
from pathlib import Path

from parley.samples import (
    TASKS,
    conversations_path,
    labels_path,
    read_conversations,
    read_labels,
    split,
    write_part,
)
from stream.send import read_utterances

ROOT = Path(__file__).resolve().parents[2]


def test_every_sample_line_is_a_valid_utterance_with_a_gold_label_per_task() -> None:
    """Each line passes the utterances contract, and has exactly one known label for each task."""
    utterances = read_utterances(conversations_path())
    gold = read_labels()
    assert [u.utterance_id for u in utterances] == [u.utterance_id for u in read_conversations()]
    assert set(gold) == {u.utterance_id for u in utterances}
    for uid, labels in gold.items():
        assert set(labels) == set(TASKS), uid
        assert all(labels[task] in TASKS[task] for task in TASKS), (uid, labels)
    assert len(labels_path().read_text().splitlines()) == len(utterances) * len(TASKS)


def test_conversations_are_whole_dialogues_of_both_speakers() -> None:
    """40-60 conversations of 5-10 turns, numbered from 0, each with agent and customer turns."""
    by_conversation: dict[str, list] = {}
    for u in read_conversations():
        by_conversation.setdefault(u.conversation_id, []).append(u)
    assert 40 <= len(by_conversation) <= 60
    for cid, turns in by_conversation.items():
        assert 5 <= len(turns) <= 10, cid
        assert [u.turn for u in turns] == list(range(len(turns))), cid
        assert {u.speaker for u in turns} == {"agent", "customer"}, cid


def test_every_label_of_every_task_occurs() -> None:
    """No class is empty: a head never has to learn a label it was never shown."""
    gold = read_labels()
    for task, labels in TASKS.items():
        counts = Counter(g[task] for g in gold.values())
        assert set(counts) == set(labels), task


def test_the_split_is_by_conversation_seeded_and_covers_every_kind() -> None:
    """Training and held-out conversations are disjoint, cover all, repeat with the seed, and each kind
    of conversation is in both parts, about 30% held out."""
    ids = {u.conversation_id for u in read_conversations()}
    train, held_out = split(ids)
    assert train.isdisjoint(held_out)
    assert train | held_out == ids
    assert split(sorted(ids, reverse=True)) == (train, held_out)
    assert split(ids, seed=1) != (train, held_out)
    kind = lambda cid: cid.rsplit("-", 1)[0]  # noqa: E731
    assert {kind(c) for c in train} == {kind(c) for c in held_out} == {kind(c) for c in ids}
    assert 0.2 <= len(held_out) / len(ids) <= 0.4
    parts = read_conversations("train"), read_conversations("held_out")
    assert [{u.conversation_id for u in p} for p in parts] == [train, held_out]


def test_write_part_writes_the_held_out_conversations_in_arrival_order(tmp_path: Path) -> None:
    """The held-out file holds exactly the held-out utterances, ordered by timestamp (conversations
    interleave as they would arrive live), and its gold file exactly their labels."""
    conversations, labels = write_part("held_out", tmp_path / "held-out")
    rows = [json.loads(line) for line in conversations.read_text().splitlines()]
    expected = {u.utterance_id for u in read_conversations("held_out")}
    assert {r["utterance_id"] for r in rows} == expected
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    assert set(read_labels(labels)) == expected
    assert len(read_utterances(conversations)) == len(rows)


def test_the_module_entry_point_writes_a_part(tmp_path: Path) -> None:
    """`python -m parley.samples held_out DIR` writes the two files; a wrong part is a usage error."""
    done = subprocess.run(
        [sys.executable, "-m", "parley.samples", "held_out", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "conversations.jsonl").is_file()
    assert (tmp_path / "labels.jsonl").is_file()
    wrong = subprocess.run(
        [sys.executable, "-m", "parley.samples", "test", str(tmp_path)], capture_output=True
    )
    assert wrong.returncode == 2


def test_the_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    """scripts/demo_conversations.py, seeded, writes the sample files byte for byte: the data and the
    code that states how it was made cannot drift apart."""
    generator = runpy.run_path(str(ROOT / "scripts" / "demo_conversations.py"))
    generator["main"](tmp_path)
    for path in (conversations_path(), labels_path()):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_tag_makes_new_conversations_with_their_gold_labels(tmp_path: Path) -> None:
    """With a tag every conversation and utterance id changes, and the gold file follows them."""
    conversations, labels = write_part("held_out", tmp_path, tag="r1")
    rows = [json.loads(line) for line in conversations.read_text().splitlines()]
    assert all(r["conversation_id"].endswith("-r1") for r in rows)
    assert all(r["utterance_id"].startswith(r["conversation_id"] + "-t") for r in rows)
    original = read_labels()
    tagged = read_labels(labels)
    assert set(tagged) == {r["utterance_id"] for r in rows}
    assert [tagged[r["utterance_id"]] for r in rows] == [
        original[r["utterance_id"].replace("-r1-t", "-t")] for r in rows
    ]
