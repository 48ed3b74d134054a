"""Training data: the shared layout read from JSONL, CSV and Parquet; ensembles; splits; clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from train.data import (
    PSEUDO_DIALOGUE_SIZE,
    DataError,
    Dataset,
    Utterance,
    human_budget,
    load_dataset,
    load_utterances,
    parse_budget,
    pseudo_dialogues,
    select_human,
    split_by_dialogue,
)

LABELS = {"sentiment": ["negative", "neutral", "positive"]}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    utterances = [
        {
            "id": f"d{d}-{t}",
            "dialogue_id": f"d{d}",
            "turn": t,
            "speaker": "A",
            "text": f"text {d} {t}",
            "split": "test" if d >= 8 else "train",
        }
        for d in range(10)
        for t in range(3)
    ]
    gold = [{"id": u["id"], "task": "sentiment", "label": "neutral"} for u in utterances]
    llm = [
        {
            "id": "d0-0",
            "task": "sentiment",
            "prompt_id": "p1",
            "label": "positive",
            "scores": {"positive": 0.8, "neutral": 0.2},
        },
        {
            "id": "d0-0",
            "task": "sentiment",
            "prompt_id": "p2",
            "label": "neutral",
            "scores": {"neutral": 0.6, "negative": 0.4},
        },
    ]
    return {
        "utterances": _jsonl(tmp_path / "utterances.jsonl", utterances),
        "gold": _jsonl(tmp_path / "gold.jsonl", gold),
        "llm": _jsonl(tmp_path / "llm.jsonl", llm),
    }


def test_ensemble_averages_prompts_over_the_task_labels(files: dict[str, Path]) -> None:
    """Two prompts' scores average into one distribution in the task's label order."""
    data = load_dataset(files["utterances"], LABELS, files["gold"], files["llm"])
    assert data.ensemble["sentiment"]["d0-0"] == pytest.approx([0.2, 0.4, 0.4])
    assert data.gold["sentiment"]["d3-1"] == "neutral"


def test_csv_and_parquet_read_like_jsonl(files: dict[str, Path], tmp_path: Path) -> None:
    """The same utterances from CSV and from Parquet give the same dataset."""
    rows = [json.loads(line) for line in files["utterances"].read_text().splitlines()]
    with (tmp_path / "u.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    expected = load_utterances(files["utterances"])
    assert load_utterances(tmp_path / "u.csv") == expected
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "u.parquet")
    assert load_utterances(tmp_path / "u.parquet") == expected


def test_splits_are_by_dialogue_and_seeded(files: dict[str, Path]) -> None:
    """Train, dev and test hold whole dialogues, never the same one twice; the seed fixes dev."""
    data = load_dataset(files["utterances"], LABELS)
    split = split_by_dialogue(data, dev_fraction=0.25, seed=1)
    assert set(split.train).isdisjoint(split.dev)
    assert split.test == ["d8", "d9"]
    assert len(split.dev) == 2
    assert split_by_dialogue(data, dev_fraction=0.25, seed=1) == split


def test_human_budget_is_a_seeded_fraction_of_dialogues() -> None:
    """5% of 100 dialogues is 5 of them, the same 5 for the same seed, different for another."""
    dialogues = [f"d{i}" for i in range(100)]
    chosen = human_budget(dialogues, 0.05, seed=3)
    assert len(chosen) == 5
    assert human_budget(dialogues, 0.05, seed=3) == chosen
    assert human_budget(dialogues, 0.05, seed=4) != chosen
    with pytest.raises(DataError, match="fraction"):
        human_budget(dialogues, 1.5)


def _labelled(counts: dict[str, int]) -> Dataset:
    """One two-turn dialogue per label occurrence pair: dialogue k holds two turns of one label."""
    utterances, gold = {}, {}
    k = 0
    for label, n in counts.items():
        for _ in range(n):
            for t in range(2):
                uid = f"d{k}-{t}"
                utterances[uid] = Utterance(uid, f"d{k}", t, f"{label} text", "train")
                gold[uid] = label
            k += 1
    return Dataset(utterances, {"sentiment": list(counts)}, {"sentiment": gold})


def test_a_per_class_budget_takes_dialogues_until_every_class_has_n_labels() -> None:
    """N/class: whole dialogues in a seeded order, each kept only while it adds a label of a class
    still short of N; every class ends with at least N labels; too large a budget names the class."""
    data = _labelled({"negative": 3, "neutral": 20, "positive": 5})
    dialogues = sorted({u.dialogue_id for u in data.utterances.values()})
    chosen = select_human(data, dialogues, "4/class", seed=1)
    per_class = {c: 0 for c in data.labels["sentiment"]}
    for u in data.utterances.values():
        if u.dialogue_id in chosen:
            per_class[data.gold["sentiment"][u.id]] += 1
    assert per_class == {"negative": 4, "neutral": 4, "positive": 4}  # 2 turns a dialogue: exactly 2 each
    assert select_human(data, dialogues, "4/class", seed=1) == chosen
    assert select_human(data, dialogues, "4/class", seed=2) != chosen
    with pytest.raises(DataError, match=r"larger than the data.*sentiment/negative \(6\)"):
        select_human(data, dialogues, "7/class")
    assert select_human(data, dialogues, 0.5, seed=1) == human_budget(dialogues, 0.5, seed=1)


@pytest.mark.parametrize(
    ("given", "parsed"),
    [(0.05, 0.05), ("0.2", 0.2), (1, 1.0), ("20/class", "20/class"), (" 3/class", "3/class")],
)
def test_budgets_parse(given: object, parsed: object) -> None:
    assert parse_budget(given) == parsed


@pytest.mark.parametrize("bad", ["0/class", "x/class", "lots", 0, 1.5, None])
def test_bad_budgets_are_refused(bad: object) -> None:
    with pytest.raises(DataError, match="budget"):
        parse_budget(bad)


def test_utterances_without_dialogues_form_pseudo_dialogues(tmp_path: Path) -> None:
    """Single sentences are grouped in file order into pseudo-dialogues of a fixed size."""
    rows = [{"id": f"s{i}", "text": f"sentence {i}"} for i in range(40)]
    rows += [{"id": f"one{i}", "dialogue_id": f"x{i}", "text": "alone", "split": "test"} for i in range(3)]
    rows += [{"id": f"d{i}", "dialogue_id": "real", "turn": i, "text": "talk"} for i in range(2)]
    path = _jsonl(tmp_path / "u.jsonl", rows)
    assert len({u.dialogue_id for u in load_utterances(path).values()}) == 44  # labelling: as they are
    utterances = pseudo_dialogues(load_utterances(path))
    train = {u.dialogue_id for u in utterances.values() if u.split == "train"}
    assert len(train) == 4  # 16 + 16 + 8, and the real dialogue
    assert utterances[f"s{PSEUDO_DIALOGUE_SIZE}"].turn == 0
    assert (
        utterances[f"s{PSEUDO_DIALOGUE_SIZE + 1}"].dialogue_id
        == utterances[f"s{PSEUDO_DIALOGUE_SIZE}"].dialogue_id
    )
    assert {utterances[f"one{i}"].dialogue_id for i in range(3)} == {"pseudo-test-000000"}  # never straddling
    assert utterances["d1"].dialogue_id == "real"


@pytest.mark.parametrize(
    ("kind", "row", "message"),
    [
        pytest.param(
            "gold", {"id": "d0-0", "task": "sentiment", "label": "ecstatic"}, "not one of", id="bad-label"
        ),
        pytest.param(
            "gold",
            {"id": "nope", "task": "sentiment", "label": "neutral"},
            "unknown utterance",
            id="unknown-id",
        ),
        pytest.param(
            "gold", {"id": "d0-0", "task": "intent", "label": "x"}, "unknown task", id="unknown-task"
        ),
        pytest.param(
            "llm",
            {"id": "d0-0", "task": "sentiment", "prompt_id": "p", "label": "neutral", "scores": {"joy": 1.0}},
            "outside task",
            id="score-label",
        ),
    ],
)
def test_bad_records_name_file_line_and_value(
    files: dict[str, Path], kind: str, row: dict, message: str
) -> None:
    """Labels outside the task, records for unknown utterances and unknown tasks are refused clearly."""
    path = _jsonl(files[kind].with_suffix(".bad.jsonl"), [row])
    args = {"gold": path} if kind == "gold" else {"llm": path}
    with pytest.raises(DataError, match=rf"{path.name}, line 1: .*{message}"):
        load_dataset(files["utterances"], LABELS, **args)


def test_empty_or_tiny_splits_are_refused(tmp_path: Path) -> None:
    """A train split with a single dialogue cannot give a dev split: refused with the count."""
    path = _jsonl(
        tmp_path / "u.jsonl", [{"id": "a", "dialogue_id": "d", "turn": 0, "text": "hi", "split": "train"}]
    )
    with pytest.raises(DataError, match="1 dialogue"):
        split_by_dialogue(load_dataset(path, LABELS))
    with pytest.raises(DataError, match="no utterances"):
        load_utterances(_jsonl(tmp_path / "empty.jsonl", []))


def test_records_of_tasks_not_chosen_are_passed_over(files: dict[str, Path], tmp_path: Path) -> None:
    """Training one task of a multi-task corpus skips the other tasks' records; unknown tasks still fail."""
    other = _jsonl(
        tmp_path / "gold2.jsonl",
        [
            {"id": "d0-0", "task": "emotion", "label": "joy"},
            {"id": "d0-0", "task": "sentiment", "label": "positive"},
        ],
    )
    data = load_dataset(files["utterances"], LABELS, other, skip_tasks=frozenset({"emotion"}))
    assert data.gold == {"sentiment": {"d0-0": "positive"}}
    with pytest.raises(DataError, match="unknown task 'emotion'"):
        load_dataset(files["utterances"], LABELS, other)


def test_restrict_samples_whole_dialogues_per_split_with_their_labels() -> None:
    from train.data import Dataset, Utterance, restrict

    utts = {
        f"{s}{d}-{t}": Utterance(f"{s}{d}-{t}", f"{s}{d}", t, "x", s)
        for s in ("train", "test")
        for d in range(5)
        for t in range(3)
    }
    data = Dataset(
        utts, {"t": ["a", "b"]}, {"t": dict.fromkeys(utts, "a")}, {"t": {k: [1.0, 0.0] for k in utts}}
    )
    small = restrict(data, {"train": 2})
    dialogues = small.dialogues_by_split()
    assert len(dialogues["train"]) == 2
    assert len(dialogues["test"]) == 5
    assert all(len(turns) == 3 for turns in small.dialogues().values())  # whole dialogues
    assert set(small.gold["t"]) == set(small.utterances) == set(small.ensemble["t"])
    assert restrict(data, {"train": 2}).utterances.keys() == small.utterances.keys()  # seeded
    with pytest.raises(DataError, match="no dialogues in split"):
        restrict(data, {"dev": 1})
