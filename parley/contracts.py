"""What every message contract shares: strict decoding from bytes and machine-readable rejections.

A message goes through :func:`decode_object` (size, UTF-8, JSON, an object, a schema version this
code knows) and then pydantic. Whatever the bytes, decoding ends in a value or a ContractError, never
another exception: nesting deeper than :data:`MAX_DEPTH`, integers outside 64 bits, NaN and infinities,
duplicate keys and lone surrogates are refused by code (``too_deep``, ``number_too_large``,
``not_finite``, ``duplicate_key``, ``not_utf8``) before they can reach pydantic, ``repr`` or an
encoder that would raise on them. Anything wrong becomes a :class:`ContractError` that carries one
:class:`Rejection` per problem: a stable ``code`` for machines (the worker routes on it, dashboards
count it), the dotted ``field``, a short ``value`` and a ``message`` for people.

The codes are part of the ``utterances-dlq`` contract: add new ones, never rename old ones.
"""

from __future__ import annotations

import base64
import json
import math
from enum import StrEnum
from typing import Annotated, Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, ValidationError, WithJsonSchema

from parley.errors import ParleyError

_VALUE_PREVIEW_CHARS: Final = 80
_JSON_ERROR_CONTEXT_CHARS: Final = 40

MAX_DEPTH: Final = 32
"""Deepest nesting of objects and arrays accepted (the top-level object is depth 1)."""
_INT_RANGE: Final = (-(2**63), 2**63 - 1)  # what consumers in Java, Go or Rust can hold


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
    EMPTY_VALUE = "empty_value"
    TOO_DEEP = "too_deep"
    NUMBER_TOO_LARGE = "number_too_large"
    NOT_FINITE = "not_finite"
    DUPLICATE_KEY = "duplicate_key"
    INTERNAL_ERROR = "internal_error"


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


def _reject(
    contract: str, code: RejectCode, message: str, value: str | None = None, field: str | None = None
) -> ContractError:
    return ContractError(contract, [Rejection(code=code, field=field, value=value, message=message)])


class _Refused(Exception):
    """Raised by the JSON parser's hooks; turned into a ContractError by decode_object."""

    def __init__(self, code: RejectCode, message: str, value: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.value = code, message, value


def _parse_int(text: str) -> int:
    # Checked on the digits before int() runs: Python refuses more than 4,300 digits with a bare
    # ValueError, and anything past 64 bits breaks consumers in other languages anyway.
    if len(text.lstrip("-")) > 19 or not (_INT_RANGE[0] <= (value := int(text)) <= _INT_RANGE[1]):
        raise _Refused(
            RejectCode.NUMBER_TOO_LARGE,
            f"an integer of {len(text.lstrip('-'))} digits is outside the 64-bit range",
            preview(text),
        )
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(RejectCode.NOT_FINITE, "a number overflows to infinity", preview(text))
    return value


def _parse_constant(text: str) -> float:
    raise _Refused(RejectCode.NOT_FINITE, f"{text} is not a JSON number", text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # which key: only worked out on the rare refusal
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(RejectCode.DUPLICATE_KEY, "a key appears twice in one object", preview(key))
            seen.add(key)
    return obj


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _field(path: tuple[str, ...]) -> str | None:
    """A dotted path safe to print and to encode (keys may be huge or hold lone surrogates)."""
    if not path:
        return None
    dotted = ".".join(path).encode("utf-8", errors="backslashreplace").decode("utf-8")
    return dotted if len(dotted) <= 200 else dotted[:197] + "..."


def _check_tree(obj: Any, contract: str) -> None:
    """Depth and lone surrogates, walked without recursion (a deep value must not blow the stack)."""
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(obj, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict | list) and depth > MAX_DEPTH:
            raise _reject(
                contract,
                RejectCode.TOO_DEEP,
                f"objects and arrays nest deeper than {MAX_DEPTH} levels",
                field=_field(path),
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if _has_surrogate(key):
                    raise _reject(
                        contract,
                        RejectCode.NOT_UTF8,
                        "a key holds a lone surrogate, which is not valid UTF-8",
                        value=preview(key),
                        field=_field(path),
                    )
                stack.append((item, depth + 1, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, (*path, str(i))) for i, item in enumerate(value))
        elif isinstance(value, str) and _has_surrogate(value):
            raise _reject(
                contract,
                RejectCode.NOT_UTF8,
                "a string holds a lone surrogate (such as \\ud800), which is not valid UTF-8",
                field=_field(path),
            )


def decode_object(raw: bytes | None, *, contract: str, max_bytes: int) -> dict[str, Any]:
    """Bytes off the wire to a JSON object, or a ContractError naming the first thing wrong.

    Nothing else escapes: this is the boundary where hostile bytes meet parley."""
    if not raw:
        raise _reject(
            contract,
            RejectCode.EMPTY_VALUE,
            "the message has no value" + (" (a tombstone)" if raw is None else ""),
        )
    if len(raw) > max_bytes:
        raise _reject(
            contract,
            RejectCode.TOO_LARGE,
            f"message is larger than the limit of {max_bytes} bytes",
            value=f"{len(raw)} bytes",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject(
            contract,
            RejectCode.NOT_UTF8,
            f"invalid UTF-8 at byte {exc.start}: {exc.reason}",
            value=preview(raw[max(exc.start - 8, 0) : exc.end + 8]),
        ) from None
    try:
        obj = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        around = text[
            max(exc.pos - _JSON_ERROR_CONTEXT_CHARS // 2, 0) : exc.pos + _JSON_ERROR_CONTEXT_CHARS // 2
        ]
        raise _reject(
            contract,
            RejectCode.NOT_JSON,
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            value=preview(around),
        ) from None
    except _Refused as exc:
        raise _reject(contract, exc.code, exc.message, value=exc.value) from None
    except RecursionError:
        raise _reject(
            contract, RejectCode.TOO_DEEP, f"objects and arrays nest deeper than {MAX_DEPTH} levels"
        ) from None
    if not isinstance(obj, dict):
        raise _reject(
            contract,
            RejectCode.NOT_OBJECT,
            f"expected a JSON object, got {type(obj).__name__}",
            value=preview(obj) if not isinstance(obj, list) else preview(f"[... {len(obj)} items]"),
        )
    _check_tree(obj, contract)
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
