"""The ``model-events`` topic: training announces models, engine builders announce engines.

    model_trained   train/ published a bundle          → engine builders compile and verify it
    engine_ready    a node built and verified an engine → workers of that node type hot-swap to it
    engine_failed   a build or verification failed      → the current engine stays; operators look

Messages are keyed by model name so one model's events stay ordered on one partition. Each carries
an ``event_id`` (the idempotency key for replays) and a ``schema_version``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from engines.manifest import Name
from parley.contracts import (
    ContractError,
    RejectCode,
    Rejection,
    check_schema_version,
    decode_object,
    preview,
    validate,
)

SCHEMA_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = (1,)
MAX_EVENT_BYTES: Final = 64 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        default_factory=lambda: uuid.uuid4().hex, description="Unique per event: replays carry the same id."
    )
    occurred_at: AwareDatetime = Field(default_factory=_now)
    model: Name
    version: Name


class HeldOutComparison(BaseModel):
    """Why a retrained model was published: its scores and the serving model's on one fixed held-out
    set, and the rule that compared them (``parley train loop``, docs/loop.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["macro_f1"] = "macro_f1"
    held_out: str = Field(
        min_length=1, description="Which utterances, e.g. 'test split of utterances.jsonl'."
    )
    utterances: int = Field(ge=0, description="How many held-out utterances carry a human label.")
    candidate: dict[str, float] = Field(description="Per task, the new model's score.")
    serving_version: str | None = Field(
        None, description="The version it was compared with; None: the first."
    )
    serving: dict[str, float] | None = Field(None, description="Per task, the serving model's score.")
    rule: str = Field(min_length=1, description="The publish rule, with its thresholds, in words.")


class ModelTrained(_Event):
    """A new bundle version exists in the registry."""

    event: Literal["model_trained"] = "model_trained"
    bundle_uri: str = Field(min_length=1, description="Where the bundle lives (path or fsspec URL).")
    evaluation: HeldOutComparison | None = Field(
        None, description="Set by the learning loop: the held-out comparison that let it publish."
    )


class EngineReady(_Event):
    """An engine for a bundle was built, passed its parity check and was promoted on this node type."""

    event: Literal["engine_ready"] = "engine_ready"
    backend: str = Field(min_length=1, description="e.g. 'onnxruntime-cpu', 'tensorrt'.")
    precision: str = Field("fp32", description="fp32, fp16 or int8.")
    gpu_arch: str | None = Field(None, description="CUDA compute capability, e.g. '9.0'; None on CPU.")
    runtime_version: str = Field(min_length=1, description="Version of the runtime that built it.")
    engine_uri: str = Field(min_length=1)


class EngineFailed(_Event):
    """Building or verifying an engine failed; the current engine stays in place."""

    event: Literal["engine_failed"] = "engine_failed"
    backend: str = Field(min_length=1)
    stage: Literal["load", "build", "verify", "register"]
    reason: str = Field(min_length=1)


ModelEvent = ModelTrained | EngineReady | EngineFailed

EVENT_TYPES: Final[dict[str, type[ModelTrained] | type[EngineReady] | type[EngineFailed]]] = {
    "model_trained": ModelTrained,
    "engine_ready": EngineReady,
    "engine_failed": EngineFailed,
}


def decode_model_event(raw: bytes) -> ModelEvent:
    """Bytes from ``model-events`` to an event, or a ContractError (unknown types included)."""
    obj = decode_object(raw, contract="model event", max_bytes=MAX_EVENT_BYTES)
    check_schema_version(obj, contract="model event", supported=SUPPORTED_VERSIONS)
    return parse_model_event(obj)


def parse_model_event(obj: dict[str, Any]) -> ModelEvent:
    kind = obj.get("event")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        code = RejectCode.MISSING_FIELD if kind is None else RejectCode.UNKNOWN_EVENT_TYPE
        raise ContractError(
            "model event",
            [
                Rejection(
                    code=code,
                    field="event",
                    value=None if kind is None else preview(kind),
                    message=f"event must be one of {sorted(EVENT_TYPES)}",
                )
            ],
        )
    return validate(EVENT_TYPES[kind], obj, contract="model event")


def event_key(event: ModelEvent) -> bytes:
    """The Kafka key: the model name, so one model's events are ordered."""
    return event.model.encode("utf-8")
