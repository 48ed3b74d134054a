"""structlog, configured once per entry point, for parley's events and every library's alike.

JSON lines when stderr is not a terminal (containers, CI, log shippers); a readable console
renderer when it is. Library code only calls ``structlog.get_logger()``; it never configures.

Everything goes through one handler on the standard library's root logger: structlog's events are
handed to it ready-made, and the records of libraries that log through the standard library
(faust, mode, aiokafka, redis, …) are turned into the same event dictionaries on the way
(``structlog.stdlib.ProcessorFormatter``). So every line carries ``event``, ``level``,
``timestamp`` and ``logger``, whoever wrote it, and an exception is an ``exception`` field of its
line, not a traceback across many. Other libraries are heard from WARNING up, unless the level is
DEBUG: their INFO lines (faust's "Starting..." for each service, say) are noise to an operator.
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


class _OtherLibrariesFrom(logging.Filter):
    """Passes parley's events (they come through structlog, already filtered by level) and the
    standard-library records of other libraries from ``level`` up."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        # ProcessorFormatter.wrap_for_formatter hands structlog's logger over as record._logger.
        return hasattr(record, "_logger") or record.levelno >= self.level


def configure_logging(level: str = "INFO", fmt: LogFormat = "auto") -> None:
    """Configure structlog and the standard library's root logger to write to stderr."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    # Run on every event: at the call for structlog's, in the handler for other libraries' records.
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    # The console renderer draws exceptions itself; JSON needs them as a string field.
    render: list[Any] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if use_json
        else [structlog.dev.ConsoleRenderer(colors=True)]
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    handler.addFilter(
        _OtherLibrariesFrom(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    )
    # force: whatever handlers were there (an earlier call's, a library's) go.
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    # Warnings go through the "py.warnings" logger too, instead of straight to stderr.
    logging.captureWarnings(True)
