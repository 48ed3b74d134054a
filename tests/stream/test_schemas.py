"""JSON Schemas of the message contracts are stable: a change must be deliberate and versioned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engines.cli import schemas as engine_schemas
from stream.contracts import STREAM_CONTRACTS, json_schema

SNAPSHOTS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def _current() -> dict[str, dict[str, Any]]:
    return {**{name: json_schema(model) for name, model in STREAM_CONTRACTS.items()}, **engine_schemas()}


@pytest.mark.parametrize("name", sorted(_current()))
def test_schema_matches_the_published_snapshot(name: str) -> None:
    """The generated schema equals docs/schemas/<name>.schema.json. If you changed a contract on purpose,
    bump its schema_version when old readers would misread it, then regenerate with
    `parley stream schema --out docs/schemas && parley engine schema --out docs/schemas`."""
    published = json.loads((SNAPSHOTS / f"{name}.schema.json").read_text())
    assert _current()[name] == published


def test_every_published_snapshot_is_still_generated() -> None:
    """No stale schema files linger in docs/schemas for contracts that no longer exist."""
    published = {p.name.removesuffix(".schema.json") for p in SNAPSHOTS.glob("*.schema.json")}
    assert published == set(_current())


def test_every_message_schema_pins_its_version() -> None:
    """Each message on a topic declares schema_version, so readers can refuse what they do not know."""
    for name in STREAM_CONTRACTS:
        assert "schema_version" in _current()[name]["properties"], name
