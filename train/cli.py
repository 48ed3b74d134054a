"""``parley train``: building the student from LLM labels and human labels."""

from __future__ import annotations

import click

from parley.cli import CONTEXT_SETTINGS, load_settings, print_settings
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
