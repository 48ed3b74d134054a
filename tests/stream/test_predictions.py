"""The hot-path output encoder writes exactly what the contract model would, for any values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stream.contracts import ConversationState, ModelRef, UtteranceLabels, encode
from stream.predictions import (
    batch_predictions,
    encode_labels,
    predictions_for,
    sentiment_score,
    sentiment_scores,
    timestamp,
)

LABELS = {
    "sentiment": ["negative", "neutral", "positive"],
    "dialogue_act": ["inform", "question", "directive"],
}

probability = st.floats(min_value=-(2**-20), max_value=1 + 2**-20, allow_nan=False, width=32)
rows = st.integers(min_value=1, max_value=6)


@st.composite
def probabilities(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(rows)
    return {
        task: np.array(
            draw(
                st.lists(
                    st.lists(probability, min_size=len(names), max_size=len(names)), min_size=n, max_size=n
                )
            ),
            dtype=np.float32,
        )
        for task, names in LABELS.items()
    }


states = st.builds(
    ConversationState,
    available=st.booleans(),
    turn_count=st.none() | st.integers(min_value=0, max_value=10**6),
    rolling_sentiment=st.none() | st.floats(min_value=-1, max_value=1, allow_nan=False),
    last_intent=st.none() | st.sampled_from(["inform", "question"]),
)
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
) | st.just(datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC))


@given(
    probs=probabilities(),
    state=states,
    turn=st.none() | st.integers(min_value=0, max_value=10**9),
    truncated=st.booleans(),
    moment=moments,
    latency=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    top_k=st.integers(min_value=1, max_value=4),
)
def test_the_fast_encoder_writes_the_contract_models_bytes(
    probs: dict[str, np.ndarray],
    state: ConversationState,
    turn: int | None,
    truncated: bool,
    moment: datetime,
    latency: float,
    top_k: int,
) -> None:
    """Property: for every row, encode_labels gives the same bytes as encode(UtteranceLabels(...))."""
    model = ModelRef(name="student", version="v1", backend="onnxruntime-cpu-int8")
    fast = batch_predictions(probs, LABELS, top_k)
    for row in range(next(iter(probs.values())).shape[0]):
        reference = encode(
            UtteranceLabels(
                conversation_id="c-1",
                utterance_id=f"u-{row}",
                turn=turn,
                predictions=predictions_for(row, probs, LABELS, top_k),
                model=model,
                state=state,
                text_truncated=truncated,
                processed_at=moment,
                latency_ms=latency,
            )
        )
        got = encode_labels(
            conversation_id="c-1",
            utterance_id=f"u-{row}",
            turn=turn,
            predictions=fast[row],
            model=model.model_dump(),
            state=state,
            text_truncated=truncated,
            processed_at=timestamp(moment),
            latency_ms=latency,
        )
        assert got == reference


def test_top_k_is_ordered_by_score_and_names_the_best_label() -> None:
    """The first of top_k is the label; scores fall; k is honoured."""
    probs = {"sentiment": np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], dtype=np.float32)}
    got = batch_predictions(probs, LABELS, 2)
    assert [p["sentiment"]["label"] for p in got] == ["neutral", "negative"]
    assert [x["label"] for x in got[0]["sentiment"]["top_k"]] == ["neutral", "positive"]
    assert got[1]["sentiment"]["top_k"][1] == {"label": "positive", "score": 0.3}


def test_sentiment_is_positive_minus_negative() -> None:
    """Per row, P(positive) − P(negative), rounded; the one-row form agrees with the batch form."""
    p = np.array([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]], dtype=np.float32)
    assert sentiment_scores(p, LABELS["sentiment"]) == [0.3, -0.6]
    assert sentiment_score(1, p, LABELS["sentiment"]) == -0.6


def test_timestamps_are_written_as_the_contract_writes_them() -> None:
    """UTC is 'Z', microseconds only when there are any."""
    t = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
    assert timestamp(t) == "2026-12-01T10:00:00Z"
    assert timestamp(t + timedelta(microseconds=5)) == "2026-12-01T10:00:00.000005Z"
