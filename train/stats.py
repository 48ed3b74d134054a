"""Paired comparisons between training runs, with bootstrap intervals over test dialogues.

Two configurations trained with the same seeds (same split, same human budget) are compared on the
same test utterances: for each seed the difference of their scores, averaged over the seeds. Its
95% interval comes from resampling the test *dialogues* with replacement (utterances of one
dialogue are not independent), the same resample for every seed, ``n_boot`` times. A configuration
is "ahead" of another only when the whole interval is above zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from train.evaluate import macro_f1

Predictions = Mapping[str, int]
"""utterance id → predicted class index, for one task of one run."""


@dataclass(frozen=True, slots=True)
class PairedDifference:
    metric: str
    mean: float
    low: float
    high: float
    per_seed: tuple[float, ...]

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "ahead"
        if self.high < 0:
            return "behind"
        return "level"


def _score(metric: str, pred: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    if metric == "accuracy":
        return float((pred == truth).mean())
    return macro_f1(pred, truth, n_classes)


def paired_difference(
    a: Sequence[Predictions],
    b: Sequence[Predictions],
    gold: Mapping[str, int],
    dialogue_of: Mapping[str, str],
    n_classes: int,
    *,
    metrics: Sequence[str] = ("accuracy", "macro_f1"),
    n_boot: int = 1000,
    seed: int = 0,
) -> list[PairedDifference]:
    """Mean over seeds of score(a) − score(b), with a dialogue-bootstrap 95% interval.

    ``a[k]`` and ``b[k]`` are the predictions of the two configurations under seed k; the test
    utterances scored are those with a gold label that both predicted under every seed."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need the same, non-zero number of seeds on both sides, got {len(a)} and {len(b)}")
    ids = sorted(u for u in gold if all(u in p for p in (*a, *b)))
    if not ids:
        raise ValueError("no test utterance was predicted by both sides")
    truth = np.array([gold[u] for u in ids])
    pa = [np.array([p[u] for u in ids]) for p in a]
    pb = [np.array([p[u] for u in ids]) for p in b]
    dialogues = sorted({dialogue_of[u] for u in ids})
    rows_of = {d: [] for d in dialogues}  # type: dict[str, list[int]]
    for k, u in enumerate(ids):
        rows_of[dialogue_of[u]].append(k)
    rows = [np.array(rows_of[d]) for d in dialogues]
    rng = np.random.default_rng(seed)
    out = []
    for metric in metrics:
        per_seed = [
            _score(metric, x, truth, n_classes) - _score(metric, y, truth, n_classes)
            for x, y in zip(pa, pb, strict=True)
        ]
        boots = np.empty(n_boot)
        for i in range(n_boot):
            take = np.concatenate([rows[d] for d in rng.integers(0, len(rows), len(rows))])
            boots[i] = np.mean(
                [
                    _score(metric, x[take], truth[take], n_classes)
                    - _score(metric, y[take], truth[take], n_classes)
                    for x, y in zip(pa, pb, strict=True)
                ]
            )
        low, high = np.percentile(boots, [2.5, 97.5])
        out.append(
            PairedDifference(metric, float(np.mean(per_seed)), float(low), float(high), tuple(per_seed))
        )
    return out
