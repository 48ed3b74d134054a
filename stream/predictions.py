"""From an engine's probabilities to the bytes of ``utterance-labels`` messages, a batch at a time.

The worker writes one output per utterance, so this is the hot path: top-k labels come from one
``argsort`` over the batch, and each message is a plain dict serialised by orjson — byte for byte
what :func:`stream.contracts.encode` makes of the equivalent :class:`UtteranceLabels` (the tests hold
the two paths to that), at half the cost of building and dumping the pydantic model per message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stream.contracts import SCHEMA_VERSION, ConversationState, TaskPrediction

POSITIVE = ("positive", "pos", "happiness", "joy")
NEGATIVE = ("negative", "neg", "anger", "sadness", "disgust", "fear")

Prediction = dict[str, Any]
"""One task's prediction as the contract's JSON: {"label", "score", "top_k": [{"label", "score"}]}."""


def batch_predictions(
    probs: Mapping[str, npt.NDArray[np.float32]], labels: Mapping[str, Sequence[str]], top_k: int
) -> list[dict[str, Prediction]]:
    """Per row, per task: the most likely label, its probability and the ``top_k`` best labels
    (scores rounded to 6 decimals, clipped to [0, 1] — float32 softmax can land a hair outside)."""
    rows = next(iter(probs.values())).shape[0] if probs else 0
    out: list[dict[str, Prediction]] = [{} for _ in range(rows)]
    k = max(top_k, 1)
    for task, p in probs.items():
        scores = np.clip(p, 0.0, 1.0)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(scores, order, axis=1).astype(np.float64)
        names = labels[task]
        for row, (idx, vals) in enumerate(zip(order.tolist(), top.tolist(), strict=True)):
            best = [{"label": names[i], "score": round(v, 6)} for i, v in zip(idx, vals, strict=True)]
            out[row][task] = {"label": best[0]["label"], "score": best[0]["score"], "top_k": best}
    return out


def predictions_for(
    row: int, probs: Mapping[str, npt.NDArray[np.float32]], labels: Mapping[str, Sequence[str]], top_k: int
) -> dict[str, TaskPrediction]:
    """One row's predictions as contract models (for code outside the hot path)."""
    one = {task: p[row : row + 1] for task, p in probs.items()}
    return {t: TaskPrediction.model_validate(v) for t, v in batch_predictions(one, labels, top_k)[0].items()}


def sentiment_scores(probs: npt.NDArray[np.float32], labels: Sequence[str]) -> list[float]:
    """P(positive) - P(negative) per row: in [-1, 1], 0 for neutral."""
    pos = [i for i, label in enumerate(labels) if label.lower() in POSITIVE]
    neg = [i for i, label in enumerate(labels) if label.lower() in NEGATIVE]
    p = probs.astype(np.float64)
    score = p[:, pos].sum(axis=1) - p[:, neg].sum(axis=1)
    return [round(v, 6) for v in score.tolist()]


def sentiment_score(row: int, probs: npt.NDArray[np.float32], labels: Sequence[str]) -> float:
    return sentiment_scores(probs[row : row + 1], labels)[0]


def timestamp(moment: datetime) -> str:
    """An aware datetime as the contract writes it (UTC as 'Z')."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def state_json(state: ConversationState) -> dict[str, Any]:
    out: dict[str, Any] = {"available": state.available}
    for name in ("turn_count", "rolling_sentiment", "last_intent"):
        value = getattr(state, name)
        if value is not None:
            out[name] = value
    return out


def encode_labels(
    *,
    conversation_id: str,
    utterance_id: str,
    turn: int | None,
    predictions: dict[str, Prediction],
    model: dict[str, str],
    state: ConversationState,
    text_truncated: bool,
    processed_at: str,
    latency_ms: float,
) -> bytes:
    """One ``utterance-labels`` message, the fields in the contract's order, None fields left out."""
    message: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "conversation_id": conversation_id,
        "utterance_id": utterance_id,
    }
    if turn is not None:
        message["turn"] = turn
    message["predictions"] = predictions
    message["model"] = model
    message["state"] = state_json(state)
    message["text_truncated"] = text_truncated
    message["processed_at"] = processed_at
    message["latency_ms"] = latency_ms
    return orjson.dumps(message)
