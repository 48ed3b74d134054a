"""Retraining on the pool: the earlier data plus what the loop labelled, judged against the serving model.

``parley train loop`` (train/cli_loop.py) runs it:

1. **Merge.** The earlier data (utterances, human labels, LLM records) and the pool
   (train.pool: the labelled candidates, the turns before them, the reviewed labels) become one
   dataset. Pool utterances live in a split of their own, ``pool``, under ids and dialogues
   prefixed ``pool/``, so the earlier data's train/dev/test split, the human budget drawn from it
   and the held-out test set are exactly what they would be without the pool. Pool dialogues join
   the training dialogues; those with reviewed labels join the human ones (a pool dialogue holds
   only the candidates and their context, so no other human label comes with it). A pool utterance
   that the earlier data holds in a dev or test dialogue, or whose conversation is one of those
   dialogues, is left out: it would leak into the held-out set. One it holds in a training dialogue
   is trained on twice, with each copy's labels.
2. **Train** the recipe as ``parley train fit`` does.
3. **Judge.** The candidate and the serving model are scored on the same held-out set (the earlier
   data's test split, human labels): macro-F1 per task. :class:`PublishRule` decides, and the numbers
   travel in the model_trained event (engines.events.HeldOutComparison).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from train.data import Dataset, Split, load_dataset, read_rows, select_human, split_by_dialogue
from train.errors import TrainError
from train.evaluate import other_tasks
from train.pool import PoolContents, training_rows

POOL_SPLIT = "pool"


@dataclass(frozen=True)
class EarlierData:
    utterances: Path
    gold: Path
    llm: Path | None = None


@dataclass
class Merged:
    data: Dataset
    split: Split
    human_dialogues: list[str]
    pool_candidates: int
    """Pool utterances with LLM labels that training sees."""
    pool_reviewed: int
    """Reviewed (utterance, task) labels of the pool that training sees."""
    left_out: int
    """Pool utterances left out because the earlier data holds them, or their conversation, in a dev
    or test dialogue."""
    files: dict[str, Path]


def _write(path: Path, rows: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return path


def merge_pool(
    earlier: EarlierData,
    labels: dict[str, list[str]],
    contents: PoolContents,
    work: Path,
    budget: float | str,
    seed: int,
) -> Merged:
    """The earlier data and the pool as one training set (see the module docstring); the merged
    files are written under ``work`` so the run can be repeated and inspected."""
    for task in labels:
        extra = set(contents.tasks.get(task, [])) - set(labels[task])
        if extra:
            raise TrainError(
                f"task {task!r}: the pool holds labels {sorted(extra)} that labels.json does not have"
            )
    base_rows = [row for _, row in read_rows(earlier.utterances)]
    base = load_dataset(
        earlier.utterances,
        labels,
        earlier.gold,
        earlier.llm,
        skip_tasks=other_tasks(labels, earlier.gold, earlier.llm),
    )
    base_split = split_by_dialogue(base, seed=seed)
    dev = set(base_split.dev)
    held_out = {uid for uid, u in base.utterances.items() if u.split == "test" or u.dialogue_id in dev}
    held_out_dialogues = dev | {u.dialogue_id for u in base.utterances.values() if u.split == "test"}
    held_out |= {
        uid
        for uid, item in contents.items.items()
        if str(item.candidate.get("conversation_id")) in held_out_dialogues
    }
    left_out = [uid for uid in contents.items if uid in held_out]
    kept = PoolContents(
        contents.tasks,
        {uid: item for uid, item in contents.items.items() if uid not in held_out},
        {
            t: {uid: label for uid, label in by_id.items() if uid not in held_out}
            for t, by_id in contents.human.items()
        },
    )
    pool_utts, pool_records, pool_human = training_rows(kept, prefix="pool/", split=POOL_SPLIT)
    pool_records = [r for r in pool_records if r["task"] in labels]
    pool_human = [h for h in pool_human if h["task"] in labels]
    files = {
        "utterances": _write(work / "utterances.jsonl", [*base_rows, *pool_utts]),
        "gold": _write(work / "gold.jsonl", [*(r for _, r in read_rows(earlier.gold)), *pool_human]),
        "llm": _write(
            work / "llm_labels.jsonl",
            [*(r for _, r in read_rows(earlier.llm)), *pool_records] if earlier.llm else pool_records,
        ),
    }
    data = load_dataset(files["utterances"], labels, files["gold"], files["llm"], skip_tasks=base.skip_tasks)
    split = split_by_dialogue(data, seed=seed)
    pool_dialogues = sorted(data.dialogues_by_split().get(POOL_SPLIT, set()))
    split = replace(split, train=sorted([*split.train, *pool_dialogues]))
    human = set(select_human(base, base_split.train, budget, seed))
    human |= {data.utterances[h["id"]].dialogue_id for h in pool_human}
    return Merged(
        data,
        split,
        sorted(human),
        pool_candidates=len({r["id"] for r in pool_records}),
        pool_reviewed=len(pool_human),
        left_out=len(left_out),
        files=files,
    )


def held_out_scores(checkpoint: Path, data: Dataset, split: Split) -> dict[str, float]:
    """Macro-F1 per task of a checkpoint or bundle on the test dialogues, for the tasks it shares
    (same name, same labels in the same order) with ``data``."""
    from engines.checkpoint import read_checkpoint
    from train.loop import FitConfig, Trainer

    manifest, model = read_checkpoint(checkpoint)
    shared = {t.name: list(t.labels) for t in manifest.tasks if data.labels.get(t.name) == list(t.labels)}
    if not shared:
        return {}
    trainer = Trainer(
        replace(data, labels=shared),
        split,
        [],
        FitConfig(
            method="ce_human",
            max_length=manifest.max_length,
            encoder=str(checkpoint / "tokenizer"),
            context_turns=manifest.context_turns,
        ),
        model=model,
    )
    metrics = trainer.evaluate(split.test)
    return {t: float(metrics[f"{t}/macro_f1"]) for t in shared}


def labelled_count(data: Dataset, dialogues: list[str]) -> int:
    chosen = set(dialogues)
    return sum(
        1
        for uid, u in data.utterances.items()
        if u.dialogue_id in chosen and any(uid in g for g in data.gold.values())
    )


@dataclass(frozen=True)
class PublishRule:
    """Publish when the mean macro-F1 over the shared tasks beats the serving model's by at least
    ``min_gain`` and no task falls by more than ``max_task_drop``; the first model always publishes."""

    min_gain: float = 0.005
    max_task_drop: float = 0.02

    def describe(self) -> str:
        return (
            f"publish when the held-out mean macro-F1 over shared tasks is at least {self.min_gain:+.3f} "
            f"above the serving model's and no task falls by more than {self.max_task_drop:.3f}"
        )

    def decide(self, candidate: dict[str, float], serving: dict[str, float] | None) -> tuple[bool, str]:
        """(publish?, why in words). A task the held-out set cannot score for the new model (no human
        label: NaN) refuses: a model is never published on a score that was not measured."""
        unscored = sorted(t for t, v in candidate.items() if not np.isfinite(v))
        if unscored:
            return False, f"the held-out set has no human label to score {', '.join(unscored)}: cannot judge"
        if serving is None:
            return True, "no serving model to compare with: the first version publishes"
        shared = [t for t in candidate if t in serving and np.isfinite(serving[t])]
        if not shared:
            return True, "the serving model shares no task with this one (same labels): nothing to compare"
        gain = float(np.mean([candidate[t] for t in shared]) - np.mean([serving[t] for t in shared]))
        drops = {
            t: serving[t] - candidate[t] for t in shared if serving[t] - candidate[t] > self.max_task_drop
        }
        if drops:
            worst = ", ".join(f"{t} −{d:.3f}" for t, d in drops.items())
            return False, f"mean gain {gain:+.4f}, but {worst} fell by more than {self.max_task_drop:.3f}"
        if gain < self.min_gain:
            return False, f"mean gain {gain:+.4f} is below the required {self.min_gain:+.3f}"
        return (
            True,
            f"mean gain {gain:+.4f} ≥ {self.min_gain:+.3f}, "
            f"no task fell by more than {self.max_task_drop:.3f}",
        )


def serving_version(contents: PoolContents, versions: list[str], candidate: str) -> str | None:
    """The version to beat: the one the workers served when they last chose a candidate of the pool
    (each candidate names its model), if the registry has it; else the newest registered version
    other than the candidate's own; None when there is none (the first model)."""
    newest = max(
        (i.candidate for i in contents.items.values() if (i.candidate.get("model") or {}).get("version")),
        key=lambda c: str(c.get("selected_at") or ""),
        default=None,
    )
    if (
        newest is not None
        and newest["model"]["version"] in versions
        and newest["model"]["version"] != candidate
    ):
        return str(newest["model"]["version"])
    others = [v for v in versions if v != candidate]
    return others[-1] if others else None
