"""The utterances, utterance-labels and utterances-dlq contracts: round trips and rejections."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.contracts import ContractError, RejectCode
from stream.contracts import (
    DEFAULT_LIMITS,
    ConversationState,
    DlqRecord,
    ModelRef,
    SourceCoordinates,
    TaskPrediction,
    TextLimits,
    Utterance,
    UtteranceLabels,
    decode_utterance,
    encode,
)


def _raw(**fields: Any) -> bytes:
    base: dict[str, Any] = {"conversation_id": "c-1", "utterance_id": "u-1", "text": "I was charged twice."}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def _rejected(raw: bytes, limits: TextLimits = DEFAULT_LIMITS) -> ContractError:
    with pytest.raises(ContractError) as info:
        decode_utterance(raw, limits)
    return info.value


def test_minimal_utterance_decodes_with_defaults() -> None:
    """A message with only the required fields is valid and gets schema_version 1."""
    decoded = decode_utterance(_raw())
    assert decoded.utterance.conversation_id == "c-1"
    assert decoded.utterance.schema_version == 1
    assert decoded.truncated_from is None


def test_full_utterance_round_trips_through_bytes() -> None:
    """Encoding then decoding a complete utterance gives it back unchanged."""
    utterance = Utterance(
        conversation_id="conv-9",
        utterance_id="conv-9-t3",
        text="Ça marche, merci ! 👍",
        turn=3,
        speaker="customer",
        timestamp=datetime(2026, 11, 2, 9, 10, tzinfo=UTC),
        language="fr-FR",
        metadata={"channel": "chat", "queue": 7, "vip": True, "tags": ["a", "b"]},
    )
    assert decode_utterance(encode(utterance)).utterance == utterance


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        pytest.param(_raw(text=""), RejectCode.EMPTY_TEXT, "text", id="empty-text"),
        pytest.param(_raw(text=" \n\t "), RejectCode.EMPTY_TEXT, "text", id="whitespace-text"),
        pytest.param(_raw(text=...), RejectCode.MISSING_FIELD, "text", id="missing-text"),
        pytest.param(
            _raw(conversation_id=...), RejectCode.MISSING_FIELD, "conversation_id", id="missing-conv"
        ),
        pytest.param(_raw(text=42), RejectCode.WRONG_TYPE, "text", id="text-not-string"),
        pytest.param(_raw(turn="3"), RejectCode.WRONG_TYPE, "turn", id="turn-as-string"),
        pytest.param(_raw(turn=-1), RejectCode.INVALID_VALUE, "turn", id="negative-turn"),
        pytest.param(_raw(conversation_id=""), RejectCode.INVALID_VALUE, "conversation_id", id="empty-id"),
        pytest.param(
            _raw(utterance_id="a\x00b"), RejectCode.INVALID_VALUE, "utterance_id", id="control-in-id"
        ),
        pytest.param(
            _raw(timestamp="2026-11-02T09:10:00"), RejectCode.INVALID_VALUE, "timestamp", id="naive-time"
        ),
        pytest.param(_raw(language="english!"), RejectCode.INVALID_VALUE, "language", id="bad-language"),
        pytest.param(_raw(colour="blue"), RejectCode.UNKNOWN_FIELD, "colour", id="unknown-field"),
        pytest.param(
            _raw(schema_version=2), RejectCode.UNKNOWN_SCHEMA_VERSION, "schema_version", id="future"
        ),
        pytest.param(_raw(schema_version="1"), RejectCode.WRONG_TYPE, "schema_version", id="version-string"),
        pytest.param(_raw(text="\ud800 lone surrogate"), RejectCode.NOT_UTF8, "text", id="lone-surrogate"),
        pytest.param(b"\xff\xfe not utf-8", RejectCode.NOT_UTF8, None, id="bad-bytes"),
        pytest.param(b'{"text": "caf\xe9"}', RejectCode.NOT_UTF8, None, id="latin-1"),
        pytest.param(b"{not json", RejectCode.NOT_JSON, None, id="not-json"),
        pytest.param(b"", RejectCode.EMPTY_VALUE, None, id="empty-bytes"),
        pytest.param(b'["a list"]', RejectCode.NOT_OBJECT, None, id="list"),
        pytest.param(b"null", RejectCode.NOT_OBJECT, None, id="null"),
    ],
)
def test_bad_input_is_rejected_with_a_machine_readable_reason(
    raw: bytes, code: RejectCode, field: str | None
) -> None:
    """Each kind of bad input yields its stable code, names the field, and says why in words."""
    error = _rejected(raw)
    assert error.code == code
    assert error.rejections[0].field == field
    assert error.rejections[0].message
    assert code.value in str(error)


def test_rejection_reports_every_problem_and_the_offending_value() -> None:
    """Several problems in one message are all reported, each with a preview of its value."""
    error = _rejected(_raw(turn="three", speaker=12, text=""))
    by_field = {r.field: r for r in error.rejections}
    assert set(by_field) == {"turn", "speaker", "text"}
    assert by_field["turn"].value == "'three'"
    assert by_field["speaker"].code == RejectCode.WRONG_TYPE


def test_text_over_the_limit_is_rejected_by_default() -> None:
    """Text longer than max_chars is refused under the default 'reject' policy, naming both lengths."""
    error = _rejected(_raw(text="x" * 101), TextLimits(max_chars=100))
    assert error.code == RejectCode.TEXT_TOO_LONG
    assert "101" in error.rejections[0].message
    assert "100" in error.rejections[0].message


def test_text_over_the_limit_is_truncated_and_flagged_when_asked() -> None:
    """Under the 'truncate' policy the text is cut to max_chars and the original length reported."""
    decoded = decode_utterance(_raw(text="y" * 150), TextLimits(max_chars=100, oversize="truncate"))
    assert decoded.utterance.text == "y" * 100
    assert decoded.truncated_from == 150


def test_message_over_the_byte_limit_is_rejected_before_parsing() -> None:
    """A message larger than max_message_bytes is refused as too_large, whatever it holds."""
    error = _rejected(_raw(metadata={"blob": "z" * 500}), TextLimits(max_message_bytes=256))
    assert error.code == RejectCode.TOO_LARGE


def test_value_preview_is_bounded() -> None:
    """A huge offending value is shown shortened, never whole."""
    error = _rejected(_raw(turn="9" * 10_000))
    assert len(error.rejections[0].value or "") <= 80


identifiers = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300).filter(
    lambda t: t.strip() != ""
)


@given(
    conversation_id=identifiers,
    utterance_id=identifiers,
    text=texts,
    turn=st.none() | st.integers(min_value=0, max_value=10**6),
    speaker=st.none() | st.sampled_from(["customer", "agent", "bot"]),
)
def test_any_valid_utterance_round_trips(
    conversation_id: str, utterance_id: str, text: str, turn: int | None, speaker: str | None
) -> None:
    """Property: every utterance the model accepts survives encode → decode unchanged."""
    utterance = Utterance(
        conversation_id=conversation_id, utterance_id=utterance_id, text=text, turn=turn, speaker=speaker
    )
    assert decode_utterance(encode(utterance), TextLimits(max_chars=1000)).utterance == utterance


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_a_contract_error(raw: bytes) -> None:
    """Property: whatever arrives, decoding either succeeds or raises ContractError with a reason."""
    try:
        decode_utterance(raw)
    except ContractError as error:
        rejections = error.rejections
    else:
        rejections = None
    assert rejections is None or len(rejections) >= 1


@given(
    st.dictionaries(
        st.sampled_from(["conversation_id", "utterance_id", "text", "turn", "x"]),
        st.none() | st.integers() | st.text(max_size=5) | st.booleans(),
        max_size=5,
    )
)
def test_arbitrary_objects_never_raise_anything_but_a_contract_error(obj: dict[str, Any]) -> None:
    """Property: any JSON object is either a valid utterance or refused with named fields."""
    try:
        decode_utterance(json.dumps(obj).encode())
    except ContractError as error:
        rejections = error.rejections
    else:
        rejections = []
    assert all(r.code in RejectCode and r.message for r in rejections)


def _labels() -> UtteranceLabels:
    return UtteranceLabels(
        conversation_id="c-1",
        utterance_id="u-1",
        turn=0,
        predictions={
            "sentiment": TaskPrediction(label="negative", score=0.91, top_k=[]),
            "dialogue_act": TaskPrediction(label="inform", score=0.6),
        },
        model=ModelRef(name="student", version="2026.11.26-1", backend="onnxruntime-cpu"),
        state=ConversationState(available=True, turn_count=1, rolling_sentiment=-0.8),
        processed_at=datetime.now(UTC),
        latency_ms=12.5,
    )


def test_labels_round_trip_through_json() -> None:
    """An output message survives serialisation unchanged."""
    labels = _labels()
    assert UtteranceLabels.model_validate_json(encode(labels)) == labels


def test_labels_need_at_least_one_prediction_and_probabilities_in_range() -> None:
    """An output without predictions, or with a score above 1, is invalid."""
    data = json.loads(encode(_labels()))
    with pytest.raises(ValueError, match="predictions"):
        UtteranceLabels.model_validate({**data, "predictions": {}})
    data["predictions"]["sentiment"]["score"] = 1.5
    with pytest.raises(ValueError, match="score"):
        UtteranceLabels.model_validate(data)


def test_dlq_record_keeps_the_original_bytes_exactly() -> None:
    """Invalid UTF-8 and all, the DLQ record carries the input byte for byte, with its reasons."""
    raw = b'\xff{"text": broken'
    error = _rejected(raw)
    record = DlqRecord.for_rejection(
        error.rejections,
        value=raw,
        key=b"c-1",
        source=SourceCoordinates(topic="utterances", partition=2, offset=41),
    )
    wire = encode(record)
    json.loads(wire)  # the record itself is clean JSON
    back = DlqRecord.model_validate_json(wire)
    assert back.original_value == raw
    assert back.original_key == b"c-1"
    assert back.reason == RejectCode.NOT_UTF8
    assert back.source.offset == 41
