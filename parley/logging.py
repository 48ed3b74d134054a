"""structlog, configured once per entry point.

JSON lines when stderr is not a terminal (containers, CI, log shippers); a readable console
renderer when it is. Library code only calls ``structlog.get_logger()``; it never configures.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

# Keys whose values are never logged, whatever the caller passed. SecretStr already renders as
# '**********'; this catches a plain string that slipped through under a telling name.
_SECRET_MARKERS = ("password", "secret", "api_key", "apikey", "token", "credential")


def _redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if any(marker in key.lower() for marker in _SECRET_MARKERS):
            event_dict[key] = "**********"
    return event_dict


def configure_logging(level: str = "INFO", fmt: LogFormat = "auto") -> None:
    """Configure structlog and the standard library's root logger to write to stderr."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=True)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    if use_json:
        shared.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiokafka, redis) log through the standard library: same level, same stream.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
