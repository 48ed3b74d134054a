"""From an engine's probabilities to the predictions of the ``utterance-labels`` contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from stream.contracts import LabelScore, TaskPrediction

POSITIVE = ("positive", "pos", "happiness", "joy")
NEGATIVE = ("negative", "neg", "anger", "sadness", "disgust", "fear")


def predictions_for(
    row: int, probs: Mapping[str, npt.NDArray[np.float32]], labels: Mapping[str, Sequence[str]], top_k: int
) -> dict[str, TaskPrediction]:
    """Per task: the most likely label, its probability, and the ``top_k`` best labels."""
    out = {}
    for task, p in probs.items():
        scores = np.clip(p[row], 0.0, 1.0)  # float32 softmax can land a hair outside [0, 1]
        order = np.argsort(-scores)[: max(top_k, 1)]
        best = int(order[0])
        out[task] = TaskPrediction(
            label=labels[task][best],
            score=round(float(scores[best]), 6),
            top_k=[
                LabelScore(label=labels[task][int(i)], score=round(float(scores[int(i)]), 6)) for i in order
            ],
        )
    return out


def sentiment_score(row: int, probs: npt.NDArray[np.float32], labels: Sequence[str]) -> float:
    """P(positive) - P(negative) over the task's labels: in [-1, 1], 0 for neutral."""
    pos = sum(float(probs[row, i]) for i, label in enumerate(labels) if label.lower() in POSITIVE)
    neg = sum(float(probs[row, i]) for i, label in enumerate(labels) if label.lower() in NEGATIVE)
    return round(pos - neg, 6)
