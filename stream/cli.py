"""``parley stream``: the topics, the contracts and the tools around the worker."""

from __future__ import annotations

import json
import sys
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from parley.cli import CONTEXT_SETTINGS, emit_schemas, load_settings, print_settings, run
from parley.contracts import ContractError, RejectCode
from stream.contracts import STREAM_CONTRACTS, TextLimits, decode_utterance, json_schema
from stream.settings import WorkerSettings

console = Console(stderr=False)


def _settings(ctx: click.Context) -> WorkerSettings:
    """The worker's settings, built (and logging configured) once per command, on first need."""
    if "settings" not in ctx.meta:
        ctx.meta["settings"] = load_settings(WorkerSettings)
    settings: WorkerSettings = ctx.meta["settings"]
    return settings


@click.group(context_settings=CONTEXT_SETTINGS)
def group() -> None:
    """The streaming side: Kafka topics, message contracts, and tools to send and read conversations.

    Connection settings come from PARLEY_KAFKA_*, PARLEY_REDIS_* and PARLEY_TOPIC_*; the worker's own
    from PARLEY_WORKER_* (see `parley stream settings`).
    """


@group.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the labelling worker: micro-batches from the utterances topic through the current engine to
    utterance-labels (bad input to the DLQ), conversation state in Redis, hot swaps on engine_ready.

    Serves PARLEY_WORKER_MODEL's engine from the Redis pointer (or PARLEY_WORKER_BUNDLE_PATH).
    /metrics, /healthz and /readyz listen on PARLEY_WORKER_WEB_PORT from the start; the worker joins its
    consumer group only once an engine loads. Offsets are committed only after Kafka acknowledged the
    outputs (docs/worker.md, "Delivery guarantees"). SIGTERM finishes the batches in flight, commits and
    exits 0; a send Kafka never acknowledges stops the worker without committing (exit 1).
    """
    import os

    from stream.app import run_worker

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_worker(_settings(ctx))


@group.command("settings")
@click.pass_context
def settings_cmd(ctx: click.Context) -> None:
    """Print the worker settings in force, as JSON, with secrets masked."""
    print_settings(_settings(ctx))


@group.command()
@click.option(
    "--topic",
    type=click.Choice([*STREAM_CONTRACTS, "all"]),
    default="all",
    help="Which topic's message schema to print.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write one <topic>.schema.json per topic into this directory instead of printing.",
)
def schema(topic: str, out: Path | None) -> None:
    """Export the JSON Schema of the messages on stream's topics (utterances, labels, DLQ).

    Producers in any language can validate against these before sending.
    """
    chosen = STREAM_CONTRACTS if topic == "all" else {topic: STREAM_CONTRACTS[topic]}
    schemas = {name: json_schema(model) for name, model in chosen.items()}
    emit_schemas(schemas, out)


@group.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--max-chars", type=int, default=TextLimits().max_chars, help="Longest text accepted.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per rejected line, for machines.")
def validate(file: Path, max_chars: int, as_json: bool) -> None:
    """Check every line of a JSONL FILE ('-' for stdin) against the utterances contract.

    Each rejected line is reported with its line number, the field, the value and the reason code the
    worker would file it under in the DLQ. Exits 1 when any line is rejected.
    """
    stream = sys.stdin.buffer if str(file) == "-" else _open(file)
    limits = TextLimits(max_chars=max_chars)
    good = bad = 0
    table = Table("line", "code", "field", "value", "why", title=f"rejected lines of {file}")
    for number, line in enumerate(stream, start=1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            decode_utterance(line, limits)
            good += 1
        except ContractError as exc:
            bad += 1
            for r in exc.rejections:
                if as_json:
                    click.echo(json.dumps({"line": number, **r.model_dump(mode="json")}))
                else:
                    table.add_row(str(number), r.code, r.field or "", r.value or "", r.message)
    if not as_json:
        if bad:
            console.print(table)
        console.print(f"{good} valid, {bad} rejected")
    if bad:
        sys.exit(1)


def _open(path: Path) -> Any:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise click.BadParameter(f"{path} does not exist", param_hint="FILE") from None


@group.group()
def topics() -> None:
    """Create and inspect parley's topics."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create the utterances, utterance-labels, utterances-dlq and model-events topics if missing.

    Names and partition counts come from PARLEY_TOPIC_*. Running it again changes nothing.
    """
    from stream.topics import ensure_topics, parley_topics

    settings = _settings(ctx)
    statuses = run(ensure_topics(settings.kafka, parley_topics(settings.topics)))
    table = Table("topic", "partitions", "state")
    for s in statuses:
        table.add_row(s.name, str(s.partitions), "created" if s.created else "exists")
    console.print(table)


def _sample_default() -> Path:
    from parley.samples import conversations_path

    return conversations_path()


@group.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--rate", type=float, default=None, help="Utterances per second; as fast as possible when left out."
)
@click.option(
    "--raw",
    is_flag=True,
    help="Send lines byte for byte, without validating (to feed malformed input to a worker).",
)
@click.option("--topic", default=None, help="Topic to send to; PARLEY_TOPIC_UTTERANCES by default.")
@click.pass_context
def send(ctx: click.Context, file: Path | None, rate: float | None, raw: bool, topic: str | None) -> None:
    """Send conversations from a JSONL FILE to Kafka, keyed by conversation_id.

    Lines follow the utterances contract (see `parley stream schema --topic utterances`) or the
    benchmark layout of ../shared/data (id, dialogue_id, turn, speaker, text). Without FILE, the
    sample conversations that ship with parley are sent. Every line is validated first, so nothing
    is sent from a file with a bad line (unless --raw).
    """
    from stream.send import messages_for, raw_messages, read_utterances, send_messages

    settings = _settings(ctx)
    path = file or _sample_default()
    messages = raw_messages(path) if raw else messages_for(read_utterances(path, settings.text_limits))
    target = topic or settings.topics.utterances
    with Progress(
        TextColumn("sending to {task.fields[topic]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task("send", total=len(messages), topic=target)
        report = run(
            send_messages(
                settings.kafka, target, messages, rate=rate, on_sent=lambda n: progress.advance(task, n)
            )
        )
    console.print(f"sent {report.sent} messages to {target} in {report.seconds:.2f}s ({report.rate:.0f}/s)")


@group.command()
@click.option("--topic", default=None, help="Topic to read; PARLEY_TOPIC_UTTERANCE_LABELS by default.")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offsets, not at the end.")
@click.option("--max", "max_messages", type=int, default=None, help="Stop after this many messages.")
@click.option(
    "--idle-timeout",
    type=float,
    default=None,
    help="Stop when nothing arrived for this many seconds; follow forever when left out.",
)
@click.option("--raw", is_flag=True, help="Print each message's JSON as it is, one per line.")
@click.option(
    "--conversations",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The JSONL file the utterances were sent from: each labelled utterance is shown with its "
    "speaker and text, two lines per utterance fitted to the terminal, and a summary at the end.",
)
@click.option(
    "--gold",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gold labels (JSONL of {id, task, label}): each label is marked right or wrong and the "
    "summary gives per-task accuracy. Implies the view of --conversations.",
)
@click.pass_context
def tail(
    ctx: click.Context,
    topic: str | None,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout: float | None,
    raw: bool,
    conversations: Path | None,
    gold: Path | None,
) -> None:
    """Print the messages of a topic as they arrive (labelled utterances by default).

    Reads every partition without joining a consumer group: it commits nothing and moves no one's
    offsets. Stop with Ctrl-C (the summary of --conversations/--gold is printed all the same).
    """
    from stream.tail import read

    settings = _settings(ctx)
    target = topic or settings.topics.utterance_labels
    if raw and (conversations is not None or gold is not None):
        raise click.UsageError(
            "--raw prints the messages as they are; it does not go with --conversations or --gold"
        )
    if conversations is not None or gold is not None:
        _tail_view(settings, target, conversations, gold, from_beginning, max_messages, idle_timeout)
        return

    async def follow() -> int:
        count = 0
        async with aclosing(
            read(
                settings.kafka,
                target,
                start="beginning" if from_beginning else "end",
                max_messages=max_messages,
                idle_timeout_s=idle_timeout,
            )
        ) as records:
            async for record in records:
                count += 1
                if raw:
                    click.echo(record.value.decode("utf-8", errors="replace"))
                else:
                    console.print(_pretty(record.partition, record.offset, record.value))
        return count

    count = run(follow())
    console.print(f"[dim]{count} messages from {target}[/dim]")


def _tail_view(
    settings: WorkerSettings,
    topic: str,
    conversations: Path | None,
    gold: Path | None,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout: float | None,
) -> None:
    """``tail`` with --conversations/--gold: blocks that fit the terminal, then the summary."""
    import shutil

    from parley.samples import read_labels
    from stream.contracts import UtteranceLabels
    from stream.labelview import LabelView
    from stream.send import read_utterances
    from stream.tail import read

    width = shutil.get_terminal_size((80, 24)).columns
    said = {u.utterance_id: u for u in read_utterances(conversations)} if conversations else {}
    view = LabelView(width, said, read_labels(gold) if gold else {})
    out = Console(width=width, highlight=False)

    async def follow() -> None:
        async with aclosing(
            read(
                settings.kafka,
                topic,
                start="beginning" if from_beginning else "end",
                max_messages=max_messages,
                idle_timeout_s=idle_timeout,
            )
        ) as records:
            async for record in records:
                try:
                    labels = UtteranceLabels.model_validate_json(record.value)
                except ValueError:
                    out.print(_pretty(record.partition, record.offset, record.value), no_wrap=True, crop=True)
                    continue
                for line in view.block(labels):
                    out.print(line, no_wrap=True, crop=True)

    for line in view.header():
        out.print(line, no_wrap=True, crop=True)
    with suppress(KeyboardInterrupt):  # Ctrl-C ends the reading, not the summary
        run(follow())
    for line in view.summary(topic, settings.topics.utterance_labels):
        out.print(line, no_wrap=True, crop=True)


def _pretty(partition: int, offset: int, value: bytes) -> str:
    where = f"[dim]{partition}:{offset}[/dim]"
    try:
        obj = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{where} [red]not JSON[/red] {value[:120]!r}"
    if not isinstance(obj, dict):
        return f"{where} {obj!r}"
    conv, turn = obj.get("conversation_id", "?"), obj.get("turn", "")
    if "predictions" in obj:
        labels = ", ".join(
            f"{task}={p.get('label')} ({p.get('score', 0):.2f})" for task, p in obj["predictions"].items()
        )
        state = obj.get("state") or {}
        mood = (
            ""
            if not state.get("available")
            else (f" [dim]turns={state.get('turn_count')} mood={state.get('rolling_sentiment')}[/dim]")
        )
        return f"{where} [cyan]{conv}[/cyan] #{turn} {labels}{mood}"
    if "reason" in obj:
        return f"{where} [red]{obj['reason']}[/red] {obj.get('errors', [{}])[0].get('message', '')}"
    return f"{where} [cyan]{conv}[/cyan] #{turn} [bold]{obj.get('speaker', '')}[/bold] {obj.get('text', '')}"


@group.command("replay-dlq")
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    type=click.Choice([c.value for c in RejectCode]),
    help="Replay only records filed under this reason (repeatable), e.g. inference_failed.",
)
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z"]),
    default=None,
    help="Failed at or after (ISO, with offset).",
)
@click.option(
    "--until",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z"]),
    default=None,
    help="Failed at or before (ISO, with offset).",
)
@click.option("--partition", type=int, default=None, help="Only this partition of the DLQ topic.")
@click.option("--from-offset", type=int, default=None, help="Only DLQ offsets at or after this one.")
@click.option("--to-offset", type=int, default=None, help="Only DLQ offsets at or before this one.")
@click.option("--to", "to_topic", default=None, help="Topic to send to; PARLEY_TOPIC_UTTERANCES by default.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send nothing.")
@click.pass_context
def replay_dlq(
    ctx: click.Context,
    reasons: tuple[str, ...],
    since: Any,
    until: Any,
    partition: int | None,
    from_offset: int | None,
    to_offset: int | None,
    to_topic: str | None,
    dry_run: bool,
) -> None:
    """Send chosen DLQ records' original inputs back to the input topic, byte for byte with their
    keys, once the cause is fixed (an engine rolled back after inference_failed, say).

    The DLQ is read without a consumer group, from its first record to its end as it is now; every
    criterion given must hold. Records whose original was cut to fit the DLQ are listed, not sent.
    Try --dry-run first.
    """
    from stream.replay import Selection, parse_reasons
    from stream.replay import replay_dlq as do_replay

    settings = _settings(ctx)
    selection = Selection(
        reasons=parse_reasons(reasons),
        since=since,
        until=until,
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
    )
    target = to_topic or settings.topics.utterances
    report = run(
        do_replay(settings.kafka, settings.topics.utterances_dlq, target, selection, dry_run=dry_run)
    )
    table = Table("reason", "matched", title=f"DLQ records of {settings.topics.utterances_dlq}")
    for reason, n in sorted(report.matched.items()):
        table.add_row(reason, str(n))
    console.print(table)
    if report.cut:
        shown = ", ".join(report.cut[:10]) + (" ..." if len(report.cut) > 10 else "")
        console.print(
            f"[yellow]{len(report.cut)} matched records hold a cut original, not sent: {shown}[/yellow]"
        )
    if report.unreadable:
        console.print(
            f"[yellow]{len(report.unreadable)} records are not DLQ records and were skipped[/yellow]"
        )
    verb = "would send" if dry_run else "sent"
    count = len(report.messages) if dry_run else report.sent
    console.print(f"read {report.read} DLQ records; {verb} {count} to {target}")


@group.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--timeout", type=float, default=60.0, help="Seconds to wait for the messages to come back.")
@click.pass_context
def roundtrip(ctx: click.Context, file: Path | None, timeout: float) -> None:
    """Send conversations through Kafka and Redis and check they all come back, whole and in order.

    Without FILE, the sample conversations are used. Exits 1 if anything was lost, duplicated,
    reordered or split across partitions.
    """
    from stream.roundtrip import roundtrip as do_roundtrip
    from stream.send import read_utterances

    settings = _settings(ctx)
    utterances = read_utterances(file or _sample_default(), settings.text_limits)
    report = run(do_roundtrip(settings, utterances, timeout_s=timeout))
    table = Table(
        "conversation",
        "partition",
        "sent",
        "back",
        "in order",
        "Redis turns",
        title=f"round trip through {report.topic} and Redis",
    )
    for trip in report.conversations:
        table.add_row(
            trip.conversation_id,
            ",".join(map(str, sorted(trip.partitions))),
            str(trip.sent),
            str(trip.received),
            "yes" if trip.in_order else "NO",
            str(trip.redis_turns),
        )
    console.print(table)
    console.print(
        f"{report.received}/{report.sent} utterances back, {len(report.conversations)} conversations; "
        f"sent in {report.send_seconds:.2f}s, whole trip {report.total_seconds:.2f}s"
    )
