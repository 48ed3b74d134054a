"""``parley train``: building the student from LLM labels and human labels."""

from __future__ import annotations

from pathlib import Path

import click

from parley.cli import CONTEXT_SETTINGS, load_settings, print_settings, run
from train.settings import TrainerSettings


@click.group(context_settings=CONTEXT_SETTINGS)
def group() -> None:
    """Training: label utterances with an LLM prompt bank, train the small student on the LLM's
    intra-dialogue preferences and a few human labels, evaluate it, and publish it as a bundle.

    Needs the `train` extra (pip install 'parley[train]'). Settings come from PARLEY_TRAIN_* and the
    shared PARLEY_KAFKA_* and PARLEY_TOPIC_* (see `parley train settings`).
    """


@group.command("settings")
def settings_cmd() -> None:
    """Print the trainer's settings in force, as JSON, with secrets masked."""
    print_settings(load_settings(TrainerSettings))


@group.command("demo-bundle")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/demo"),
    help="Where the demo checkpoint is written.",
)
@click.option("--target", default="cpu", help="Node kind whose pointer is moved to the demo engine.")
def demo_bundle(work_dir: Path, target: str) -> None:
    """Make the demo model ready to serve: fit a small student on the sample conversations (heads only,
    seconds on CPU), export, build and verify its INT8 engine, and promote it. Does nothing when the
    demo model is already serving. Uses PARLEY_ENGINE_REGISTRY_URI and PARLEY_REDIS_*."""
    import os

    from engines.settings import EngineBuilderSettings
    from train.demo import ensure_demo_bundle

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = load_settings(EngineBuilderSettings)
    version = run(ensure_demo_bundle(settings.registry_uri, settings.redis, work_dir, target))
    click.echo(f"demo-student {version} is serving on {target}")
