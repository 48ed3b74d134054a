"""``parley engine``: the bundle contract and the model-events topic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
from pydantic import Field, TypeAdapter

from engines.events import ModelEvent
from engines.manifest import BundleManifest, read_manifest
from engines.settings import EngineBuilderSettings
from parley.cli import CONTEXT_SETTINGS, load_settings, print_settings


def schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the contracts engines/ owns: the bundle manifest and model-events messages."""
    events = TypeAdapter(Annotated[ModelEvent, Field(discriminator="event")])
    return {
        "bundle-manifest": BundleManifest.model_json_schema(mode="validation"),
        "model-events": events.json_schema(mode="validation"),
    }


@click.group(context_settings=CONTEXT_SETTINGS)
def group() -> None:
    """Engine bundles: the contract between training and serving (manifest.json, tokenizer, ONNX
    model, compiled engines) and the model-events topic that announces them.

    Settings come from PARLEY_ENGINE_* and the shared PARLEY_KAFKA_*, PARLEY_REDIS_*, PARLEY_TOPIC_*
    (see `parley engine settings`).
    """


@group.command("settings")
def settings_cmd() -> None:
    """Print the engine builder's settings in force, as JSON, with secrets masked."""
    print_settings(load_settings(EngineBuilderSettings))


@group.command()
@click.option(
    "--what",
    type=click.Choice(["bundle-manifest", "model-events", "all"]),
    default="all",
    help="Which contract's schema to print.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write one <name>.schema.json per contract into this directory instead of printing.",
)
def schema(what: str, out: Path | None) -> None:
    """Export the JSON Schema of the bundle manifest and of model-events messages."""
    from stream.cli import _emit_schemas

    chosen = schemas() if what == "all" else {what: schemas()[what]}
    _emit_schemas(chosen, out)


@group.command("check-manifest")
@click.argument("path", type=click.Path(path_type=Path))
def check_manifest(path: Path) -> None:
    """Check a bundle's manifest.json (or the bundle directory holding it) against the contract."""
    manifest = read_manifest(path)
    tasks = ", ".join(f"{t.name} ({len(t.labels)} labels)" for t in manifest.tasks)
    click.echo(
        f"{manifest.model}/{manifest.version}: format {manifest.format_version}, tasks {tasks}, "
        f"max_length {manifest.max_length}"
    )
