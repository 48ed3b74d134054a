"""Per-prompt calibration of the LLM prompt bank on the human budget.

LLM label probabilities are over-confident (on ../shared/data's DailyDialog sentiment the ensemble's
median top score is 0.94), and each prompt is over-confident in its own way. Before the prompts are
averaged, each prompt's scores of each task get one temperature T, fitted on the utterances the human
budget labels: p' ∝ exp(log p / T), T chosen to minimise the negative log-likelihood of the gold
labels (the same search as the student's own temperature scaling). Only the budget's labels are
used, so the calibration costs no extra annotation, and it changes the ensemble's scale, never any
prompt's ranking of the labels of one utterance.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from train import evaluate
from train.data import Dataset

EPS = 1e-4


def _floored(scores: np.ndarray) -> np.ndarray:
    """Rows normalised to sum to 1, with a floor: a prompt's 0 (a label outside its top-k) is not -inf."""
    floored: np.ndarray = np.clip(scores / np.clip(scores.sum(1, keepdims=True), EPS, None), EPS, None)
    return floored


def fit_temperature(scores: np.ndarray, gold: np.ndarray) -> float:
    """The temperature that minimises the gold labels' NLL (train.evaluate.fit_temperature, the one
    the student's calibration uses) on a prompt's floored rows: ``scores`` [N, C], ``gold`` [N]."""
    return evaluate.fit_temperature(_floored(scores), gold)


def calibrate_prompts(data: Dataset, human: Iterable[str]) -> tuple[Dataset, dict[str, dict[str, float]]]:
    """``data`` with every prompt's scores tempered by its fitted temperature, and the temperatures
    (task → prompt → T). ``human`` are the utterance ids whose gold labels may be used."""
    allowed = set(human)
    temperatures: dict[str, dict[str, float]] = {}
    prompts: dict[str, dict[str, dict[str, list[float]]]] = {}
    for task, by_id in data.prompts.items():
        labels = data.labels[task]
        gold = data.gold.get(task, {})
        members = sorted({p for rows in by_id.values() for p in rows})
        temperatures[task] = {}
        for prompt in members:
            ids = [u for u in by_id if u in allowed and gold.get(u) in labels and prompt in by_id[u]]
            scores = np.array([by_id[u][prompt] for u in ids], dtype=np.float64).reshape(
                len(ids), len(labels)
            )
            truth = np.array([labels.index(gold[u]) for u in ids], dtype=np.int64)
            temperatures[task][prompt] = fit_temperature(scores, truth)
        prompts[task] = {}
        for uid, rows in by_id.items():
            out = {}
            for prompt, row in rows.items():
                floored = _floored(np.asarray(row, dtype=np.float64)[None, :])
                out[prompt] = evaluate.scale(floored, temperatures[task][prompt])[0].tolist()
            prompts[task][uid] = out
    return data.with_prompts(prompts), temperatures
