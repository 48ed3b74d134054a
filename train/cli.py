"""``parley train``: building the student from LLM labels and human labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


@group.command()
@click.option(
    "--utterances",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="utterances.jsonl (or .csv/.parquet): id, dialogue_id, turn, speaker, text, split.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="labels.json: the ordered label list per task.",
)
@click.option(
    "--gold",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Human labels: id, task, label.",
)
@click.option(
    "--llm",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="LLM label records: id, task, prompt_id, label, scores (needed by every method but ce_human).",
)
@click.option(
    "--task", "tasks", multiple=True, help="Tasks to train (repeatable); all in labels.json by default."
)
@click.option(
    "--method",
    type=click.Choice(["method", "ce_human", "ce_llm_hard", "distill", "gce"]),
    default="method",
    help="method: intra-dialogue preference pretraining; the others are the baselines.",
)
@click.option(
    "--budget", type=float, default=0.2, help="Fraction of training dialogues whose human labels are used."
)
@click.option(
    "--seed", type=int, default=13, help="Seed of the dev split, the budget and the initialisation."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Checkpoint directory."
)
@click.option("--model-name", default="student", help="Model name in the checkpoint's manifest.")
@click.option("--version", default=None, help="Version in the manifest (default: a UTC timestamp).")
@click.option(
    "--encoder",
    default=None,
    help="Hub id or local path of the encoder (packaged all-MiniLM-L6-v2 by default).",
)
@click.option("--pretrain-epochs", type=int, default=1)
@click.option("--finetune-epochs", type=int, default=5)
@click.option("--max-length", type=int, default=64)
@click.option("--device", default="cpu", help="cpu or cuda.")
def fit(
    utterances: Path,
    labels_path: Path,
    gold: Path,
    llm: Path | None,
    tasks: tuple[str, ...],
    method: str,
    budget: float,
    seed: int,
    out: Path,
    model_name: str,
    version: str | None,
    encoder: str | None,
    pretrain_epochs: int,
    finetune_epochs: int,
    max_length: int,
    device: str,
) -> None:
    """Train the student: LLM-label pretraining (for the method: the intra-dialogue preference loss),
    then fine-tuning on the human labels of a budget of training dialogues, with early stopping on a
    development split. Writes a checkpoint that `parley engine export` turns into a bundle."""
    import json
    import os
    from datetime import UTC, datetime

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from train.data import human_budget, load_dataset, split_by_dialogue
    from train.loop import FitConfig, Trainer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_settings(TrainerSettings)  # logging and settings, once
    all_labels = json.loads(labels_path.read_text())
    chosen = {t: all_labels[t] for t in (tasks or all_labels)}
    data = load_dataset(utterances, chosen, gold, llm, skip_tasks=frozenset(all_labels) - frozenset(chosen))
    split = split_by_dialogue(data, seed=seed)
    config = FitConfig(
        method=method,  # type: ignore[arg-type]
        model_name=model_name,
        encoder=encoder,
        version=version or datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        seed=seed,
        pretrain_epochs=pretrain_epochs,
        finetune_epochs=finetune_epochs,
        max_length=max_length,
        device=device,
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.0f} utt/s"),
        TimeElapsedColumn(),
    ) as progress:
        bar = progress.add_task("training", total=None, loss=0.0, rate=0.0)

        def on_step(step: dict[str, float]) -> None:
            progress.update(
                bar,
                advance=1,
                loss=step["loss"],
                rate=step["utt_per_s"],
                description="pretraining" if step["stage"] == 0 else "fine-tuning",
            )

        trainer = Trainer(data, split, human_budget(split.train, budget, seed), config, on_step=on_step)
        result = trainer.fit(out)
    test = trainer.evaluate(split.test)
    click.echo(
        json.dumps(
            {
                "checkpoint": str(result.checkpoint),
                "seconds": round(result.seconds, 1),
                "dev": result.metrics,
                "test": test,
            },
            indent=2,
        )
    )


@group.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--utterances", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--gold", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option(
    "--llm",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="LLM label records: the teacher is scored on the same test utterances.",
)
@click.option("--seed", type=int, default=None, help="Seed of the dev split (the checkpoint's by default).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for report.md, metrics.json and the confusion-matrix PNGs.",
)
def evaluate(
    checkpoint: Path, utterances: Path, gold: Path, llm: Path | None, seed: int | None, out: Path
) -> None:
    """Score a checkpoint on the test dialogues: accuracy, macro-F1, per-class precision/recall/F1,
    ECE before and after temperature scaling (fitted on the dev dialogues), confusion matrices, and
    the LLM ensemble (teacher) on the same utterances. Writes a Markdown report."""
    import json
    import os
    from dataclasses import asdict

    import numpy as np

    from engines.checkpoint import read_checkpoint
    from train.data import load_dataset, read_rows, split_by_dialogue
    from train.evaluate import confusion_png, markdown, task_report
    from train.loop import FitConfig, Trainer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_settings(TrainerSettings)
    manifest, model = read_checkpoint(checkpoint)
    labels = {t.name: list(t.labels) for t in manifest.tasks}
    # The corpus may label more tasks than the checkpoint has: score only the checkpoint's.
    other_tasks = {str(r.get("task")) for path in (gold, llm) if path for _, r in read_rows(path)} - set(
        labels
    )
    data = load_dataset(utterances, labels, gold, llm, skip_tasks=frozenset(other_tasks))
    used_seed = seed if seed is not None else int(manifest.training.config.get("seed", 13))  # type: ignore[arg-type]
    split = split_by_dialogue(data, seed=used_seed)
    trainer = Trainer(
        data,
        split,
        [],
        FitConfig(method="ce_human", max_length=manifest.max_length, encoder=str(checkpoint / "tokenizer")),
        model=model,
    )
    test_utts, test_probs = trainer.predict(split.test)
    dev_utts, dev_probs = trainer.predict(split.dev)
    out.mkdir(parents=True, exist_ok=True)
    reports, images = [], {}
    for task, names in labels.items():
        g = data.gold.get(task, {})

        def rows(
            utts: list[Any], probs: np.ndarray, g: dict[str, str] = g, names: list[str] = names
        ) -> tuple[np.ndarray, np.ndarray, list[int]]:
            idx = [i for i, u in enumerate(utts) if g.get(u.id)]
            return probs[idx], np.array([names.index(g[utts[i].id]) for i in idx], dtype=int), idx

        tp, tt, tidx = rows(test_utts, test_probs[task])
        dp, dt, _ = rows(dev_utts, dev_probs[task])
        ens = data.ensemble.get(task, {})
        teacher = None
        if ens and all(test_utts[i].id in ens for i in tidx):
            teacher = np.array([ens[test_utts[i].id] for i in tidx])
        report = task_report(task, names, tp, tt, dp, dt, teacher)
        images[task] = confusion_png(report, out / f"confusion-{task}.png").name
        reports.append(report)
    (out / "metrics.json").write_text(json.dumps([asdict(r) for r in reports], indent=2))
    (out / "report.md").write_text(markdown(reports, f"{manifest.model}/{manifest.version}", images))
    click.echo(f"wrote {out / 'report.md'}")


@group.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where runs/<run>.json, compare.md, compare.json and compare.png go.",
)
def compare(spec: Path, out: Path) -> None:
    """Run a grid of methods × human budgets × seeds from a YAML SPEC and write a table of mean ±
    standard deviation (and the LLM teacher) plus a plot. Resumable: finished runs are skipped."""
    import os

    from train.compare import load_grid, run_grid

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_settings(TrainerSettings)
    data, grid = load_grid(spec)
    run_grid(data, grid, out, on_run=lambda name: click.echo(f"running {name}"))
    click.echo((out / "compare.md").read_text())
