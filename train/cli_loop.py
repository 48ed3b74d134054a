"""``parley train loop`` and ``parley train pool``: the learning loop's retraining and human review.

Registered on the ``parley train`` group by train.cli; the training options ``loop`` shares with
``fit`` are fit's own option objects, so the two commands cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from parley.cli import CONTEXT_SETTINGS, load_settings, run
from train.errors import TrainError
from train.recipes import recipe_settings
from train.settings import TrainerSettings

SHARED_WITH_FIT = (
    "utterances",
    "labels_path",
    "gold",
    "llm",
    "tasks",
    "recipe",
    "method",
    "budget",
    "seed",
    "model_name",
    "version",
    "encoder",
    "pretrain_epochs",
    "finetune_epochs",
    "max_length",
    "device",
    "overrides",
    "sample",
)


@click.command("loop", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--pool",
    "pool_uri",
    required=True,
    help="The labelled pool that `parley train label --from-topic` fills (folder or fsspec URL).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Work folder: the merged data, the checkpoint and decision.json.",
)
@click.option(
    "--serving",
    "serving_version",
    default=None,
    help="The version to beat (default: the one the workers served when they chose the pool's newest "
    "candidate, else the newest version of --model-name in the registry).",
)
@click.option("--min-gain", type=float, default=0.005, show_default=True, help="Mean macro-F1 gain required.")
@click.option(
    "--max-task-drop",
    type=float,
    default=0.02,
    show_default=True,
    help="Largest fall of any one task's macro-F1 allowed.",
)
@click.option(
    "--publish/--dry-run",
    default=True,
    show_default=True,
    help="Register and announce the new model when the rule says so (--dry-run: only decide).",
)
def loop(
    pool_uri: str,
    out: Path,
    serving_version: str | None,
    min_gain: float,
    max_task_drop: float,
    publish: bool,
    **fit: Any,
) -> None:
    """Retrain on the pool: the earlier data plus every labelled candidate (and reviewed label) of the
    pool, trained with the same recipe and options as `parley train fit`; then the new model and the
    serving one are scored on the earlier data's test split, and the new one is registered and
    announced (model_trained, with both scores and the rule) only if it is better. The engine
    builders build and verify it, and the workers hot-swap. Exits 0 whether or not it published;
    out/decision.json says which and why."""
    import os
    from datetime import UTC, datetime

    from engines.registry import Registry
    from train.data import parse_budget
    from train.loop import FitConfig, Trainer
    from train.pool import Pool
    from train.retrain import EarlierData, PublishRule, held_out_scores, labelled_count, merge_pool
    from train.retrain import serving_version as serving_version_of

    try:
        recipe = recipe_settings(fit["recipe"], fit["method"])
    except TrainError as e:
        raise click.UsageError(str(e)) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = load_settings(TrainerSettings)
    from train.cli import _fit_overrides, read_labels

    labels = read_labels(fit["labels_path"], fit["tasks"])
    version = fit["version"] or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    contents = Pool(pool_uri).read()
    merged = merge_pool(
        EarlierData(fit["utterances"], fit["gold"], fit["llm"]),
        labels,
        contents,
        out / "data",
        parse_budget(fit["budget"]),
        fit["seed"],
    )
    click.echo(
        f"pool {pool_uri}: {merged.pool_candidates} labelled candidate(s), {merged.pool_reviewed} reviewed "
        f"label(s); {merged.left_out} left out (held-out utterances of the earlier data)"
    )
    given = {
        **recipe,
        "model_name": fit["model_name"],
        "encoder": fit["encoder"],
        "version": version,
        "seed": fit["seed"],
        "pretrain_epochs": fit["pretrain_epochs"],
        "finetune_epochs": fit["finetune_epochs"],
        "max_length": fit["max_length"],
        "device": fit["device"],
    }
    try:  # --set NAME=VALUE wins, as in fit
        config = FitConfig(**{**given, **_fit_overrides(fit["overrides"])})
    except TrainError as e:
        raise click.ClickException(str(e)) from None
    trainer = Trainer(merged.data, merged.split, merged.human_dialogues, config)
    result = trainer.fit(out / "checkpoint")
    candidate = held_out_scores(result.checkpoint, merged.data, merged.split)
    registry = Registry(settings.registry_uri)
    serving_version = serving_version or serving_version_of(
        contents, registry.versions(config.model_name), version
    )
    serving = None
    if serving_version is not None:
        bundle = registry.open(config.model_name, serving_version)
        serving = held_out_scores(bundle.path, merged.data, merged.split)
    rule = PublishRule(min_gain, max_task_drop)
    ok, why = rule.decide(candidate, serving)
    from engines.events import HeldOutComparison

    comparison = HeldOutComparison(
        held_out=f"test split of {fit['utterances'].name}",
        utterances=labelled_count(merged.data, merged.split.test),
        candidate=candidate,
        serving_version=serving_version,
        serving=serving,
        rule=rule.describe(),
    )
    decision = {
        "publish": ok,
        "why": why,
        "model": config.model_name,
        "version": version,
        "comparison": comparison.model_dump(mode="json"),
        "pool": {
            "uri": pool_uri,
            "candidates": merged.pool_candidates,
            "reviewed": merged.pool_reviewed,
            "left_out": merged.left_out,
        },
        "published": False,
    }
    if ok and publish:
        from engines.export import read_sample_rows
        from engines.publish import publish as publish_events
        from engines.publish import register_checkpoint

        bundle, event = register_checkpoint(
            result.checkpoint, settings.registry_uri, read_sample_rows(fit["sample"])
        )
        event = event.model_copy(update={"evaluation": comparison})
        run(publish_events(settings.kafka, settings.topics.model_events, event))
        decision["published"] = True
        click.echo(f"registered and announced {bundle.label} on {settings.topics.model_events}")
    (out / "decision.json").write_text(json.dumps(_finite(decision), indent=2, allow_nan=False))
    verdict = "publish" if ok else "keep the serving model"
    click.echo(f"{verdict}: {why}\n  candidate {candidate}\n  serving {serving_version}: {serving}")


def _finite(value: Any) -> Any:
    """NaN (a task the held-out set could not score) as null: decision.json stays valid JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


@click.group("pool", context_settings=CONTEXT_SETTINGS)
def pool_group() -> None:
    """The labelled pool of the learning loop: what is in it, and the human review (export a file of
    utterances for people to label, import what they filled in). docs/loop.md."""


_POOL = click.option("--pool", "pool_uri", required=True, help="The pool (folder or fsspec URL).")


@pool_group.command("show")
@_POOL
def pool_show(pool_uri: str) -> None:
    """Counts: candidates, reviewed labels per task, LLM labels per task and label."""
    from collections import Counter

    from train.pool import Pool

    load_settings(TrainerSettings)
    contents = Pool(pool_uri).read()
    click.echo(f"{pool_uri}: {len(contents.items)} candidate(s)")
    for task in contents.tasks:
        top = Counter(str((i.ensemble.get(task) or {}).get("label")) for i in contents.items.values())
        reviewed = len(contents.human.get(task, {}))
        click.echo(f"  {task}: {reviewed} reviewed; ensemble labels {dict(top.most_common())}")


@pool_group.command("export")
@_POOL
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="review.csv or review.jsonl: one row per utterance with its context, the ensemble's top labels "
    "and an empty column per task to fill in.",
)
@click.option("--all", "everything", is_flag=True, help="Also the utterances already reviewed.")
@click.option("--limit", type=int, default=None, help="Only the N most worth reviewing (the review budget).")
def pool_export(pool_uri: str, out: Path, everything: bool, limit: int | None) -> None:
    """Write the pool's utterances for human review, the most worth a person's label first: where the
    serving engine and the LLM disagree, then the labels rarest in the pool (docs/loop.md)."""
    from train.pool import Pool, review_rows, write_review

    load_settings(TrainerSettings)
    contents = Pool(pool_uri).read()
    rows = review_rows(contents, only_unreviewed=not everything, limit=limit)
    write_review(rows, list(contents.tasks), out)
    click.echo(
        f"wrote {len(rows)} utterance(s) to {out}; fill in the task columns, then `parley train pool import`"
    )


@pool_group.command("import")
@_POOL
@click.argument("review", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def pool_import(pool_uri: str, review: Path) -> None:
    """Add the labels filled in a REVIEW file (.csv or .jsonl, as exported) to the pool. Every label
    is checked against its task's set first; nothing is stored if one is wrong. Importing the same
    file twice stores it once; a later review of an utterance wins over an earlier one."""
    from train.pool import Pool, read_review

    load_settings(TrainerSettings)
    pool = Pool(pool_uri)
    labels = read_review(review, pool.read())
    if not labels:
        raise click.ClickException(f"{review} has no label filled in")
    path = pool.add_reviews(labels)
    click.echo(f"imported {len(labels)} label(s) into {path}" if path else "already imported: nothing new")
