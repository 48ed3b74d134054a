"""GPU engine benchmark: the MiniLM-L6 student on CUDA (torch fp32 and fp16, ONNX Runtime's CUDA
provider and TensorRT where installed), with ONNX Runtime on the same machine's CPU for reference.

    python benchmarks/engines_gpu.py --data ../shared/data/dailydialog

1. Trains the same student as benchmarks/engines_cpu.py (one epoch of cross-entropy on DailyDialog's
   train split, here on the GPU) and exports it as a bundle; cached under --work.
2. Parity and accuracy of each GPU engine against torch fp32 on the CPU, over the whole test split.
3. Utterances/s and per-batch p50/p99 latency at batch 1 to 512, with and without length bucketing.
   Backends that cannot run on this machine are listed with the reason, not measured.
Writes docs/benchmarks/engines-gpu.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engines_cpu import TASKS, load, machine, macro_f1, train_student  # noqa: E402

VERSION = "dailydialog-e1"  # the version train_student writes into the checkpoint


def _gpu() -> str:
    import torch

    name = torch.cuda.get_device_name(0)
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        driver = "unknown"
    return f"{name} (driver {driver}, CUDA {torch.version.cuda})"


def _engines(bundle, registry) -> tuple[list[tuple[str, dict]], list[str]]:
    """(label, EngineOptions kwargs + backend) for each engine this machine can run; reasons for the rest."""
    import onnxruntime

    runnable = [
        ("torch cuda fp32", {"backend": "torch", "device": "cuda", "precision": "fp32"}),
        ("torch cuda fp16", {"backend": "torch", "device": "cuda", "precision": "fp16"}),
    ]
    missing = []
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        runnable.append(
            ("onnxruntime cuda fp32", {"backend": "onnxruntime", "device": "cuda", "precision": "fp32"})
        )
    else:
        missing.append("onnxruntime cuda: this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu)")
    if importlib.util.find_spec("tensorrt") is not None:
        from engines.tensorrt.build import build_tensorrt

        if not any(r.backend == "tensorrt" for r in bundle.engine_records()):
            build_tensorrt(bundle, registry, "fp16", max_batch=512)
        runnable.append(("tensorrt fp16", {"backend": "tensorrt", "device": "cuda", "precision": "fp16"}))
    else:
        missing.append("tensorrt: not installed in this image (pip install 'parley[gpu]')")
    return runnable, missing


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dailydialog")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-engines-gpu")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--seconds", type=float, default=1.5, help="measuring time per row, at least")
    parser.add_argument("--batches", default="1,8,32,128,512")
    args = parser.parse_args()

    import onnxruntime
    import torch

    from engines.base import EngineOptions, load_engine
    from engines.bench import bench
    from engines.export import build_bundle
    from engines.registry import Registry

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible to torch: run this on a GPU machine")
    utterances, gold, labels = load(args.data)
    ckpt = args.work / "checkpoint"
    train_seconds = None
    if not (ckpt / "manifest.json").exists():
        print("training the student on the GPU (one epoch on the train split)...", flush=True)
        train_seconds = train_student(utterances, gold, labels, ckpt, device="cuda")
    registry = Registry(str(args.work / "registry"))
    test = [(u["text"], gold[i]) for i, u in utterances.items() if u["split"] == "test" and i in gold]
    texts, truths = [t for t, _ in test], [g for _, g in test]
    if not registry.has("bench-student", VERSION):
        sample = [{"text": t, "gold": g} for t, g in test[:300]]
        registry.put(build_bundle(ckpt, registry.staging_dir(), sample))
    bundle = registry.open("bench-student", VERSION)
    runnable, missing = _engines(bundle, registry)
    bundle = registry.open("bench-student", VERSION)

    print("scoring torch fp32 on the CPU (the reference)...", flush=True)
    with load_engine(bundle, "torch", EngineOptions(max_batch=128)) as ref:
        expected = ref.infer(texts)
    quality = {}
    for label, spec in [("torch cpu fp32", None), *runnable]:
        if spec is None:
            got = expected
        else:
            opts = {k: v for k, v in spec.items() if k != "backend"}
            with load_engine(bundle, spec["backend"], EngineOptions(max_batch=128, **opts)) as engine:
                got = engine.infer(texts)
        quality[label] = {}
        for t in TASKS:
            truth = np.array([labels[t].index(g[t]) for g in truths])
            pred = got[t].argmax(1)
            quality[label][t] = {
                "accuracy": float((pred == truth).mean()),
                "macro_f1": macro_f1(pred, truth, len(labels[t])),
                "label_agreement": float((pred == expected[t].argmax(1)).mean()),
                "max_abs_diff": float(np.abs(got[t] - expected[t]).max()),
            }

    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for label, spec in runnable:
        print(f"benchmarking {label}...", flush=True)
        opts = EngineOptions(**{k: v for k, v in spec.items() if k != "backend"})  # type: ignore[arg-type]
        rows += [
            {**r.as_dict(), "engine": label}
            for r in bench(bundle, spec["backend"], opts, texts, batches, min_seconds=args.seconds)
        ]
    print("benchmarking onnxruntime cpu fp32 (reference)...", flush=True)
    rows += [
        {**r.as_dict(), "engine": f"onnxruntime cpu fp32 ({os.cpu_count()} threads)"}
        for r in bench(
            bundle, "onnxruntime", EngineOptions(precision="fp32"), texts, [32, 128], min_seconds=args.seconds
        )
    ]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "gpu": _gpu(),
        "command": "python benchmarks/engines_gpu.py --data ../shared/data/dailydialog",
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "bundle": bundle.label,
        "test_utterances": len(texts),
        "train_seconds": train_seconds,
        "quality": quality,
        "not_measured": missing,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engines-gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "engines-gpu.md").write_text(render(report))
    print(render(report))


def render(report: dict) -> str:
    trained = f"{report['train_seconds']:.0f} s to train on this GPU" if report["train_seconds"] else "cached"
    lines = [
        "# GPU engines: MiniLM-L6 student",
        "",
        f"- date: {report['date']}",
        f"- GPU: {report['gpu']}; host: {report['machine']}",
        f"- command: `{report['command']}`",
        f"- versions: onnxruntime {report['versions']['onnxruntime']}, torch {report['versions']['torch']}",
        f"- bundle: {report['bundle']} (one epoch of cross-entropy on DailyDialog's train split, "
        f"{trained}); texts: the {report['test_utterances']} test utterances",
        "",
        "## Quality against torch fp32 on the CPU (whole test split)",
        "",
        "| engine | task | accuracy | macro-F1 | label agreement | largest probability difference |",
        "|---|---|---|---|---|---|",
    ]
    for engine, tasks in report["quality"].items():
        for t, q in tasks.items():
            lines.append(
                f"| {engine} | {t} | {q['accuracy']:.4f} | {q['macro_f1']:.4f} | "
                f"{q['label_agreement']:.4f} | {q['max_abs_diff']:.2e} |"
            )
    lines += [
        "",
        "## Throughput and latency",
        "",
        "Latency is per batch (one `infer` call, tokenisation included). Bucketed: each window of 256 "
        "texts is sorted by token length before it is cut into batches, as the worker does.",
        "",
        "| engine | batch | bucketed | utterances/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['engine']} | {r['batch']} | {'yes' if r['bucketed'] else 'no'} | "
            f"{r['utterances_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    if report["not_measured"]:
        lines += ["", "Not measured on this machine:", ""]
        lines += [f"- {reason}" for reason in report["not_measured"]]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
