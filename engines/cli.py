"""``parley engine``: bundles, engines, the registry and its pointer, and the rebuild watcher."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import click
from pydantic import Field, TypeAdapter
from rich.console import Console
from rich.table import Column, Table

from engines.errors import EngineError
from engines.events import ModelEvent
from engines.manifest import BundleManifest, read_manifest
from engines.settings import EngineBuilderSettings
from parley.cli import CONTEXT_SETTINGS, emit_schemas, load_settings, print_settings, run

console = Console()


def schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the contracts engines/ owns: the bundle manifest and model-events messages."""
    events = TypeAdapter(Annotated[ModelEvent, Field(discriminator="event")])
    return {
        "bundle-manifest": BundleManifest.model_json_schema(mode="validation"),
        "model-events": events.json_schema(mode="validation"),
    }


def _settings(ctx: click.Context) -> EngineBuilderSettings:
    if "settings" not in ctx.meta:
        ctx.meta["settings"] = load_settings(EngineBuilderSettings)
    settings: EngineBuilderSettings = ctx.meta["settings"]
    return settings


@click.group(context_settings=CONTEXT_SETTINGS)
def group() -> None:
    """Engine bundles: the contract between training and serving (manifest.json, tokenizer, ONNX
    model, torch weights, compiled engines), the registry that keeps them, the per-node "current"
    pointer in Redis, and the model-events topic that announces them.

    Settings come from PARLEY_ENGINE_* and the shared PARLEY_KAFKA_*, PARLEY_REDIS_*, PARLEY_TOPIC_*
    (see `parley engine settings`).
    """


@group.command("settings")
@click.pass_context
def settings_cmd(ctx: click.Context) -> None:
    """Print the engine builder's settings in force, as JSON, with secrets masked."""
    print_settings(_settings(ctx))


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
    chosen = schemas() if what == "all" else {what: schemas()[what]}
    emit_schemas(chosen, out)


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


@group.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--version", default=None, help="Register under this version instead of the checkpoint's.")
@click.option(
    "--sample",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSONL of {'text', 'gold'?} to verify engines on; the sample conversations by default.",
)
@click.option("--publish", is_flag=True, help="Announce the bundle with model_trained on model-events.")
@click.pass_context
def export(
    ctx: click.Context, checkpoint: Path, version: str | None, sample: Path | None, publish: bool
) -> None:
    """Turn a training CHECKPOINT into a registered bundle: ONNX (opset 20, dynamic batch and sequence),
    tokenizer, torch weights, verification sample and manifest, checked against torch, moved into the
    registry in one step."""
    from engines.export import read_sample_rows
    from engines.publish import register_checkpoint

    settings = _settings(ctx)
    bundle, event = register_checkpoint(checkpoint, settings.registry_uri, read_sample_rows(sample), version)
    console.print(f"registered {bundle.label} at {settings.registry_uri}")
    if publish:
        from engines.publish import publish as publish_events

        run(publish_events(settings.kafka, settings.topics.model_events, event))
        console.print(f"published model_trained for {bundle.label}")


def _open(ctx: click.Context, model: str, version: str) -> Any:
    from engines.registry import Registry

    return Registry(_settings(ctx).registry_uri).open(model, version)


@group.command()
@click.argument("model")
@click.argument("version")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default=None,
    help="Default per backend: int8 for onnxruntime, fp16 for tensorrt (which cannot build int8).",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", help="onnxruntime only.")
@click.pass_context
def build(
    ctx: click.Context, model: str, version: str, backend: str, precision: str | None, device: str
) -> None:
    """Build one engine for MODEL VERSION on this node, verify it against torch, and record it."""
    from engines.build import build_onnxruntime, check_precision, default_precision
    from engines.registry import Registry

    try:
        chosen = check_precision(backend, precision or default_precision(backend))
    except EngineError as exc:
        raise click.BadParameter(str(exc), param_hint="--precision") from None
    registry = Registry(_settings(ctx).registry_uri)
    bundle = registry.open(model, version)
    if backend == "tensorrt":
        from engines.tensorrt.build import build_tensorrt

        result = build_tensorrt(bundle, registry, chosen)
    else:
        result = build_onnxruntime(bundle, registry, chosen, device=device)  # type: ignore[arg-type]
    _print_comparisons([result.comparison])
    console.print(f"recorded {result.record.engine_id}")


def _print_comparisons(comparisons: list[Any]) -> None:
    table = Table(
        Column("engine", overflow="fold"),
        Column("reference", overflow="fold"),
        "samples",
        "label agreement",
        "max |Δp|",
        "accuracy Δ",
    )
    for c in comparisons:
        delta = ", ".join(f"{k} {v:+.3f}" for k, v in c.accuracy_delta.items()) or "-"
        table.add_row(
            c.engine, c.reference, str(c.samples), f"{c.label_agreement:.4f}", f"{c.max_abs_diff:.2e}", delta
        )
    console.print(table)


@group.command()
@click.argument("model")
@click.argument("version")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(["onnxruntime", "tensorrt"]),
    help="Backends to check (repeatable); every available one by default.",
)
@click.option("--min-agreement", type=float, default=None, help="Fail below this label agreement.")
@click.option("--max-diff", type=float, default=None, help="Fail above this largest probability difference.")
@click.pass_context
def verify(
    ctx: click.Context,
    model: str,
    version: str,
    backends: tuple[str, ...],
    min_agreement: float | None,
    max_diff: float | None,
) -> None:
    """Run the bundle's engines against the torch reference on its sample; exit 1 if any fails."""
    from engines.base import EngineOptions
    from engines.node import CPU_NODE, detect_node
    from engines.verify import Thresholds, compare, thresholds_for

    bundle = _open(ctx, model, version)
    texts, gold = bundle.sample()
    node = detect_node(_settings(ctx).device) if not backends or "tensorrt" in backends else CPU_NODE
    chosen = list(backends) or (["onnxruntime", "tensorrt"] if node.is_gpu else ["onnxruntime"])
    runs: list[tuple[str, EngineOptions]] = []
    for backend in chosen:
        records = [r for r in bundle.engine_records() if r.backend == backend]
        if backend == "tensorrt":
            # Only plans this GPU and TensorRT version can load; others are not errors of the bundle.
            records = [
                r
                for r in records
                if r.gpu_arch == node.compute_capability and r.runtime_version == node.tensorrt_version
            ]
            if not records:
                console.print(
                    f"[yellow]no TensorRT plan of {model}/{version} for this node ({node.target}, "
                    f"TensorRT {node.tensorrt_version or 'not installed'}): build one with "
                    f"'parley engine build {model} {version} --backend tensorrt'[/yellow]"
                )
                continue
        precisions = {r.precision for r in records} or {"fp32"}
        device = "cuda" if backend == "tensorrt" else "cpu"
        runs += [(backend, EngineOptions(device=device, precision=p)) for p in sorted(precisions)]  # type: ignore[arg-type]
    if not runs:
        console.print("[red]nothing to verify on this node[/red]")
        sys.exit(1)
    failed, comparisons = [], []
    for backend, options in runs:
        comparison = compare(bundle, backend, texts, options=options, gold=gold)
        comparisons.append(comparison)
        defaults = thresholds_for(options.precision)
        limits = Thresholds(
            min_agreement if min_agreement is not None else defaults.min_agreement,
            max_diff if max_diff is not None else defaults.max_abs_diff,
        )
        if not comparison.passes(limits):
            failed.append(comparison.engine)
    _print_comparisons(comparisons)
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/red]")
        sys.exit(1)


@group.command()
@click.argument("model")
@click.argument("version")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt", "torch"]), default="onnxruntime")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")
@click.option("--threads", type=int, default=None, help="Intra-op threads; the runtime decides by default.")
@click.option(
    "--lanes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Engine calls run side by side, one thread each unless --threads (ONNX Runtime).",
)
@click.option(
    "--batch", "batches", multiple=True, type=int, help="Batch sizes (repeatable); 1 8 32 128 by default."
)
@click.option(
    "--texts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSONL with a 'text' field per line (e.g. ../shared/data/dailydialog/utterances.jsonl).",
)
@click.option("--limit", type=int, default=2000, help="Use at most this many texts.")
@click.option("--seconds", type=float, default=3.0, help="Minimum seconds per configuration.")
@click.pass_context
def bench(
    ctx: click.Context,
    model: str,
    version: str,
    backend: str,
    precision: str,
    device: str,
    threads: int | None,
    lanes: int,
    batches: tuple[int, ...],
    texts: Path | None,
    limit: int,
    seconds: float,
) -> None:
    """Throughput and latency (p50, p99) over batch sizes, with and without length bucketing.

    Prints a table, then one JSON line with every row (for benchmarks/ to collect)."""
    from engines.base import EngineOptions
    from engines.bench import bench as run_bench
    from engines.export import read_sample_rows

    bundle = _open(ctx, model, version)
    sample = [r["text"] for r in read_sample_rows(texts)][:limit]
    options = EngineOptions(device=device, precision=precision, threads=threads, lanes=lanes)  # type: ignore[arg-type]
    rows = run_bench(bundle, backend, options, sample, batches or (1, 8, 32, 128), min_seconds=seconds)
    table = Table("backend", "batch", "bucketed", "utt/s", "p50 ms", "p99 ms", "peak RSS MB")
    for r in rows:
        table.add_row(
            r.backend,
            str(r.batch),
            "yes" if r.bucketed else "no",
            f"{r.utterances_per_s:.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.peak_rss_mb:.0f}",
        )
    console.print(table)
    click.echo(
        json.dumps({"bundle": bundle.label, "texts": len(sample), "rows": [r.as_dict() for r in rows]})
    )


@group.command("list")
@click.argument("model", required=False)
@click.pass_context
def list_cmd(ctx: click.Context, model: str | None) -> None:
    """List the registry's models, or MODEL's versions with their engines."""
    from engines.registry import Registry

    registry = Registry(_settings(ctx).registry_uri)
    if model is None:
        for name in registry.models():
            click.echo(f"{name}\t{len(registry.versions(name))} versions")
        return
    table = Table("version", "created", "tasks", "engines")
    for version in registry.versions(model):
        manifest = registry.manifest(model, version)
        engines = ", ".join(r.engine_id for r in registry.open(model, version, verify=False).engine_records())
        table.add_row(
            version,
            manifest.created_at.isoformat(timespec="seconds"),
            ",".join(manifest.task_names),
            engines or "-",
        )
    console.print(table)


@group.command()
@click.argument("model")
@click.argument("version", required=False)
@click.option("--target", default="cpu", help="Node kind of the pointer: cpu, gpu-sm90, ...")
@click.pass_context
def show(ctx: click.Context, model: str, version: str | None, target: str) -> None:
    """Show a version's manifest and engines; without VERSION, the current pointer and its history."""
    settings = _settings(ctx)
    if version is None:
        current, history = run(_pointer_call(settings, "show", model, target))
        click.echo(json.dumps({"current": current, "history": history}, indent=2))
        return
    bundle = _open(ctx, model, version)
    click.echo(bundle.manifest.model_dump_json(indent=2))
    for record in bundle.engine_records():
        click.echo(record.model_dump_json(indent=2))


async def _pointer_call(
    settings: EngineBuilderSettings, action: str, model: str, target: str, **kw: Any
) -> Any:
    from dataclasses import asdict

    from engines.pointer import PointerStore
    from parley.clients import redis_client

    client = redis_client(settings.redis)
    try:
        store = PointerStore(client, settings.redis.key_prefix)
        if action == "show":
            current = await store.get(model, target)
            return (asdict(current) if current else None), [
                asdict(h) for h in await store.history(model, target)
            ]
        if action == "promote":
            return await store.promote(model, kw["version"], kw["engine_id"], kw["backend"], target)
        return await store.rollback(model, target)
    finally:
        await client.aclose()


@group.command()
@click.argument("model")
@click.argument("version")
@click.option(
    "--engine",
    "engine_id",
    default=None,
    help="Engine id to serve; the verified one of --backend by default.",
)
@click.option(
    "--backend",
    type=click.Choice(["onnxruntime", "tensorrt"]),
    default=None,
    help="Backend whose engine to serve; the target's by default (tensorrt on gpu-*, else onnxruntime).",
)
@click.option("--target", default="cpu", help="Node kind whose pointer moves: cpu, gpu-sm90, ...")
@click.pass_context
def promote(
    ctx: click.Context, model: str, version: str, engine_id: str | None, backend: str | None, target: str
) -> None:
    """Make MODEL VERSION current on TARGET nodes, by the promotion rule (engines/promotion.py): only
    an engine whose record carries a passing parity check and that runs on TARGET; the fastest such
    engine of the backend (int8, then fp16, then fp32) unless --engine names one."""
    from engines.promotion import choose_engine

    bundle = _open(ctx, model, version)
    chosen = choose_engine(
        bundle.engine_records(), target, model=model, version=version, backend=backend, engine_id=engine_id
    )
    current = run(
        _pointer_call(
            _settings(ctx),
            "promote",
            model,
            target,
            version=version,
            engine_id=chosen.engine_id,
            backend=chosen.backend,
        )
    )
    console.print(f"{model} on {target} now serves {current.version} ({current.engine_id})")


@group.command()
@click.argument("model")
@click.option("--target", default="cpu", help="Node kind whose pointer moves back.")
@click.pass_context
def rollback(ctx: click.Context, model: str, target: str) -> None:
    """Point MODEL on TARGET back at the version it served before the last promotion."""
    previous = run(_pointer_call(_settings(ctx), "rollback", model, target))
    console.print(f"{model} on {target} rolled back to {previous.version} ({previous.engine_id})")


@group.command()
@click.option(
    "--idle-timeout", type=float, default=None, help="Stop after this many idle seconds (for jobs)."
)
@click.pass_context
def watch(ctx: click.Context, idle_timeout: float | None) -> None:
    """Consume model_trained events, build and verify this node's engines, promote them and publish
    engine_ready (or engine_failed, leaving the current engine in place). Replays change nothing."""
    from engines.watch import Watcher

    outcomes = run(Watcher(_settings(ctx)).run(idle_timeout_s=idle_timeout))
    for o in outcomes:
        console.print(f"{o.model}/{o.version}: {o.status}")
