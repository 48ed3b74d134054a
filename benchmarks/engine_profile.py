"""Where the CPU engine's time goes, per ONNX operator, before and after the export fixes.

    python benchmarks/engines_cpu.py --data ../shared/data/dailydialog    # builds the bench student (cached)
    python benchmarks/engine_profile.py --data ../shared/data/dailydialog

"before" is the graph parley exported until 2026-12-01: torch.export with the encoder's default
(SDPA) attention at opset 18, dynamic INT8 quantisation, and ONNX Runtime's full fusions (its
SkipLayerNormalization included). "after" is today's: eager attention at opset 20 (GELU as one
operator), the same quantisation, SkipLayerNorm fusion off on CPU — the bundle's own INT8 engine, as
the worker loads it. Both label the same DailyDialog test utterances in windows of 256 cut into
calls of at most 512 padded tokens, with ONNX Runtime's profiler on; kernel time is summed per
operator type. Writes docs/benchmarks/engine-profile.{json,md}.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engines_cpu import bench_arguments, load, machine, open_bench_student, write_report  # noqa: E402


def export_before(bundle, path: Path) -> None:
    """The previous export: SDPA attention as the encoder has it, opset 18."""
    import torch

    from engines.build import quantize_int8
    from engines.torch.model import ExportWrapper, load_weights

    model = load_weights(bundle.path, bundle.tasks()).eval()
    inputs = list(bundle.manifest.inputs)
    fp32 = path.with_suffix(".fp32.onnx")
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=1, max=max(bundle.manifest.max_length, 16))
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ExportWrapper(model).eval(),
            (),
            str(fp32),
            kwargs={n: torch.ones((2, 16), dtype=torch.int64) for n in inputs},
            input_names=inputs,
            output_names=[t.output for t in bundle.manifest.tasks],
            dynamic_shapes={n: {0: batch, 1: sequence} for n in inputs},
            opset_version=18,
            dynamo=True,
            optimize=True,
            external_data=False,
        )
    quantize_int8(fp32, path)


def profile(
    path: Path, texts: list[str], tokenizer, outputs: list[str], disabled: list[str], prefix: Path
) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )
    names = {i.name for i in session.get_inputs()}
    feeds = []
    for s in range(0, len(texts), 256):
        feeds += [b.feeds for b in tokenizer.batches(texts[s : s + 256], max_batch=128, max_tokens=512)]
    for f in feeds[:20]:
        session.run(outputs, {k: v for k, v in f.items() if k in names})
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for f in feeds:
            session.run(outputs, {k: v for k, v in f.items() if k in names})
        best = min(best, time.perf_counter() - t0)
    so.enable_profiling = True
    so.profile_file_prefix = str(prefix)
    profiled = ort.InferenceSession(
        str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )
    for f in feeds:
        profiled.run(outputs, {k: v for k, v in f.items() if k in names})
    trace = json.loads(Path(profiled.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e6
    return {
        "utterances_per_s": round(len(texts) / best, 1),
        "kernel_s": round(sum(per_op.values()), 3),
        "per_op_s": dict(sorted(((k, round(v, 4)) for k, v in per_op.items()), key=lambda kv: -kv[1])),
    }


def main() -> None:
    parser = bench_arguments(__doc__)
    parser.add_argument("--n", type=int, default=2048)
    args = parser.parse_args()

    import onnxruntime

    bundle = open_bench_student(args.work)
    utterances, _, _ = load(args.data)
    texts = [u["text"] for u in utterances.values() if u["split"] == "test"][: args.n]
    outputs = [t.output for t in bundle.manifest.tasks]
    after = bundle.path / next(r.file for r in bundle.engine_records() if r.precision == "int8")
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before-int8.onnx"
        export_before(bundle, before)
        report = {
            "before": profile(before, texts, bundle.tokenizer(), outputs, [], Path(tmp) / "before"),
            "after": profile(
                after, texts, bundle.tokenizer(), outputs, ["SkipLayerNormFusion"], Path(tmp) / "after"
            ),
        }
    report.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        command="python benchmarks/engine_profile.py --data ../shared/data/dailydialog",
        onnxruntime=onnxruntime.__version__,
        utterances=len(texts),
    )
    write_report(args.out, "engine-profile", report, render(report))


def render(r: dict) -> str:
    both = {*r["before"]["per_op_s"], *r["after"]["per_op_s"]}
    ops = sorted(
        both, key=lambda op: -max(r["before"]["per_op_s"].get(op, 0), r["after"]["per_op_s"].get(op, 0))
    )[:20]
    lines = [
        "# The CPU engine per ONNX operator, before and after the export fixes",
        "",
        f"- date: {r['date']}",
        f"- machine: {r['machine']}",
        f"- command: `{r['command']}`",
        f"- ONNX Runtime {r['onnxruntime']}; bench student INT8; {r['utterances']} DailyDialog test utterances in "
        "windows of 256, calls of ≤ 512 padded tokens; kernel seconds summed per operator type (profiler on)",
        "- before: torch.export, SDPA attention, opset 18, all ONNX Runtime fusions; after: eager attention, opset "
        "20, SkipLayerNorm fusion off",
        "",
        f"Throughput (profiler off, best of 3): before **{r['before']['utterances_per_s']:.0f}** utt/s, after "
        f"**{r['after']['utterances_per_s']:.0f}** utt/s. Kernel time: before {r['before']['kernel_s']:.2f} s, "
        f"after {r['after']['kernel_s']:.2f} s.",
        "",
        "| operator | before s | after s |",
        "|---|---|---|",
    ]
    for op in ops:
        b, a = r["before"]["per_op_s"].get(op), r["after"]["per_op_s"].get(op)
        lines.append(f"| {op} | {'' if b is None else f'{b:.3f}'} | {'' if a is None else f'{a:.3f}'} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
