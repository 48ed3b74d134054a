"""CPU engine benchmark: the MiniLM-L6 student through torch, ONNX Runtime fp32 and ONNX Runtime INT8.

    python benchmarks/engines_cpu.py --data ../shared/data/dailydialog

1. Trains a student (all-MiniLM-L6-v2, heads for dialogue_act and sentiment) on the dataset's
   ``train`` split gold labels, one epoch, and caches the checkpoint under --work.
2. Exports it as a bundle and builds the INT8 engine (verified against torch on 300 test utterances).
3. Scores fp32 and INT8 on the whole ``test`` split: accuracy and macro-F1 per task.
4. Measures utterances/s and per-batch p50/p99 latency at batch 1, 8, 32, 128, with and without
   length bucketing, per backend, on the test utterances.
Writes docs/benchmarks/engines-cpu.{json,md}. Every step is cached: a rerun redoes only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = ("dialogue_act", "sentiment")


def load(data: Path) -> tuple[dict[str, dict], dict[str, dict[str, str]], dict[str, list[str]]]:
    utterances = {}
    for line in (data / "utterances.jsonl").read_text().splitlines():
        row = json.loads(line)
        utterances[row["id"]] = row
    gold: dict[str, dict[str, str]] = {}
    for line in (data / "gold.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["task"] in TASKS:
            gold.setdefault(row["id"], {})[row["task"]] = row["label"]
    labels = json.loads((data / "labels.json").read_text())
    return utterances, gold, {t: labels[t] for t in TASKS}


def train_student(
    utterances, gold, labels, out: Path, epochs: int = 1, seed: int = 0, device: str = "cpu"
) -> float:
    import torch
    from transformers import AutoTokenizer

    from engines.checkpoint import write_checkpoint
    from engines.manifest import BundleManifest, TaskSpec
    from engines.torch.model import StudentModel, default_encoder, output_name

    torch.manual_seed(seed)
    encoder = default_encoder()
    tok = AutoTokenizer.from_pretrained(encoder)
    rows = [(u["text"], gold[i]) for i, u in utterances.items() if u["split"] == "train" and i in gold]
    model = StudentModel.from_encoder(encoder, [(t, len(labels[t])) for t in TASKS]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(rows))
        for start in range(0, len(order), 32):
            chunk = [rows[i] for i in order[start : start + 32]]
            enc = tok(
                [t for t, _ in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt"
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            logits = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
            loss = sum(
                torch.nn.functional.cross_entropy(
                    logits[t], torch.tensor([labels[t].index(g[t]) for _, g in chunk], device=device)
                )
                for t in TASKS
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - started
    manifest = BundleManifest(
        model="bench-student",
        version="dailydialog-e1",
        created_at=datetime.now(UTC),
        base_model="all-MiniLM-L6-v2",
        tasks=[TaskSpec(name=t, labels=labels[t], output=output_name(t)) for t in TASKS],
        max_length=64,
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        code_revision=_revision(),
        training={
            "config": {"epochs": epochs, "lr": 5e-5, "batch": 32, "loss": "cross-entropy on gold"},
            "metrics": {"train_seconds": seconds},
        },
    )
    write_checkpoint(model.cpu().eval(), encoder, manifest, out)
    return seconds


def _revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def macro_f1(pred: np.ndarray, truth: np.ndarray, n: int) -> float:
    f1s = []
    for c in range(n):
        tp = int(((pred == c) & (truth == c)).sum())
        fp = int(((pred == c) & (truth != c)).sum())
        fn = int(((pred != c) & (truth == c)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def score(bundle, precision: str, texts, truths, labels) -> dict[str, dict[str, float]]:
    from engines.base import EngineOptions, load_engine

    with load_engine(bundle, "onnxruntime", EngineOptions(precision=precision, max_batch=64)) as engine:
        probs = engine.infer(texts)
    out = {}
    for t in TASKS:
        truth = np.array([labels[t].index(g[t]) for g in truths])
        pred = probs[t].argmax(1)
        out[t] = {
            "accuracy": float((pred == truth).mean()),
            "macro_f1": macro_f1(pred, truth, len(labels[t])),
        }
    return out


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, Python {platform.python_version()}"


MODEL, VERSION = "bench-student", "dailydialog-e1"
"""The benchmark student this script trains and registers; the other engine and worker benchmarks use it."""


def bench_arguments(doc: str | None) -> argparse.ArgumentParser:
    """The arguments every benchmark on the bench student shares: --data, --work, --out."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dailydialog")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-engines")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    return parser


def open_bench_student(work: Path):  # type: ignore[no-untyped-def]
    """The registered bench student, or exit with how to make it."""
    from engines.registry import Registry

    registry = Registry(str(work / "registry"))
    if not registry.has(MODEL, VERSION):
        sys.exit("run benchmarks/engines_cpu.py first: it trains and registers the benchmark student")
    return registry.open(MODEL, VERSION)


def interleaved_setup(doc: str | None):  # type: ignore[no-untyped-def]
    """What the interleaved engine benchmarks start from: their arguments (the shared ones, --rounds
    and --n), the bench student and the first ``--n`` DailyDialog test texts."""
    parser = bench_arguments(doc)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=2048)
    args = parser.parse_args()
    bundle = open_bench_student(args.work)
    utterances, _, _ = load(args.data)
    texts = [u["text"] for u in utterances.values() if u["split"] == "test"][: args.n]
    return args, bundle, texts


def interleaved_rates(engines: dict, texts: list[str], windows: tuple[int, ...], rounds: int) -> dict:
    """Each engine labels ``texts`` arriving ``window`` at a time, for every window, ``rounds`` times,
    interleaved with the others so that a noisy neighbour hits all alike. Per (window, *key):
    {"utterances_per_s": the median round, "spread": [slowest, fastest]}."""
    for engine in engines.values():
        engine.activate()
        engine.infer(texts[:256])
    times: dict[tuple, list[float]] = {}
    for round_ in range(rounds):
        for window in windows:
            for key, engine in engines.items():
                t0 = time.perf_counter()
                for start in range(0, len(texts), window):
                    engine.infer(texts[start : start + window])
                times.setdefault((window, *key), []).append(time.perf_counter() - t0)
        print(f"round {round_ + 1}/{rounds} done", flush=True)
    for engine in engines.values():
        engine.deactivate()
    n = len(texts)
    return {
        k: {
            "utterances_per_s": round(n / float(np.median(ts)), 1),
            "spread": [round(n / max(ts), 1), round(n / min(ts), 1)],
        }
        for k, ts in times.items()
    }


def write_report(out: Path, name: str, report: dict, text: str) -> None:
    """docs/benchmarks/<name>.json and .md, and the markdown on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(text)
    print(text)


def main() -> None:
    parser = bench_arguments(__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import onnxruntime
    import torch

    from engines.base import EngineOptions
    from engines.bench import bench
    from engines.build import build_onnxruntime
    from engines.export import build_bundle
    from engines.manifest import read_manifest
    from engines.registry import Registry

    utterances, gold, labels = load(args.data)
    ckpt = args.work / "checkpoint"
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if not (ckpt / "manifest.json").exists():
        print("training the student (one epoch on the train split)...", flush=True)
        results["train_seconds"] = train_student(utterances, gold, labels, ckpt)
    results.setdefault("train_seconds", read_manifest(ckpt).training.metrics.get("train_seconds"))
    registry = Registry(str(args.work / "registry"))
    test = [(u["text"], gold[i]) for i, u in utterances.items() if u["split"] == "test" and i in gold]
    if not registry.has(MODEL, VERSION):
        sample = [{"text": t, "gold": g} for t, g in test[:300]]
        registry.put(build_bundle(ckpt, registry.staging_dir(), sample))
    bundle = registry.open(MODEL, VERSION)
    if not any(r.precision == "int8" for r in bundle.engine_records()):
        build_onnxruntime(bundle, registry, "fp32")
        build_onnxruntime(bundle, registry, "int8")
        bundle = registry.open(MODEL, VERSION)
    texts, truths = [t for t, _ in test], [g for _, g in test]
    if "accuracy" not in results:
        results["accuracy"] = {p: score(bundle, p, texts, truths, labels) for p in ("fp32", "int8")}
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
    rows = []
    for backend, precision in (("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("torch", "fp32")):
        print(f"benchmarking {backend} {precision}...", flush=True)
        options = EngineOptions(precision=precision, threads=args.threads)  # type: ignore[arg-type]
        rows += [r.as_dict() for r in bench(bundle, backend, options, texts, min_seconds=args.seconds)]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python benchmarks/engines_cpu.py --data ../shared/data/dailydialog",
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "bundle": bundle.label,
        "test_utterances": len(texts),
        "train_seconds": results.get("train_seconds"),
        "int8_parity": next(r.parity.model_dump() for r in bundle.engine_records() if r.precision == "int8"),
        "accuracy": results["accuracy"],
        "rows": rows,
    }
    write_report(args.out, "engines-cpu", report, render(report))


def render(report: dict) -> str:
    lines = [
        "# CPU engines: MiniLM-L6 student",
        "",
        f"- date: {report['date']}",
        f"- machine: {report['machine']}",
        f"- command: `{report['command']}`",
        f"- versions: onnxruntime {report['versions']['onnxruntime']}, torch {report['versions']['torch']}",
        f"- bundle: {report['bundle']} (one epoch of cross-entropy on DailyDialog's train split, "
        f"{report['train_seconds'] or 0:.0f} s to train); texts: the {report['test_utterances']} test utterances",
        "",
        "## Accuracy cost of INT8 (whole test split)",
        "",
        "| task | fp32 accuracy | int8 accuracy | fp32 macro-F1 | int8 macro-F1 |",
        "|---|---|---|---|---|",
    ]
    acc = report["accuracy"]
    for t in TASKS:
        lines.append(
            f"| {t} | {acc['fp32'][t]['accuracy']:.4f} | {acc['int8'][t]['accuracy']:.4f} | "
            f"{acc['fp32'][t]['macro_f1']:.4f} | {acc['int8'][t]['macro_f1']:.4f} |"
        )
    parity = report["int8_parity"]
    lines += [
        "",
        f"INT8 against torch on the bundle's {parity['samples']}-utterance verification sample: label agreement "
        f"{parity['label_agreement']:.4f}, largest probability difference {parity['max_abs_diff']:.4f}.",
        "",
        "## Throughput and latency",
        "",
        "Latency is per batch (one `infer` call). Bucketed: each window of 256 texts is sorted by token "
        "length before it is cut into batches, as the worker does.",
        "",
        "| backend | batch | bucketed | utterances/s | p50 ms | p99 ms | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['backend']} | {r['batch']} | {'yes' if r['bucketed'] else 'no'} | "
            f"{r['utterances_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "Peak RSS is the process's high-water mark so far (it only grows across rows).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
