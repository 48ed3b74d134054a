"""Per-prompt calibration of the LLM prompt bank on the human budget.

LLM label probabilities are over-confident (on ../shared/data's DailyDialog sentiment the ensemble's
median top score is 0.94), and each prompt is over-confident in its own way. Before the prompts are
averaged, each prompt's scores of each task get one temperature T, fitted on the utterances the human
budget labels: p' ∝ exp(log p / T), T chosen on a log grid to minimise the negative log-likelihood of
the gold labels. Only the budget's labels are used, so the calibration costs no extra annotation, and
it changes the ensemble's scale, never any prompt's ranking of the labels of one utterance.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from train.data import Dataset

TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(20.0), 61))
EPS = 1e-4


def _tempered(log_p: np.ndarray, temperature: float) -> np.ndarray:
    z = log_p / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def fit_temperature(scores: np.ndarray, gold: np.ndarray) -> float:
    """The temperature (from :data:`TEMPERATURES`) that minimises the gold labels' NLL.

    ``scores`` [N, C] a prompt's rows (need not sum to 1), ``gold`` [N] class indices."""
    if scores.shape[0] == 0:
        return 1.0
    log_p = np.log(np.clip(scores / np.clip(scores.sum(1, keepdims=True), EPS, None), EPS, None))
    rows = np.arange(len(gold))
    losses = [-np.log(_tempered(log_p, t)[rows, gold] + 1e-12).mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


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
                p = np.clip(np.asarray(row, dtype=np.float64), EPS, None)
                out[prompt] = _tempered(np.log(p / p.sum())[None, :], temperatures[task][prompt])[0].tolist()
            prompts[task][uid] = out
    return data.with_prompts(prompts), temperatures
