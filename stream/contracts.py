"""The messages of the topics stream/ owns: ``utterances``, ``utterance-labels``, ``utterances-dlq``,
``labelling-queue``.

Every message is JSON in UTF-8, keyed by ``conversation_id`` (so a conversation stays ordered on one
partition) and carries ``schema_version``. Inputs are decoded with :func:`decode_utterance`, which
either returns a valid :class:`Utterance` or raises a ContractError whose rejections the worker copies
into the DLQ record. See docs/contracts.md, and the published schemas in docs/schemas/.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    JsonValue,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from parley.contracts import B64Bytes, RejectCode, Rejection, check_schema_version, decode_object, validate

# The labelling-queue contract and the prediction parts live in parley.messages (train/ reads them);
# re-exported here, where every stream/ contract is found.
from parley.messages import Identifier
from parley.messages import LabellingCandidate as LabellingCandidate
from parley.messages import LabelScore as LabelScore
from parley.messages import Message as _Message
from parley.messages import ModelRef as ModelRef
from parley.messages import PreviousTurn as PreviousTurn
from parley.messages import SelectionScores as SelectionScores
from parley.messages import TaskPrediction as TaskPrediction

SCHEMA_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = (1,)


@dataclass(frozen=True, slots=True)
class TextLimits:
    """How much text the worker accepts, and what it does with more."""

    max_chars: int = 2000
    oversize: Literal["reject", "truncate"] = "reject"
    max_message_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {self.max_chars}")
        if self.max_message_bytes < 64:
            raise ValueError(f"max_message_bytes must be at least 64, got {self.max_message_bytes}")


DEFAULT_LIMITS: Final = TextLimits()


class Utterance(_Message):
    """One utterance of a live conversation: a message on the ``utterances`` topic."""

    schema_version: Literal[1] = SCHEMA_VERSION
    conversation_id: Identifier = Field(description="The conversation; also the Kafka key.")
    utterance_id: Identifier = Field(description="Unique per utterance: the idempotency key.")
    text: StrictStr = Field(description="What was said, non-empty, at most the worker's max_chars.")
    turn: StrictInt | None = Field(None, ge=0, description="Position in the conversation, from 0.")
    speaker: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Who spoke, e.g. 'customer' or 'agent'."
    )
    timestamp: AwareDatetime | None = Field(None, description="When it was said (ISO 8601 with offset).")
    language: Annotated[StrictStr, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")] | None = Field(
        None, description="BCP 47 language tag, e.g. 'en' or 'en-GB'."
    )
    metadata: dict[StrictStr, JsonValue] | None = Field(None, description="Free-form, passed through.")

    @field_validator("text")
    @classmethod
    def _text_fits(cls, text: str, info: ValidationInfo) -> str:
        if not text.strip():
            raise PydanticCustomError(RejectCode.EMPTY_TEXT.value, "text is empty or only whitespace")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800" written as a JSON escape
            raise PydanticCustomError(
                RejectCode.NOT_UTF8.value,
                "text holds a character that is not valid UTF-8 at index {pos}",
                {"pos": exc.start},
            ) from None
        limits: TextLimits = (info.context or {}).get("limits", DEFAULT_LIMITS)
        if len(text) > limits.max_chars:
            if limits.oversize == "reject":
                raise PydanticCustomError(
                    RejectCode.TEXT_TOO_LONG.value,
                    "text has {length} characters, more than the limit of {limit}",
                    {"length": len(text), "limit": limits.max_chars},
                )
            return text[: limits.max_chars]
        return text


@dataclass(frozen=True, slots=True)
class DecodedUtterance:
    utterance: Utterance
    truncated_from: int | None = None
    """The original length in characters when the text was truncated to the limit, else None."""


def decode_utterance(raw: bytes | None, limits: TextLimits = DEFAULT_LIMITS) -> DecodedUtterance:
    """Bytes from the ``utterances`` topic to an Utterance, or a ContractError with every reason."""
    obj = decode_object(raw, contract="utterance", max_bytes=limits.max_message_bytes)
    check_schema_version(obj, contract="utterance", supported=SUPPORTED_VERSIONS)
    utterance = validate(Utterance, obj, contract="utterance", context={"limits": limits})
    original = obj.get("text")
    truncated = len(original) if isinstance(original, str) and len(original) > limits.max_chars else None
    return DecodedUtterance(utterance, truncated)


def encode(message: BaseModel) -> bytes:
    """A contract message to the UTF-8 JSON bytes written to Kafka."""
    return message.model_dump_json(exclude_none=True).encode("utf-8")


class ConversationState(_Message):
    """What Redis knows about the conversation after this utterance; available=False if Redis was down."""

    available: bool
    turn_count: int | None = Field(None, ge=0)
    rolling_sentiment: float | None = None
    last_intent: str | None = None


class UtteranceLabels(_Message):
    """The labelled utterance: one message on ``utterance-labels`` per valid input."""

    schema_version: Literal[1] = SCHEMA_VERSION
    conversation_id: Identifier
    utterance_id: Identifier
    turn: int | None = Field(None, ge=0)
    predictions: dict[str, TaskPrediction] = Field(min_length=1, description="Per task name.")
    model: ModelRef
    state: ConversationState
    text_truncated: bool = Field(False, description="True when the text was cut to the size limit.")
    processed_at: AwareDatetime
    latency_ms: float = Field(ge=0.0, description="From the input's Kafka timestamp to processed_at.")


class SourceCoordinates(_Message):
    """Where a rejected message came from."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    timestamp_ms: int | None = None


DLQ_KEY_MAX_BYTES: Final = 1024
"""Most bytes of an input's key kept in its DLQ record (and used as the record's Kafka key)."""
DLQ_MAX_ERRORS: Final = 20
"""Most rejections listed in one DLQ record; ``more_errors`` counts the rest."""
DLQ_DEFAULT_MAX_BYTES: Final = 1_000_000 - DLQ_KEY_MAX_BYTES - 512


class DlqRecord(_Message):
    """A rejected input with why it was rejected: one message on ``utterances-dlq``.

    The original value is kept byte for byte unless the record would not fit the producer's size
    limit; then it is cut (``original_truncated``) and ``original_size`` and ``original_sha256`` still
    describe the whole input."""

    schema_version: Literal[1] = SCHEMA_VERSION
    reason: RejectCode = Field(description="The first reason: what the record is filed under.")
    errors: list[Rejection] = Field(
        min_length=1, description=f"Every reason (the first {DLQ_MAX_ERRORS}), with field and value."
    )
    more_errors: int | None = Field(None, ge=1, description="Reasons left out of errors, if any.")
    original_value: B64Bytes = Field(description="The input's value bytes, base64 (cut if truncated).")
    original_size: int | None = Field(None, ge=0, description="Length of the whole input value in bytes.")
    original_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the whole input value, hex."
    )
    original_truncated: bool = Field(
        False, description="True when original_value holds only the first bytes of the input."
    )
    original_key: B64Bytes | None = Field(None, description="The input's key bytes, base64.")
    original_key_truncated: bool = Field(
        False, description=f"True when the key was longer than {DLQ_KEY_MAX_BYTES} bytes and was cut."
    )
    source: SourceCoordinates
    failed_at: AwareDatetime
    worker: str | None = Field(None, description="The worker instance that rejected it.")

    @classmethod
    def for_rejection(
        cls,
        rejections: list[Rejection],
        *,
        value: bytes | None,
        key: bytes | None,
        source: SourceCoordinates,
        worker: str | None = None,
        max_bytes: int = DLQ_DEFAULT_MAX_BYTES,
    ) -> DlqRecord:
        """The DLQ record of an input, encoded size at most ``max_bytes`` whatever the input's size."""
        value = value or b""
        kept_key = key if key is None or len(key) <= DLQ_KEY_MAX_BYTES else key[:DLQ_KEY_MAX_BYTES]
        record = cls(
            reason=rejections[0].code,
            errors=rejections[:DLQ_MAX_ERRORS],
            more_errors=len(rejections) - DLQ_MAX_ERRORS if len(rejections) > DLQ_MAX_ERRORS else None,
            original_value=b"",
            original_size=len(value),
            original_sha256=hashlib.sha256(value).hexdigest(),
            original_truncated=False,
            original_key=kept_key,
            original_key_truncated=kept_key is not key,
            source=source,
            failed_at=datetime.now(UTC),
            worker=worker,
        )
        # base64 grows 3 bytes into 4; the rest of the record is measured, not guessed.
        room = max_bytes - len(encode(record))
        if 4 * -(-len(value) // 3) <= room:
            return record.model_copy(update={"original_value": value})
        return record.model_copy(
            update={"original_value": value[: max(room, 0) // 4 * 3], "original_truncated": True}
        )

    @property
    def kafka_key(self) -> bytes | None:
        """The key to file this record under: the input's key (as kept)."""
        return self.original_key


STREAM_CONTRACTS: Final[dict[str, type[BaseModel]]] = {
    "utterances": Utterance,
    "utterance-labels": UtteranceLabels,
    "utterances-dlq": DlqRecord,
    "labelling-queue": LabellingCandidate,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of a contract, as consumers in other languages validate against it."""
    return model.model_json_schema(mode="validation")
