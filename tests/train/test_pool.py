"""The labelled pool (train/pool.py), the human review round trip and the retraining merge and rule
(train/retrain.py), on files the tests write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from train.pool import Pool, PoolError, PoolItem, read_review, review_rows, training_rows, write_review
from train.retrain import EarlierData, PublishRule, merge_pool

TASKS = {"sentiment": ["negative", "neutral", "positive"]}


def item(uid: str, conversation: str, text: str, turn: int | None = None, context: int = 0) -> PoolItem:
    candidate: dict[str, Any] = {
        "conversation_id": conversation,
        "utterance_id": uid,
        "text": text,
        "context": [{"utterance_id": f"{conversation}-c{k}", "text": f"before {k}"} for k in range(context)],
    }
    if turn is not None:
        candidate["turn"] = turn
    scores = {"negative": 0.7, "neutral": 0.2, "positive": 0.1}
    records = [
        {"id": uid, "task": "sentiment", "prompt_id": p, "label": "negative", "scores": scores, "model": "m"}
        for p in ("p1", "p2")
    ]
    ensemble = {"sentiment": {"label": "negative", "scores": scores, "prompts": 2, "abstained": 0}}
    return PoolItem(candidate, records, ensemble, f"q/0/{uid}")


def test_segments_written_twice_are_read_once_and_tasks_are_pinned(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    pool.ensure_tasks(TASKS)
    pool.ensure_tasks(TASKS)  # the same tasks again: fine
    with pytest.raises(PoolError, match="holds tasks"):
        pool.ensure_tasks({"sentiment": ["pos", "neg"]})
    first = [item("a", "c1", "it broke again"), item("b", "c1", "still broken")]
    pool.write_segment("q-000-000000000000-000000000001", first)
    pool.write_segment("q-000-000000000000-000000000002", [*first, item("c", "c2", "thanks")])  # a replay
    contents = pool.read()
    assert sorted(contents.items) == ["a", "b", "c"]
    assert contents.items["a"].records == first[0].records
    assert not list((tmp_path / "pool" / "queue").glob("*.partial"))


def test_a_pool_that_was_never_written_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="not a pool yet"):
        Pool(str(tmp_path / "nothing")).read()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_review_export_and_import_round_trip(tmp_path: Path, suffix: str) -> None:
    pool = Pool(str(tmp_path / "pool"))
    pool.ensure_tasks(TASKS)
    pool.write_segment("s", [item("a", "c1", "it, broke", context=2), item("b", "c2", "fine")])
    rows = review_rows(pool.read())
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["context"] == ["before 0", "before 1"]
    assert rows[0]["sentiment_llm"].startswith("negative (0.70)")
    path = tmp_path / f"review{suffix}"
    write_review(rows, list(TASKS), path)
    if suffix == ".csv":  # a reviewer fills in one cell
        text = path.read_text().splitlines()
        assert text[0] == "id,conversation_id,context,text,priority,sentiment_llm,sentiment"
        text[1] = text[1] + "positive"
        path.write_text("\n".join(text) + "\n")
    else:
        filled = [json.loads(line) for line in path.read_text().splitlines()]
        filled[0]["sentiment"] = "positive"
        path.write_text("".join(json.dumps(r) + "\n" for r in filled))
    labels = read_review(path, pool.read())
    assert labels == [{"id": "a", "task": "sentiment", "label": "positive"}]
    assert pool.add_reviews(labels) is not None
    assert pool.add_reviews(labels) is None  # the same file twice: stored once
    contents = pool.read()
    assert contents.human == {"sentiment": {"a": "positive"}}
    assert [r["id"] for r in review_rows(contents)] == ["b"]  # only what is left to review


def test_a_review_with_a_label_outside_the_set_names_its_row(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    pool.ensure_tasks(TASKS)
    pool.write_segment("s", [item("a", "c1", "hm")])
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "a", "sentiment": "angry"}) + "\n")
    with pytest.raises(PoolError, match=r"line 1: 'angry' is not a sentiment label"):
        read_review(path, pool.read())
    path.write_text(json.dumps({"id": "zzz", "sentiment": "neutral"}) + "\n")
    with pytest.raises(PoolError, match="not in the pool"):
        read_review(path, pool.read())


def test_training_rows_prefix_ids_and_give_context_turns_their_places(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    pool.ensure_tasks(TASKS)
    pool.write_segment("s", [item("a", "c1", "third", turn=2, context=2), item("b", "c2", "alone")])
    pool.add_reviews([{"id": "b", "task": "sentiment", "label": "neutral"}])
    utterances, records, human = training_rows(pool.read())
    by_id = {u["id"]: u for u in utterances}
    assert {u["dialogue_id"] for u in utterances} == {"pool/c1", "pool/c2"}
    assert [(by_id[k]["turn"], by_id[k]["text"]) for k in ("pool/c1-c0", "pool/c1-c1", "pool/a")] == [
        (0, "before 0"),
        (1, "before 1"),
        (2, "third"),
    ]
    assert {r["id"] for r in records} == {"pool/a", "pool/b"}
    assert human == [{"id": "pool/b", "task": "sentiment", "label": "neutral"}]


def _earlier(tmp_path: Path) -> EarlierData:
    rows, gold = [], []
    for d in range(12):
        for t in range(4):
            uid = f"d{d}-t{t}"
            split = "test" if d >= 9 else "train"
            text = f"text {d} {t}"
            rows.append({"id": uid, "dialogue_id": f"d{d}", "turn": t, "text": text, "split": split})
            gold.append({"id": uid, "task": "sentiment", "label": TASKS["sentiment"][(d + t) % 3]})
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gold))
    return EarlierData(tmp_path / "u.jsonl", tmp_path / "g.jsonl")


def test_merging_the_pool_keeps_the_held_out_set_and_the_budget_as_they_were(tmp_path: Path) -> None:
    from train.data import load_dataset, select_human, split_by_dialogue

    earlier = _earlier(tmp_path)
    base = load_dataset(earlier.utterances, TASKS, earlier.gold)
    base_split = split_by_dialogue(base, seed=3)
    pool = Pool(str(tmp_path / "pool"))
    pool.ensure_tasks(TASKS)
    leaked = "d10-t1"  # an utterance of a test dialogue came back through live traffic
    pool.write_segment(
        "s",
        [
            item("live-1", "live", "new words", context=1),
            item(leaked, "d10", "text 10 1"),
            item("live-2", "d11", "a new turn of a test conversation"),  # under an id of its own
        ],
    )
    pool.add_reviews([{"id": "live-1", "task": "sentiment", "label": "positive"}])
    merged = merge_pool(earlier, TASKS, pool.read(), tmp_path / "work", 0.25, seed=3)
    assert merged.left_out == 2
    assert (merged.pool_candidates, merged.pool_reviewed) == (1, 1)
    assert merged.split.test == base_split.test
    assert merged.split.dev == base_split.dev
    assert set(merged.split.train) == {*base_split.train, "pool/live"}
    assert set(merged.human_dialogues) == {*select_human(base, base_split.train, 0.25, 3), "pool/live"}
    assert "pool/" + leaked not in merged.data.utterances
    assert merged.data.gold["sentiment"]["pool/live-1"] == "positive"
    assert merged.data.ensemble["sentiment"]["pool/live-1"][0] == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("candidate", "serving", "publish", "why"),
    [
        ({"a": 0.5}, None, True, "first version"),
        ({"a": 0.60, "b": 0.50}, {"a": 0.55, "b": 0.50}, True, "mean gain +0.0250"),
        ({"a": 0.552, "b": 0.50}, {"a": 0.55, "b": 0.50}, False, "below the required"),
        ({"a": 0.70, "b": 0.45}, {"a": 0.55, "b": 0.50}, False, "b −0.050 fell"),
        ({"a": 0.6}, {"z": 0.9}, True, "shares no task"),
        ({"a": float("nan"), "b": 0.9}, {"a": 0.5, "b": 0.5}, False, "no human label to score a"),
        ({"a": float("nan")}, None, False, "cannot judge"),
    ],
)
def test_the_publish_rule(
    candidate: dict[str, float], serving: dict[str, float] | None, publish: bool, why: str
) -> None:
    ok, reason = PublishRule(min_gain=0.005, max_task_drop=0.02).decide(candidate, serving)
    assert ok is publish
    assert why in reason


def test_a_pool_on_another_fsspec_file_system_works_the_same() -> None:
    """The pool only uses fsspec calls: on the in-memory file system (as on an object store) a
    segment and a review are written and read back."""
    import uuid

    pool = Pool(f"memory://parley-pool-{uuid.uuid4().hex[:8]}")
    pool.ensure_tasks(TASKS)
    pool.write_segment("q-000-000000000000-000000000000", [item("a", "c1", "hello there")])
    assert pool.add_reviews([{"id": "a", "task": "sentiment", "label": "positive"}]) is not None
    contents = pool.read()
    assert list(contents.items) == ["a"]
    assert contents.human == {"sentiment": {"a": "positive"}}


def test_review_puts_disagreements_and_rare_labels_first(tmp_path: Path) -> None:
    """Where the serving engine and the LLM disagree comes first, then what the LLM gives a label rare
    in the pool, then the rest; --limit keeps the first N."""
    pool = Pool(str(tmp_path / "pool"))
    pool.ensure_tasks(TASKS)
    items = []
    for k in range(6):  # six the LLM calls neutral, as the engine did
        i = item(f"n{k}", f"c{k}", f"fine {k}")
        i.candidate["predictions"] = {"sentiment": {"label": "neutral", "score": 0.6}}
        i.ensemble["sentiment"] = {"label": "neutral", "scores": {"neutral": 0.8}, "prompts": 2}
        items.append(i)
    rare = item("rare", "c7", "this is wonderful")
    rare.candidate["predictions"] = {"sentiment": {"label": "positive", "score": 0.5}}
    rare.ensemble["sentiment"] = {"label": "positive", "scores": {"positive": 0.9}, "prompts": 2}
    wrong = item("wrong", "c8", "you lost it again")
    wrong.candidate["predictions"] = {"sentiment": {"label": "neutral", "score": 0.5}}
    wrong.ensemble["sentiment"] = {"label": "neutral", "scores": {"neutral": 0.9}, "prompts": 2}
    wrong.ensemble["sentiment"]["label"] = "negative"
    pool.write_segment("s", [*items, rare, wrong])
    rows = review_rows(pool.read(), limit=3)
    assert [r["id"] for r in rows[:2]] == ["wrong", "rare"]
    assert rows[1]["priority"] == pytest.approx(1 - 1 / 8 * 3 + 0.1 * (1 - 0.9))  # positive: 1 of 8
    assert rows[0]["priority"] == 1.0
    assert len(rows) == 3
    assert rows[2]["priority"] < rows[1]["priority"]


def test_the_version_to_beat_is_the_one_that_served_the_pool() -> None:
    from train.pool import PoolContents
    from train.retrain import serving_version

    def served(uid: str, version: str, at: str) -> PoolItem:
        i = item(uid, "c", "text")
        i.candidate.update(model={"name": "m", "version": version, "backend": "onnxruntime"}, selected_at=at)
        return i

    contents = PoolContents(
        TASKS, {"a": served("a", "v1", "2026-01-01"), "b": served("b", "v2", "2026-02-01")}
    )
    assert serving_version(contents, ["v1", "v2", "v3"], candidate="v4") == "v2"  # not v3, never promoted
    assert serving_version(contents, ["v1", "v3"], candidate="v4") == "v3"  # v2 is not registered here
    assert serving_version(PoolContents(TASKS), ["v1"], candidate="v1") is None


def test_the_loop_command_says_what_is_wrong_with_its_inputs(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from parley.cli import cli

    earlier = _earlier(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps(TASKS))
    (tmp_path / "broken.json").write_text("{not json")
    base = ["train", "loop", "--utterances", str(earlier.utterances), "--gold", str(earlier.gold)]
    base += ["--pool", str(tmp_path / "pool"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [*base, "--labels", str(tmp_path / "broken.json")])
    assert result.exit_code == 2
    assert "is not JSON" in result.output
    result = CliRunner().invoke(cli, [*base, "--labels", str(tmp_path / "labels.json"), "--task", "intent"])
    assert result.exit_code == 2
    assert "['intent'] not in" in result.output
    result = CliRunner().invoke(cli, [*base, "--labels", str(tmp_path / "labels.json")])
    assert isinstance(result.exception, PoolError)
    assert "not a pool yet" in str(result.exception)
