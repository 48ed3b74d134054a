"""The labelled-utterance view of `parley stream tail --conversations/--gold`: fits any width, marks
gold agreement, and sums up accuracy, throughput and latency from the worker's outputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.contracts import (
    ConversationState,
    ModelRef,
    TaskPrediction,
    Utterance,
    UtteranceLabels,
)
from stream.labelview import LabelView

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SAID = {
    "c1-t0": Utterance(
        conversation_id="demo-billing-0003",
        utterance_id="c1-t0",
        turn=0,
        speaker="customer",
        text="Why did my price go up without anyone telling me? " * 3,
    ),
    "c1-t1": Utterance(
        conversation_id="demo-billing-0003", utterance_id="c1-t1", turn=1, speaker="agent", text="One moment."
    ),
}
GOLD = {
    "c1-t0": {"intent": "billing_question", "sentiment": "negative", "dialogue_act": "question"},
    "c1-t1": {"intent": "other", "sentiment": "neutral", "dialogue_act": "commissive"},
}


def labelled(
    uid: str, turn: int, intent: str, sentiment: str, act: str, ms: float, at: float
) -> UtteranceLabels:
    return UtteranceLabels(
        conversation_id="demo-billing-0003",
        utterance_id=uid,
        turn=turn,
        predictions={
            "intent": TaskPrediction(label=intent, score=0.91),
            "sentiment": TaskPrediction(label=sentiment, score=0.62),
            "dialogue_act": TaskPrediction(label=act, score=0.88),
        },
        model=ModelRef(name="demo-student", version="demo-2", backend="onnxruntime-cpu"),
        state=ConversationState(available=True, turn_count=turn + 1, rolling_sentiment=-0.41),
        processed_at=T0 + timedelta(seconds=at),
        latency_ms=ms,
    )


FIRST = labelled("c1-t0", 0, "billing_question", "negative", "inform", 12.0, 0.0)
SECOND = labelled("c1-t1", 1, "other", "neutral", "commissive", 30.0, 4.0)


@pytest.mark.parametrize("width", [30, 50, 80, 120, 200])
def test_no_line_is_wider_than_the_terminal(width: int) -> None:
    """Header, blocks and summary fit the width; each utterance is exactly two lines."""
    view = LabelView(width, SAID, GOLD)
    blocks = [view.block(FIRST), view.block(SECOND)]
    assert all(len(block) == 2 for block in blocks)
    lines = view.header() + [line for block in blocks for line in block] + view.summary("labels", "labels")
    assert all(line.cell_len <= width for line in lines), [
        line.plain for line in lines if line.cell_len > width
    ]


def test_a_block_shows_who_said_what_the_labels_the_gold_and_the_state() -> None:
    """Line one: conversation, turn, speaker, text (shortened); line two: each label with its score,
    ✓ or ✗ with the gold label, and the conversation's rolling sentiment and turns."""
    first, second = (line.plain for line in LabelView(120, SAID, GOLD).block(FIRST))
    assert first.startswith("demo-billing-0003 #0  customer  Why did my price go up")
    assert first.endswith("…")
    assert len(first) == 120
    assert (
        second == "  billing_question 0.91 ✓ · negative 0.62 ✓ · inform 0.88 ✗ question │ mood -0.41 · 1 turn"
    )


def test_detail_is_left_out_before_anything_is_cut() -> None:
    """Narrower, the labels line drops the turn count, then shortens scores, then the gold label's
    name, then the state, and only then cuts."""
    expected = {
        100: "  billing_question 0.91 ✓ · negative 0.62 ✓ · inform 0.88 ✗ question │ mood -0.41 · 1 turn",
        89: "  billing_question 0.91 ✓ · negative 0.62 ✓ · inform 0.88 ✗ question │ mood -0.41",
        80: "  billing_question .91 ✓ · negative .62 ✓ · inform .88 ✗ question │ mood -0.41",
        70: "  billing_question .91 ✓ · negative .62 ✓ · inform .88 ✗ │ mood -0.41",
        60: "  billing_question .91 ✓ · negative .62 ✓ · inform .88 ✗",
        48: "  billing_question ✓ · negative ✓ · inform ✗",
        30: "  billing_question ✓ · negati…",
    }
    for width, line in expected.items():
        assert LabelView(width, SAID, GOLD).block(FIRST)[1].plain == line, width


def test_without_the_sent_file_the_utterance_id_stands_in_for_the_text() -> None:
    """An output whose input is not in --conversations still shows, by id, with unmarked labels."""
    first, second = (line.plain for line in LabelView(100).block(SECOND))
    assert first == "demo-billing-0003 #1  c1-t1"
    assert "✓" not in second
    assert "✗" not in second


def test_the_summary_scores_the_outputs_against_the_gold_labels() -> None:
    """Accuracy per task beside the majority class, the count, the rate over processed_at, latency
    percentiles and how to read the topic again."""
    view = LabelView(100, SAID, GOLD)
    view.block(FIRST)
    view.block(SECOND)
    summary = "\n".join(line.plain for line in view.summary("my-labels", "utterance-labels"))
    assert "Labelled: 2 utterances of 1 conversation" in summary
    assert "Model: demo-student demo-2 on onnxruntime-cpu" in summary
    assert "intent        1.00 (2/2)   majority 0.50" in summary
    assert "dialogue_act  0.50 (1/2)" in summary
    assert "Throughput: 2 in 4.0 s, 0.5/s" in summary
    assert "p50 12 ms, p95 30 ms, max 30 ms" in summary
    assert "Output topic: my-labels" in summary
    assert "parley stream tail --from-beginning --topic my-labels" in summary


def test_a_duplicate_output_is_shown_but_not_counted_twice() -> None:
    view = LabelView(100, SAID, GOLD)
    for labels in (FIRST, SECOND, SECOND):  # at-least-once delivery: SECOND arrived twice
        view.block(labels)
    summary = "\n".join(line.plain for line in view.summary("my-labels", "utterance-labels"))
    assert "Labelled: 2 utterances of 1 conversation" in summary
    assert "dialogue_act  0.50 (1/2)" in summary


def test_an_empty_read_says_so() -> None:
    """Nothing read: the summary says which topic was empty instead of dividing by zero."""
    summary = [line.plain for line in LabelView(80).summary("utterance-labels", "utterance-labels")]
    assert summary[-1] == "No labelled utterances were read from utterance-labels."


@given(
    width=st.integers(min_value=20, max_value=160),
    text=st.text(min_size=1, max_size=300).filter(str.strip),
    speaker=st.text(min_size=1, max_size=64),
)
def test_any_text_at_any_width_stays_on_its_line(width: int, text: str, speaker: str) -> None:
    """Whatever the text (wide characters, newlines, tabs) and width, a block is two lines that fit."""
    said = {"c1-t0": SAID["c1-t0"].model_copy(update={"text": text, "speaker": speaker})}
    block = LabelView(width, said, GOLD).block(FIRST)
    assert len(block) == 2
    assert all(line.cell_len <= width and "\n" not in line.plain for line in block)


def test_a_mood_that_rounds_to_zero_reads_plus_zero() -> None:
    """-0.004 is shown as +0.00, not as a negative zero."""
    calm = FIRST.model_copy(
        update={"state": ConversationState(available=True, turn_count=3, rolling_sentiment=-0.004)}
    )
    assert LabelView(120).block(calm)[1].plain.endswith("│ mood +0.00 · 3 turns")


def test_raw_and_the_view_are_refused_together() -> None:
    from click.testing import CliRunner

    from parley.cli import cli
    from parley.samples import labels_path

    result = CliRunner().invoke(cli, ["stream", "tail", "--raw", "--gold", str(labels_path())])
    assert result.exit_code == 2
    assert "does not go with --conversations or --gold" in result.output
