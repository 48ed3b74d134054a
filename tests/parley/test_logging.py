"""Logging: JSON lines off a terminal, console output on one, secrets redacted by key name."""

from __future__ import annotations

import json

import pytest
import structlog

from parley.logging import configure_logging


@pytest.fixture(autouse=True)
def _reset_structlog() -> None:
    yield
    structlog.reset_defaults()


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
