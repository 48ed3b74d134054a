"""What every message contract shares: strict decoding from bytes and machine-readable rejections.

A message goes through :func:`decode_object` (size, UTF-8, JSON, an object, a schema version this
code knows) and then pydantic. Anything wrong becomes a :class:`ContractError` that carries one
:class:`Rejection` per problem: a stable ``code`` for machines (the worker routes on it, dashboards
count it), the dotted ``field``, a short ``value`` and a ``message`` for people.

The codes are part of the ``utterances-dlq`` contract: add new ones, never rename old ones.
"""

from __future__ import annotations

import base64
import json
from enum import StrEnum
from typing import Annotated, Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, ValidationError, WithJsonSchema

from parley.errors import ParleyError

_VALUE_PREVIEW_CHARS: Final = 80
_JSON_ERROR_CONTEXT_CHARS: Final = 40


class RejectCode(StrEnum):
    """Why a message was refused. Stable strings: consumers and dashboards match on them."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    EMPTY_TEXT = "empty_text"
    TEXT_TOO_LONG = "text_too_long"
    INFERENCE_FAILED = "inference_failed"


class Rejection(BaseModel):
    """One thing wrong with one message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: RejectCode
    field: str | None = None
    value: str | None = None
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        shown = f" (got {self.value})" if self.value is not None else ""
        return f"{where}{self.message}{shown} [{self.code}]"


class ContractError(ParleyError, ValueError):
    """A message that does not satisfy its contract; ``rejections`` says every reason."""

    def __init__(self, contract: str, rejections: list[Rejection]) -> None:
        if not rejections:
            raise ValueError("a ContractError needs at least one rejection")
        self.contract = contract
        self.rejections = rejections
        super().__init__(f"{contract} rejected: " + "; ".join(str(r) for r in rejections))

    @property
    def code(self) -> RejectCode:
        """The first reason: what a DLQ record is filed under."""
        return self.rejections[0].code


def preview(value: Any) -> str:
    """A short, printable rendering of an offending value (never the whole of a huge text)."""
    text = repr(value)
    if len(text) > _VALUE_PREVIEW_CHARS:
        text = text[: _VALUE_PREVIEW_CHARS - 3] + "..."
    return text


def decode_object(raw: bytes, *, contract: str, max_bytes: int) -> dict[str, Any]:
    """Bytes off the wire to a JSON object, or a ContractError naming the first thing wrong."""
    if len(raw) > max_bytes:
        raise ContractError(
            contract,
            [
                Rejection(
                    code=RejectCode.TOO_LARGE,
                    value=f"{len(raw)} bytes",
                    message=f"message is larger than the limit of {max_bytes} bytes",
                )
            ],
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(
            contract,
            [
                Rejection(
                    code=RejectCode.NOT_UTF8,
                    value=preview(raw[max(exc.start - 8, 0) : exc.end + 8]),
                    message=f"invalid UTF-8 at byte {exc.start}: {exc.reason}",
                )
            ],
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        around = text[
            max(exc.pos - _JSON_ERROR_CONTEXT_CHARS // 2, 0) : exc.pos + _JSON_ERROR_CONTEXT_CHARS // 2
        ]
        raise ContractError(
            contract,
            [
                Rejection(
                    code=RejectCode.NOT_JSON,
                    value=preview(around),
                    message=f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                )
            ],
        ) from None
    if not isinstance(obj, dict):
        raise ContractError(
            contract,
            [
                Rejection(
                    code=RejectCode.NOT_OBJECT,
                    value=preview(obj),
                    message=f"expected a JSON object, got {type(obj).__name__}",
                )
            ],
        )
    return obj


def check_schema_version(obj: dict[str, Any], *, contract: str, supported: tuple[int, ...]) -> None:
    """Refuse a message whose ``schema_version`` this code does not know (absent means 1)."""
    version = obj.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ContractError(
            contract,
            [
                Rejection(
                    code=RejectCode.WRONG_TYPE,
                    field="schema_version",
                    value=preview(version),
                    message="schema_version must be an integer",
                )
            ],
        )
    if version not in supported:
        raise ContractError(
            contract,
            [
                Rejection(
                    code=RejectCode.UNKNOWN_SCHEMA_VERSION,
                    field="schema_version",
                    value=str(version),
                    message=f"this parley reads schema versions {list(supported)}; upgrade the consumer "
                    "or send a version it knows",
                )
            ],
        )


_M = TypeVar("_M", bound=BaseModel)

_CUSTOM_CODES: Final = {code.value for code in RejectCode}


def _code_for(error_type: str) -> RejectCode:
    if error_type in _CUSTOM_CODES:
        return RejectCode(error_type)
    if error_type == "missing":
        return RejectCode.MISSING_FIELD
    if error_type == "extra_forbidden":
        return RejectCode.UNKNOWN_FIELD
    if error_type.endswith(("_type", "_parsing")) or error_type in (
        "is_instance_of",
        "model_attributes_type",
    ):
        return RejectCode.WRONG_TYPE
    return RejectCode.INVALID_VALUE


def rejections_from(exc: ValidationError) -> list[Rejection]:
    """pydantic's errors as rejections: dotted field path, stable code, short value preview."""
    rejections = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or None
        value = None if err["type"] == "missing" else preview(err.get("input"))
        message = err["msg"].removeprefix("Value error, ")
        rejections.append(Rejection(code=_code_for(err["type"]), field=field, value=value, message=message))
    return rejections


def validate(model: type[_M], obj: Any, *, contract: str, context: dict[str, Any] | None = None) -> _M:
    """``model.model_validate`` with its errors turned into a ContractError."""
    try:
        return model.model_validate(obj, context=context)
    except ValidationError as exc:
        raise ContractError(contract, rejections_from(exc)) from None


def _b64decode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    return base64.b64decode(value, validate=True)


# Bytes carried in JSON as one line of standard base64 (pydantic's Base64Bytes inserts newlines).
B64Bytes = Annotated[
    bytes,
    PlainValidator(_b64decode),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]
