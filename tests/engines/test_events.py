"""The model-events contract: each event round trips; unknown or malformed events are refused."""

from __future__ import annotations

import json

import pytest

from engines.events import EngineFailed, EngineReady, ModelTrained, decode_model_event, event_key
from parley.contracts import ContractError, RejectCode
from stream.contracts import encode


@pytest.mark.parametrize(
    "event",
    [
        ModelTrained(model="student", version="v1", bundle_uri="file:///registry/student/v1"),
        EngineReady(
            model="student",
            version="v1",
            backend="tensorrt",
            precision="fp16",
            gpu_arch="9.0",
            runtime_version="10.13.0",
            engine_uri="file:///registry/student/v1/engines/x.plan",
        ),
        EngineFailed(
            model="student",
            version="v1",
            backend="tensorrt",
            stage="verify",
            reason="label agreement 0.91 below 0.99",
        ),
    ],
    ids=["model_trained", "engine_ready", "engine_failed"],
)
def test_event_round_trips(event: ModelTrained | EngineReady | EngineFailed) -> None:
    """Each event type decodes back to itself and is keyed by its model."""
    assert decode_model_event(encode(event)) == event
    assert event_key(event) == b"student"


def test_unknown_event_type_is_refused_with_its_name() -> None:
    """An event type this parley does not know is rejected as unknown_event_type, naming it."""
    raw = json.dumps({"event": "model_deleted", "model": "student", "version": "v1"}).encode()
    with pytest.raises(ContractError) as info:
        decode_model_event(raw)
    assert info.value.code == RejectCode.UNKNOWN_EVENT_TYPE
    assert info.value.rejections[0].field == "event"
    assert "model_deleted" in str(info.value)


def test_event_without_type_is_refused() -> None:
    """A message without an event field is rejected as missing_field on 'event'."""
    with pytest.raises(ContractError) as info:
        decode_model_event(b'{"model": "student", "version": "v1"}')
    assert info.value.code == RejectCode.MISSING_FIELD


def test_event_with_wrong_field_type_names_the_field() -> None:
    """A field of the wrong type is named in the rejection."""
    raw = json.dumps(
        {"event": "model_trained", "model": "student", "version": "v1", "bundle_uri": 5}
    ).encode()
    with pytest.raises(ContractError) as info:
        decode_model_event(raw)
    assert info.value.rejections[0].field == "bundle_uri"
    assert info.value.code == RejectCode.WRONG_TYPE


def test_event_type_that_is_not_a_string_is_refused() -> None:
    """An unhashable event type (a list) is a rejection, not a crash."""
    with pytest.raises(ContractError) as info:
        decode_model_event(b'{"event": ["model_trained"], "model": "m", "version": "v"}')
    assert info.value.code == RejectCode.UNKNOWN_EVENT_TYPE


def test_replayed_event_keeps_its_id() -> None:
    """The event_id survives the wire, so a consumer can recognise a replay."""
    event = ModelTrained(model="student", version="v1", bundle_uri="/r/student/v1")
    assert decode_model_event(encode(event)).event_id == event.event_id
    assert ModelTrained(model="student", version="v1", bundle_uri="/r").event_id != event.event_id
