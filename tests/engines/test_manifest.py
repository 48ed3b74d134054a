"""The bundle manifest: written and read back, and clear errors that name the file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engines.errors import ManifestError
from engines.manifest import FORMAT_VERSION, BundleManifest, TaskSpec, read_manifest, write_manifest


def _manifest(**overrides: Any) -> BundleManifest:
    fields: dict[str, Any] = {
        "model": "student",
        "version": "2026.11.26-1",
        "created_at": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "tasks": [
            TaskSpec(
                name="dialogue_act",
                labels=["inform", "question", "directive", "commissive"],
                output="logits_dialogue_act",
            ),
            TaskSpec(name="sentiment", labels=["negative", "neutral", "positive"], output="logits_sentiment"),
        ],
        "max_length": 64,
        "code_revision": "e9036a2",
        "data_fingerprints": {"gold.jsonl": "a" * 64},
    }
    fields.update(overrides)
    return BundleManifest(**fields)


def test_manifest_round_trips_through_the_bundle_directory(tmp_path: Path) -> None:
    """write_manifest then read_manifest (by directory or by file) gives the same manifest."""
    manifest = _manifest()
    path = write_manifest(manifest, tmp_path)
    assert read_manifest(tmp_path) == manifest
    assert read_manifest(path) == manifest
    assert manifest.task("sentiment").labels[0] == "negative"


def test_missing_manifest_names_the_path(tmp_path: Path) -> None:
    """A directory without manifest.json is refused with the path in the message."""
    with pytest.raises(ManifestError, match=str(tmp_path / "manifest.json")):
        read_manifest(tmp_path)


def test_corrupt_manifest_names_the_file_and_the_position(tmp_path: Path) -> None:
    """Truncated JSON is refused with the file and the line and column of the problem."""
    text = _manifest().model_dump_json(indent=2)
    (tmp_path / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(ManifestError, match=r"manifest\.json is not JSON \(line \d+, column \d+"):
        read_manifest(tmp_path)


def test_manifest_from_a_newer_format_is_refused_clearly(tmp_path: Path) -> None:
    """A bundle written by a newer parley is refused with 'upgrade', not misread."""
    data = json.loads(_manifest().model_dump_json())
    data["format_version"] = FORMAT_VERSION + 1
    data["some_future_field"] = {"x": 1}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="upgrade parley"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"tasks": []}, "tasks", id="no-tasks"),
        pytest.param({"version": "../escape"}, "version", id="unsafe-version"),
        pytest.param({"max_length": 4}, "max_length", id="tiny-max-length"),
        pytest.param({"created_at": "2026-11-26T12:00:00"}, "created_at", id="naive-time"),
        pytest.param({"data_fingerprints": {"x": "not-a-sha"}}, "data_fingerprints.x", id="bad-fingerprint"),
    ],
)
def test_invalid_manifest_names_the_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    """Each invalid field is named in the error, with the file."""
    data = json.loads(_manifest().model_dump_json())
    data.update(change)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(tmp_path)
    assert "manifest.json" in str(info.value)


def test_task_labels_must_be_unique() -> None:
    """A task that lists a label twice cannot map logits to labels: refused, naming the label."""
    with pytest.raises(ValueError, match="neutral"):
        TaskSpec(name="sentiment", labels=["neutral", "positive", "neutral"], output="logits")


def test_tasks_need_distinct_names_and_outputs() -> None:
    """Two tasks with one name, or one ONNX output, are refused."""
    task = TaskSpec(name="sentiment", labels=["a", "b"], output="logits")
    with pytest.raises(ValueError, match="unique"):
        _manifest(tasks=[task, task])
    with pytest.raises(ValueError, match="own ONNX output"):
        _manifest(tasks=[task, TaskSpec(name="intent", labels=["a", "b"], output="logits")])


def test_unknown_task_lookup_lists_the_tasks() -> None:
    """Asking for a task the bundle lacks says which tasks it has."""
    with pytest.raises(KeyError, match="dialogue_act"):
        _manifest().task("emotion")
