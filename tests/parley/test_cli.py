"""The parley command: help that explains, settings shown with secrets masked, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from parley.cli import cli

SECRET = "hunter2-do-not-print"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_root_help_lists_every_group(runner: CliRunner) -> None:
    """`parley --help` explains the product and lists stream, train and engine."""
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for group in ("stream", "train", "engine"):
        assert group in result.output
    assert "PARLEY_KAFKA_" in result.output


@pytest.mark.parametrize(
    ("group", "commands"),
    [
        ("stream", ["settings", "schema", "validate", "topics", "send", "tail", "roundtrip", "replay-dlq"]),
        ("engine", ["settings", "schema", "check-manifest"]),
        ("train", ["settings"]),
    ],
)
def test_each_group_explains_itself(runner: CliRunner, group: str, commands: list[str]) -> None:
    """Each group's --help has a description, its settings prefix and its commands."""
    result = runner.invoke(cli, [group, "--help"])
    assert result.exit_code == 0, result.output
    assert "PARLEY_" in result.output
    for command in commands:
        assert command in result.output
        sub = runner.invoke(cli, [group, command, "--help"])
        assert sub.exit_code == 0, sub.output
        assert "Usage:" in sub.output


def test_help_shows_option_defaults(runner: CliRunner) -> None:
    """Options print their defaults in --help."""
    result = runner.invoke(cli, ["stream", "roundtrip", "--help"], terminal_width=200)
    assert "[default: 60.0]" in result.output


@pytest.mark.parametrize("group", ["stream", "engine", "train"])
def test_settings_command_masks_secrets(runner: CliRunner, group: str) -> None:
    """`parley <group> settings` prints the settings in force without any secret value."""
    env = {
        "PARLEY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PARLEY_KAFKA_SASL_MECHANISM": "PLAIN",
        "PARLEY_KAFKA_SASL_USERNAME": "svc",
        "PARLEY_KAFKA_SASL_PASSWORD": SECRET,
        "PARLEY_REDIS_PASSWORD": SECRET,
        "PARLEY_TRAIN_LLM_API_KEY": SECRET,
    }
    result = runner.invoke(cli, [group, "settings"], env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert "**********" in result.output
    assert "SASL_PLAINTEXT" in result.output
    help_text = runner.invoke(cli, [group, "--help"], env=env).output
    assert SECRET not in help_text


def test_invalid_setting_names_the_environment_variable() -> None:
    """A bad setting ends the command with status 1 and names the variable, not a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "parley.cli", "stream", "settings"],
        env={"PARLEY_REDIS_PORT": "not-a-port", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "PARLEY_REDIS_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_in_an_invalid_setting_is_not_echoed() -> None:
    """When SASL settings are incomplete, the error does not repeat the password it was given."""
    result = subprocess.run(
        [sys.executable, "-m", "parley.cli", "stream", "settings"],
        env={
            "PARLEY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PARLEY_KAFKA_SASL_PASSWORD": SECRET,
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "sasl_mechanism" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_serving_path_imports_without_torch() -> None:
    """The stream and engines packages (and the CLI) import without pulling in torch."""
    code = (
        "import sys, parley.cli, stream.cli, stream.roundtrip, engines.cli, engines.events; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_contract_violation_reports_line_field_and_code(runner: CliRunner) -> None:
    """`parley stream validate` names the line, the field and the machine-readable code; exit 1."""
    lines = (
        b'{"conversation_id": "c", "utterance_id": "u1", "text": "fine"}\n'
        b'{"conversation_id": "c", "utterance_id": "u2", "text": "", "turn": "x"}\n'
    )
    result = runner.invoke(cli, ["stream", "validate", "-", "--json"], input=lines)
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    assert {(r["line"], r["field"], r["code"]) for r in rows} == {
        (2, "text", "empty_text"),
        (2, "turn", "wrong_type"),
    }
