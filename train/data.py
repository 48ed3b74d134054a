"""Training data: utterances, human (gold) labels and LLM label records, in the layout of ../shared/data.

    utterances.jsonl   {id, dialogue_id, turn, speaker, text, split}
    gold.jsonl         {id, task, label}
    llm_labels.jsonl   {id, task, prompt_id, label, scores: {label: probability}}

Each may also be CSV or Parquet with the same columns (``scores`` as a JSON string in CSV). The LLM
records of one (utterance, task) are averaged over prompts into the *ensemble score* s_c(u), a
distribution over the task's labels (labels a prompt did not score count as 0; rows are renormalised).

Splits are by dialogue, never by utterance. Utterances without a dialogue (no ``dialogue_id``, or a
dialogue of one turn: single-sentence corpora) are grouped for training into *pseudo-dialogues* of
``PSEUDO_DIALOGUE_SIZE`` consecutive utterances in file order, within each split, so the pairwise
loss still has partners; the rule is deliberately simple (file order, no content), so that pairs
compare unrelated utterances, which is what a dialogue-free corpus can offer. Its effect is measured
in docs/training.md.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from train.errors import TrainError

PSEUDO_DIALOGUE_SIZE: Final = 16


class DataError(TrainError, ValueError):
    """Training data that cannot be used: the message names the file, the line and the value."""


@dataclass(frozen=True, slots=True)
class Utterance:
    id: str
    dialogue_id: str
    turn: int
    text: str
    split: str
    speaker: str | None = None


def group_dialogues(utterances: Iterable[Utterance]) -> dict[str, list[Utterance]]:
    """Utterances by dialogue, each dialogue in turn order."""
    by_dialogue: dict[str, list[Utterance]] = defaultdict(list)
    for u in utterances:
        by_dialogue[u.dialogue_id].append(u)
    return {d: sorted(us, key=lambda u: u.turn) for d, us in by_dialogue.items()}


@dataclass
class Dataset:
    utterances: dict[str, Utterance]
    labels: dict[str, list[str]]
    gold: dict[str, dict[str, str]] = field(default_factory=dict)
    """task → {utterance id → label}"""
    ensemble: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """task → {utterance id → probabilities in the order of labels[task]}"""
    skip_tasks: frozenset[str] = frozenset()
    prompts: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    """task → {utterance id → {prompt id → that prompt's scores, as given}}: the ensemble's members,
    for noise reduction across the prompt bank (agreement, per-prompt calibration) and perturbations."""

    def with_prompts(self, prompts: dict[str, dict[str, dict[str, list[float]]]]) -> Dataset:
        """This dataset with new per-prompt scores and the ensemble recomputed from them."""
        return replace(self, prompts=prompts, ensemble=ensemble_of(prompts))

    def dialogues(self, split: str | None = None) -> dict[str, list[Utterance]]:
        return group_dialogues(u for u in self.utterances.values() if split is None or u.split == split)

    def dialogues_by_split(self) -> dict[str, set[str]]:
        parts: dict[str, set[str]] = defaultdict(set)
        for u in self.utterances.values():
            parts[u.split].add(u.dialogue_id)
        return dict(parts)


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, record) from a JSONL, CSV or Parquet file."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}, line {number}: not JSON ({exc.msg})") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{path}, line {number}: expected an object")
                    yield number, row
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            for number, row in enumerate(csv.DictReader(f), start=2):
                if isinstance(row.get("scores"), str) and row["scores"]:
                    row["scores"] = json.loads(row["scores"])
                yield number, dict(row)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield number, row
    else:
        raise DataError(f"{path}: unknown format {suffix!r}; use .jsonl, .csv or .parquet")


def _need(path: Path, number: int, row: dict[str, Any], key: str) -> Any:
    if row.get(key) in (None, ""):
        raise DataError(f"{path}, line {number}: missing {key!r}")
    return row[key]


def load_utterances(path: Path, columns: dict[str, str] | None = None) -> dict[str, Utterance]:
    """Utterances by id. ``columns`` maps our field names to the file's (``{"text": "utterance"}``)."""
    utterances: dict[str, Utterance] = {}
    columns = columns or {}
    for number, row in read_rows(path):
        if columns:
            missing = [theirs for theirs in columns.values() if theirs not in row]
            if missing:
                raise DataError(f"{path}, line {number}: no column(s) {missing}; it has {sorted(row)}")
            row = {**row, **{ours: row[theirs] for ours, theirs in columns.items()}}
        uid = str(_need(path, number, row, "id"))
        if uid in utterances:
            raise DataError(f"{path}, line {number}: utterance id {uid!r} appears twice")
        dialogue = row.get("dialogue_id")
        turn = row.get("turn")
        if dialogue in (None, ""):  # its own one-turn dialogue (training regroups those)
            dialogue, turn = f"single-{uid}", 0
        utterances[uid] = Utterance(
            uid,
            str(dialogue),
            int(turn or 0),
            str(_need(path, number, row, "text")),
            str(row.get("split") or "train"),
            row.get("speaker"),
        )
    if not utterances:
        raise DataError(f"{path} holds no utterances")
    return utterances


def pseudo_dialogues(
    utterances: dict[str, Utterance], size: int = PSEUDO_DIALOGUE_SIZE
) -> dict[str, Utterance]:
    """Group one-turn dialogues (utterances without a dialogue) into pseudo-dialogues of ``size``
    consecutive utterances in file order, within each split, so the pairwise loss has partners.
    Utterances of real dialogues are untouched. Labelling does not do this (its context prompt would
    show unrelated sentences as previous turns); training does."""
    counts: dict[str, int] = defaultdict(int)
    for u in utterances.values():
        counts[u.dialogue_id] += 1
    index: dict[str, int] = defaultdict(int)
    out = {}
    for uid, u in utterances.items():
        if counts[u.dialogue_id] == 1:
            k = index[u.split]
            index[u.split] += 1
            u = Utterance(u.id, f"pseudo-{u.split}-{k // size:06d}", k % size, u.text, u.split, u.speaker)
        out[uid] = u
    return out


def load_dataset(
    utterances: Path,
    labels: dict[str, list[str]],
    gold: Path | None = None,
    llm: Path | None = None,
    skip_tasks: frozenset[str] = frozenset(),
) -> Dataset:
    """Read and check everything: unknown utterances, unknown tasks and labels outside a task's set
    are errors. Records of ``skip_tasks`` (known tasks that were not chosen) are passed over."""
    data = Dataset(pseudo_dialogues(load_utterances(utterances)), labels)
    data.skip_tasks = skip_tasks
    if gold is not None:
        for number, row in read_rows(gold):
            if row.get("task") in skip_tasks:
                continue
            task, uid, label = _task_row(gold, number, row, data)
            data.gold.setdefault(task, {})[uid] = label
    if llm is not None:
        prompts: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(dict)
        for number, row in read_rows(llm):
            if row.get("task") in skip_tasks:
                continue
            if row.get("abstained") or not (row.get("scores") or row.get("label")):
                continue  # a prompt that gave no label: the ensemble averages over those that did
            task, uid, _ = _task_row(llm, number, row, data)
            scores = row.get("scores") or {row["label"]: 1.0}
            unknown = set(scores) - set(labels[task])
            if unknown:
                raise DataError(
                    f"{llm}, line {number}: scores for labels outside task {task!r}: {sorted(unknown)}"
                )
            by_prompt = prompts[task].setdefault(uid, {})
            # One member per (prompt, model): records of two models (or two labelling runs with
            # different models) under one prompt id both count, as they did in the mean.
            prompt = str(row.get("prompt_id") or f"record-{len(by_prompt)}")
            if row.get("model"):
                prompt += f"@{row['model']}"
            if prompt in by_prompt:
                raise DataError(
                    f"{llm}, line {number}: a second record for utterance {uid!r}, task {task!r} and "
                    f"prompt {prompt!r}; give each labelling run its own prompt_id or model"
                )
            by_prompt[prompt] = [float(scores.get(name, 0.0)) for name in labels[task]]
        data = data.with_prompts(dict(prompts))
    return data


def ensemble_of(prompts: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, dict[str, list[float]]]:
    """The ensemble score of each (task, utterance): the mean of its prompts' rows, renormalised.

    Rows are kept as the prompts gave them (top-k scores need not sum to 1; labels a prompt did not
    score count as 0), so the ensemble is exactly the mean of the records, renormalised."""
    ensemble: dict[str, dict[str, list[float]]] = {}
    for task, by_id in prompts.items():
        ensemble[task] = {}
        for uid, rows in by_id.items():
            n = len(rows)
            mean = [sum(col) / n for col in zip(*rows.values(), strict=True)]
            total = sum(mean) or 1.0
            ensemble[task][uid] = [v / total for v in mean]
    return ensemble


def _task_row(path: Path, number: int, row: dict[str, Any], data: Dataset) -> tuple[str, str, str]:
    task = str(_need(path, number, row, "task"))
    if task not in data.labels:
        raise DataError(f"{path}, line {number}: unknown task {task!r}; the tasks are {sorted(data.labels)}")
    uid = str(_need(path, number, row, "id"))
    if uid not in data.utterances:
        raise DataError(f"{path}, line {number}: record for unknown utterance {uid!r}")
    label = str(row.get("label") or "")
    if label and label not in data.labels[task]:
        raise DataError(
            f"{path}, line {number}: label {label!r} is not one of task {task!r}'s labels {data.labels[task]}"
        )
    return task, uid, label


@dataclass(frozen=True, slots=True)
class Split:
    train: list[str]
    dev: list[str]
    test: list[str]
    """Dialogue ids of each part."""


def split_by_dialogue(data: Dataset, dev_fraction: float = 0.1, seed: int = 13) -> Split:
    """The data's own train/test split; dev is carved from train dialogues. Dialogues never straddle."""
    if not 0 < dev_fraction < 1:
        raise DataError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    parts: dict[str, set[str]] = defaultdict(set)
    for u in data.utterances.values():
        parts[u.split].add(u.dialogue_id)
    straddling = parts["train"] & parts["test"]
    if straddling:
        raise DataError(f"dialogues in both train and test: {sorted(straddling)[:5]}")
    train = sorted(parts["train"])
    if len(train) < 2:
        raise DataError(
            f"the train split has {len(train)} dialogue(s); at least 2 are needed (train and dev)"
        )
    random.Random(seed).shuffle(train)
    n_dev = max(1, round(len(train) * dev_fraction))
    return Split(train=sorted(train[n_dev:]), dev=sorted(train[:n_dev]), test=sorted(parts["test"]))


def restrict(data: Dataset, keep: dict[str, int], seed: int = 0) -> Dataset:
    """A seeded sample of whole dialogues per split (``{"train": 40, "test": 10}``), for corpora too
    big for a CPU grid; splits not named are kept whole. Gold and LLM labels follow the utterances."""
    chosen: set[str] = set()
    for part, dialogues in data.dialogues_by_split().items():
        ids = sorted(dialogues)
        if part in keep:
            if keep[part] < 1:
                raise DataError(f"keep at least one {part} dialogue, not {keep[part]}")
            random.Random(seed).shuffle(ids)
            ids = ids[: keep[part]]
        chosen.update(ids)
    unknown = set(keep) - set(data.dialogues_by_split())
    if unknown:
        raise DataError(f"no dialogues in split(s) {sorted(unknown)} to sample from")
    utts = {k: u for k, u in data.utterances.items() if u.dialogue_id in chosen}
    return Dataset(
        utts,
        data.labels,
        {t: {k: v for k, v in g.items() if k in utts} for t, g in data.gold.items()},
        {t: {k: v for k, v in e.items() if k in utts} for t, e in data.ensemble.items()},
        data.skip_tasks,
        {t: {k: v for k, v in p.items() if k in utts} for t, p in data.prompts.items()},
    )


def human_budget(dialogues: Sequence[str], fraction: float, seed: int = 13) -> list[str]:
    """The training dialogues whose human labels may be used: a seeded fraction of them (at least one)."""
    if not 0 < fraction <= 1:
        raise DataError(f"the human-label budget must be a fraction in (0, 1], got {fraction}")
    if not dialogues:
        raise DataError("no training dialogues to draw a human-label budget from")
    chosen = sorted(dialogues)
    random.Random(seed).shuffle(chosen)
    return sorted(chosen[: max(1, round(len(chosen) * fraction))])


Budget = float | str
"""A human-label budget: a fraction of training dialogues (0.05), or ``"N/class"``: whole dialogues
until every class of every task has at least N human labels."""


def parse_budget(value: object) -> Budget:
    """``0.05``, ``"0.05"`` → 0.05; ``"20/class"`` → ``"20/class"``; anything else is an error."""
    if isinstance(value, str) and value.strip().endswith("/class"):
        count = value.strip().removesuffix("/class")
        if not count.isdigit() or int(count) < 1:
            raise DataError(f"budget {value!r}: use N/class with N a whole number ≥ 1")
        return f"{int(count)}/class"
    try:
        fraction = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(
            f"budget {value!r}: use a fraction of training dialogues (0.05) or N/class (20/class)"
        ) from None
    if not 0 < fraction <= 1:
        raise DataError(f"the human-label budget must be a fraction in (0, 1] or N/class, got {value}")
    return fraction


def budget_label(budget: Budget) -> str:
    return budget if isinstance(budget, str) else f"{budget:g}"


def per_class_count(budget: Budget) -> int | None:
    """N of an ``"N/class"`` budget (as parse_budget writes it); None for a fraction."""
    return int(budget.removesuffix("/class")) if isinstance(budget, str) else None


def budget_order(budget: Budget) -> tuple[int, float]:
    """Sort key: fractions first, then per-class counts, each ascending."""
    count = per_class_count(budget)
    return (0, float(budget)) if count is None else (1, count)


def human_budget_per_class(
    data: Dataset, dialogues: Sequence[str], per_class: int, seed: int = 13
) -> list[str]:
    """Whole training dialogues, in a seeded order, taken while they add a label of a class (of any
    task) that has fewer than ``per_class`` so far; an error names the classes the dialogues cannot fill."""
    if not dialogues:
        raise DataError("no training dialogues to draw a human-label budget from")
    have = {(t, c): 0 for t, names in data.labels.items() for c in names}
    available = dict.fromkeys(have, 0)
    by_dialogue = data.dialogues()
    labels_of = {
        d: [(t, g[u.id]) for u in by_dialogue.get(d, []) for t, g in data.gold.items() if u.id in g]
        for d in dialogues
    }
    for found in labels_of.values():
        for key in found:
            available[key] += 1
    short = [f"{t}/{c} ({n})" for (t, c), n in available.items() if n < per_class]
    if short:
        raise DataError(
            f"a budget of {per_class}/class is larger than the data: the training dialogues hold fewer "
            f"human labels of {', '.join(short[:10])}{' …' if len(short) > 10 else ''}"
        )
    order = sorted(dialogues)
    random.Random(seed).shuffle(order)
    chosen = []
    for d in order:
        if all(n >= per_class for n in have.values()):
            break
        if any(have[key] < per_class for key in labels_of[d]):
            chosen.append(d)
            for key in labels_of[d]:
                have[key] += 1
    return sorted(chosen)


def select_human(data: Dataset, dialogues: Sequence[str], budget: Budget, seed: int = 13) -> list[str]:
    """The training dialogues whose human labels a run may use, for either kind of budget."""
    budget = parse_budget(budget)
    count = per_class_count(budget)
    if count is not None:
        return human_budget_per_class(data, dialogues, count, seed)
    return human_budget(dialogues, float(budget), seed)
