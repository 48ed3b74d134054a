"""`parley engine` commands on a real bundle: export, build, verify, bench, list, show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from parley.cli import cli

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PARLEY_ENGINE_REGISTRY_URI": str(tmp_path / "registry"), "PARLEY_ENGINE_LOG_FORMAT": "json"}


def test_export_build_verify_list_show(checkpoint_dir: Path, env: dict[str, str]) -> None:
    """The command-line path from a checkpoint to a verified, listed engine."""
    runner = CliRunner()
    exported = runner.invoke(cli, ["engine", "export", str(checkpoint_dir), "--version", "cli-1"], env=env)
    assert exported.exit_code == 0, exported.output
    assert "registered student/cli-1" in exported.output
    built = runner.invoke(cli, ["engine", "build", "student", "cli-1", "--precision", "fp32"], env=env)
    assert built.exit_code == 0, built.output
    verified = runner.invoke(cli, ["engine", "verify", "student", "cli-1"], env=env, terminal_width=200)
    assert verified.exit_code == 0, verified.output
    assert "1.0000" in verified.output  # label agreement of the fp32 engine with torch
    strict = runner.invoke(cli, ["engine", "verify", "student", "cli-1", "--max-diff", "0"], env=env)
    assert strict.exit_code == 1  # a threshold nothing can meet fails the command
    listed = runner.invoke(cli, ["engine", "list", "student"], env=env, terminal_width=200)
    assert "cli-1" in listed.output
    shown = runner.invoke(cli, ["engine", "show", "student", "cli-1"], env=env)
    assert json.loads(shown.output.split("\n}\n")[0] + "}")["version"] == "cli-1"


def test_bench_prints_a_table_and_one_json_line(registered, env: dict[str, str]) -> None:
    """bench ends with one JSON line holding a row per batch size and bucketing mode."""
    registry, _ = registered
    result = CliRunner().invoke(
        cli,
        [
            "engine",
            "bench",
            "student",
            "v1",
            "--batch",
            "1",
            "--batch",
            "8",
            "--seconds",
            "0.2",
            "--limit",
            "40",
        ],
        env={**env, "PARLEY_ENGINE_REGISTRY_URI": registry.uri},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert [(r["batch"], r["bucketed"]) for r in report["rows"]] == [(1, False), (8, False), (8, True)]
    assert all(r["utterances_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in report["rows"])


def test_export_of_a_missing_checkpoint_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    """Exporting a folder that is not a checkpoint names what is missing and exits non-zero."""
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["engine", "export", str(tmp_path / "empty")], env=env)
    assert result.exit_code != 0
    assert "manifest.json" in str(result.exception)
