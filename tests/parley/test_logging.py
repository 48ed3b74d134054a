"""Logging: JSON lines off a terminal, console output on one, secrets redacted by key name, other
libraries' standard-library records rendered the same way."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from parley.logging import configure_logging


@pytest.fixture(autouse=True)
def _reset_structlog() -> None:
    yield
    structlog.reset_defaults()
    logging.captureWarnings(False)


def test_json_lines_when_not_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal (pytest captures stderr) each event is one JSON object with level and time."""
    configure_logging("INFO", "auto")
    structlog.get_logger().info("batch done", topic="utterances", size=32)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    event = json.loads(line)
    assert event["event"] == "batch done"
    assert event["size"] == 32
    assert event["level"] == "info"
    assert "timestamp" in event


def test_level_filters_events(capsys: pytest.CaptureFixture[str]) -> None:
    """Below the configured level nothing is written."""
    configure_logging("WARNING", "json")
    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud")
    err = capsys.readouterr().err
    assert "quiet" not in err
    assert "loud" in err


def test_console_format_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    """The console renderer writes readable text, not JSON."""
    configure_logging("INFO", "console")
    structlog.get_logger().info("hello", who="operator")
    err = capsys.readouterr().err
    assert "hello" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.strip().splitlines()[-1])


def test_values_under_secret_names_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A plain string passed under a secret-looking key never reaches the log."""
    configure_logging("INFO", "json")
    structlog.get_logger().info("connecting", sasl_password="hunter2", api_key="sk-123", host="kafka-0")
    event = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert event["sasl_password"] == "**********"
    assert event["api_key"] == "**********"
    assert event["host"] == "kafka-0"


def test_unknown_level_is_refused() -> None:
    """A typo in the level is an error naming it."""
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging("LOUD")


def test_a_standard_library_record_is_one_json_line_with_its_logger(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another library's record (logging.getLogger) comes out as parley's events do: one JSON object
    with event, level, timestamp and the logger's name."""
    configure_logging("INFO", "json")
    logging.getLogger("aiokafka.consumer.group_coordinator").warning("coordinator %s lost", 1)
    (line,) = capsys.readouterr().err.strip().splitlines()
    event = json.loads(line)
    assert event["event"] == "coordinator 1 lost"
    assert event["level"] == "warning"
    assert event["logger"] == "aiokafka.consumer.group_coordinator"
    assert "timestamp" in event


def test_parley_events_name_their_logger(capsys: pytest.CaptureFixture[str]) -> None:
    """structlog's events carry the logger name they were asked for."""
    configure_logging("INFO", "json")
    structlog.get_logger("stream.app").info("endpoints up", port=6066)
    event = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert event["logger"] == "stream.app"
    assert event["port"] == 6066


def test_other_libraries_are_heard_from_warning_up_unless_debugging(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At INFO a library's INFO record is dropped while parley's INFO events pass; at DEBUG both do."""
    configure_logging("INFO", "json")
    logging.getLogger("faust.worker").info("Starting...")
    structlog.get_logger("stream.app").info("batch")
    assert [json.loads(x)["event"] for x in capsys.readouterr().err.splitlines()] == ["batch"]
    configure_logging("DEBUG", "json")
    logging.getLogger("faust.worker").info("Starting...")
    logging.getLogger("aiokafka").debug("fetching")
    events = [json.loads(x)["event"] for x in capsys.readouterr().err.splitlines()]
    assert events == ["Starting...", "fetching"]


def test_an_exception_is_a_field_of_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A traceback, from structlog or from a library's logger, is one JSON field, not lines of text."""
    configure_logging("INFO", "json")
    try:
        raise RuntimeError("broker gone")
    except RuntimeError:
        structlog.get_logger("stream.app").exception("send failed")
        logging.getLogger("mode.worker").exception("Error: %r", "crash")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        event = json.loads(line)
        assert event["level"] == "error"
        assert "RuntimeError: broker gone" in event["exception"]


def test_a_library_record_on_the_console_is_readable_text(capsys: pytest.CaptureFixture[str]) -> None:
    """On the console renderer a library's record is text naming its logger, not JSON."""
    configure_logging("INFO", "console")
    logging.getLogger("aiokafka").error("Group Coordinator Request failed")
    err = capsys.readouterr().err
    assert "Group Coordinator Request failed" in err
    assert "aiokafka" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.strip().splitlines()[-1])


def test_configuring_twice_leaves_one_handler() -> None:
    """Each entry point's configuration replaces the last: one handler on the root logger."""
    configure_logging("INFO", "json")
    configure_logging("DEBUG", "console")
    assert len(logging.getLogger().handlers) == 1
