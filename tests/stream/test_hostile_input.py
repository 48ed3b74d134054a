"""Hostile inputs: whatever the bytes, decoding ends in an utterance or a ContractError with a stable
code, and the DLQ record of any input fits the producer's size limit."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.contracts import MAX_DEPTH, ContractError, RejectCode
from stream.contracts import (
    DLQ_KEY_MAX_BYTES,
    DlqRecord,
    SourceCoordinates,
    TextLimits,
    decode_utterance,
    encode,
)

BIG = TextLimits(max_message_bytes=4 * 1024 * 1024)


def _wrap(inner: str) -> bytes:
    return (
        '{"conversation_id": "c", "utterance_id": "u", "text": "hi", "metadata": {"x": ' + inner + "}}"
    ).encode()


def _code(raw: bytes | None, limits: TextLimits = BIG) -> RejectCode:
    with pytest.raises(ContractError) as info:
        decode_utterance(raw, limits)
    return info.value.code


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(_wrap("[" * 100_000 + "]" * 100_000), RejectCode.TOO_DEEP, id="200KB-deep-array"),
        pytest.param(
            _wrap("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)), RejectCode.TOO_DEEP, id="just-too-deep"
        ),
        pytest.param(b"[" * 900 + b"]" * 900, RejectCode.NOT_OBJECT, id="deep-top-level-list"),
        pytest.param(_wrap("1" * 5000), RejectCode.NUMBER_TOO_LARGE, id="5000-digit-int"),
        pytest.param(_wrap("-" + "9" * 25), RejectCode.NUMBER_TOO_LARGE, id="negative-huge-int"),
        pytest.param(_wrap("9223372036854775808"), RejectCode.NUMBER_TOO_LARGE, id="2^63"),
        pytest.param(_wrap("NaN"), RejectCode.NOT_FINITE, id="NaN"),
        pytest.param(_wrap("-Infinity"), RejectCode.NOT_FINITE, id="-Infinity"),
        pytest.param(_wrap("1e999"), RejectCode.NOT_FINITE, id="overflowing-float"),
        pytest.param(
            b'{"conversation_id": "c", "utterance_id": "u", "text": "a", "text": "b"}',
            RejectCode.DUPLICATE_KEY,
            id="duplicate-key",
        ),
        pytest.param(
            b'{"conversation_id": "\\ud800", "utterance_id": "u", "text": "hi"}',
            RejectCode.NOT_UTF8,
            id="lone-surrogate-in-id",
        ),
        pytest.param(_wrap('{"\\udfff": 1}'), RejectCode.NOT_UTF8, id="lone-surrogate-in-a-key"),
        pytest.param(None, RejectCode.EMPTY_VALUE, id="tombstone"),
        pytest.param(b"", RejectCode.EMPTY_VALUE, id="empty"),
        pytest.param(b'{"conversation_id": "c"' + b" " * 900_000 + b"}", RejectCode.TOO_LARGE, id="900KB"),
    ],
)
def test_each_hostile_input_gets_its_own_stable_code(raw: bytes | None, code: RejectCode) -> None:
    """Deep nesting, huge numbers, NaN, duplicate keys, lone surrogates, tombstones: a code each."""
    limits = TextLimits() if raw is not None and len(raw) > 800_000 else BIG
    assert _code(raw, limits) == code


def test_the_largest_legal_values_still_decode() -> None:
    """64-bit bounds, nesting at the limit and an escaped emoji pair are valid, not rejected."""
    nested = "[" * (MAX_DEPTH - 3) + "]" * (MAX_DEPTH - 3)  # object, metadata, x, then the lists
    raw = _wrap(
        f'{{"lo": -9223372036854775808, "hi": 9223372036854775807, "deep": {nested}, "e": "\\ud83d\\ude00"}}'
    )
    utterance = decode_utterance(raw, BIG).utterance
    assert utterance.metadata is not None
    assert utterance.metadata["x"]["e"] == "😀"  # type: ignore[index,call-overload]


# Any JSON value: what producers in every language might write, NaN, 40-digit numbers and lone
# surrogates (which json.dumps writes as escapes such as "\\ud800") included.
any_text = st.text(st.characters(blacklist_categories=()), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=25,
)
field_names = st.sampled_from(
    ["conversation_id", "utterance_id", "text", "turn", "speaker", "timestamp", "language", "metadata", "x"]
)


@st.composite
def utterance_like(draw: st.DrawFn) -> bytes:
    """JSON text shaped like an utterance, with hostile values, duplicate keys and deep nesting."""
    fields: list[tuple[str, Any]] = [
        ("conversation_id", draw(st.text(min_size=1, max_size=10) | any_text | json_values)),
        ("utterance_id", draw(st.text(min_size=1, max_size=10) | any_text | json_values)),
        ("text", draw(st.text(max_size=30) | any_text | json_values)),
    ]
    fields += draw(st.lists(st.tuples(field_names, json_values), max_size=4))
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields)
    depth = draw(st.sampled_from([0, 0, 0, 5, MAX_DEPTH, 2000]))
    if depth:
        body += ', "metadata": {"deep": ' + "[" * depth + "1" + "]" * depth + "}"
    return ("{" + body + "}").encode()


def _verdict(raw: bytes) -> list[Any] | None:
    """None for a valid utterance (checked to encode cleanly), else the rejections."""
    try:
        utterance = decode_utterance(raw, BIG).utterance
    except ContractError as error:
        return error.rejections
    utterance.conversation_id.encode("utf-8")
    utterance.utterance_id.encode("utf-8")
    encode(utterance)
    return None


@given(utterance_like())
def test_structured_hostile_json_never_raises_anything_but_a_contract_error(raw: bytes) -> None:
    """Property: decoding ends in a valid utterance whose ids encode as UTF-8 keys, or in a
    ContractError whose rejections have known codes and print as JSON, whatever JSON arrives."""
    rejections = _verdict(raw)
    if rejections is not None:
        assert rejections
        assert all(r.code in RejectCode and r.message for r in rejections)
        json.loads(json.dumps([r.model_dump(mode="json") for r in rejections]))


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_with_a_valid_prefix_never_raise(tail: bytes) -> None:
    """Property: a valid-looking start followed by any bytes still ends in a verdict."""
    rejections = _verdict(b'{"conversation_id": "c", "utterance_id": "u", "text": ' + tail)
    assert rejections is None or len(rejections) >= 1


SIZES = [0, 1, 1000, 700_000, 749_000, 760_000, 1_048_576, 1_200_000]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("key_size", [0, 200, 5000, 1_000_000])
def test_a_dlq_record_always_fits_and_says_what_it_cut(size: int, key_size: int) -> None:
    """Whatever the input's value and key sizes, the encoded DLQ record fits max_bytes; an original
    that does not fit is cut and flagged, with the whole value's length and SHA-256 kept."""
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    key = b"k" * key_size if key_size else None
    max_bytes = 1_000_000 - DLQ_KEY_MAX_BYTES - 512
    error = ContractError("utterance", [*decode_error_rejections()] * 30)
    record = DlqRecord.for_rejection(
        error.rejections,
        value=value,
        key=key,
        source=SourceCoordinates(topic="utterances", partition=0, offset=7),
        max_bytes=max_bytes,
    )
    wire = encode(record)
    assert len(wire) <= max_bytes
    back = DlqRecord.model_validate_json(wire)
    assert back.original_size == size
    assert back.original_sha256 == hashlib.sha256(value).hexdigest()
    assert value.startswith(back.original_value)
    assert back.original_truncated == (back.original_value != value)
    assert len(back.errors) == 20
    assert back.more_errors == len(error.rejections) - 20
    if key is not None:
        assert back.original_key is not None
        assert key.startswith(back.original_key)
        assert len(back.original_key) <= DLQ_KEY_MAX_BYTES
        assert back.original_key_truncated == (key_size > DLQ_KEY_MAX_BYTES)
    # Small originals are never cut: the DLQ keeps them byte for byte.
    if size <= 700_000:
        assert back.original_value == value


def decode_error_rejections() -> list[Any]:
    with pytest.raises(ContractError) as info:
        decode_utterance(b'{"turn": "x", "speaker": 1}')
    return info.value.rejections
