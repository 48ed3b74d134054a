"""Which engine-call shape is fastest on this machine: rows per call, or padded tokens per call.

    python benchmarks/engines_cpu.py --data ../shared/data/dailydialog    # builds the bench student (cached)
    python benchmarks/engine_shapes.py --data ../shared/data/dailydialog

The bench student's INT8 engine (as the worker loads it) labels DailyDialog's test utterances
arriving in windows of W texts (what the worker has in flight: the engine sorts each window by
length and cuts it into calls). A call is limited by rows (``max_batch``) alone, as before, or by a
token budget (``max_tokens``: rows × padded width). Every configuration runs ``--rounds`` times,
interleaved with the others so that a noisy neighbour hits all alike; the median is reported.
Writes docs/benchmarks/engine-shapes.{json,md}; the worker's defaults come from this table.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engines_cpu import interleaved_rates, interleaved_setup, machine, write_report  # noqa: E402

ROW_LIMITS = (8, 32, 128)
TOKEN_BUDGETS = (128, 256, 512, 1024, 2048, 4096)
WINDOWS = (32, 128, 512)


def main() -> None:
    args, bundle, texts = interleaved_setup(__doc__)

    import onnxruntime

    from engines.base import EngineOptions, load_engine

    configs = [("rows", r, None) for r in ROW_LIMITS] + [("tokens", 256, t) for t in TOKEN_BUDGETS]
    engines = {
        (kind, rows, tokens): load_engine(
            bundle, "onnxruntime", EngineOptions(precision="int8", max_batch=rows, max_tokens=tokens)
        )
        for kind, rows, tokens in configs
    }
    rates = interleaved_rates(engines, texts, WINDOWS, args.rounds)
    rows = [
        {"window": window, "limit": kind, "max_batch": max_batch, "max_tokens": max_tokens, **rate}
        for (window, kind, max_batch, max_tokens), rate in sorted(rates.items(), key=lambda kv: str(kv[0]))
    ]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python benchmarks/engine_shapes.py --data ../shared/data/dailydialog",
        "onnxruntime": onnxruntime.__version__,
        "bundle": bundle.label,
        "utterances": len(texts),
        "rounds": args.rounds,
        "rows": rows,
    }
    write_report(args.out, "engine-shapes", report, render(report))


def render(r: dict) -> str:
    by = {(x["window"], x["limit"], x["max_batch"], x["max_tokens"]): x for x in r["rows"]}
    head = ["limit per call"] + [f"window {w}" for w in WINDOWS]
    lines = [
        "# Engine-call shapes: rows or tokens per call",
        "",
        f"- date: {r['date']}",
        f"- machine: {r['machine']}",
        f"- command: `{r['command']}`",
        f"- engine: {r['bundle']}, ONNX Runtime {r['onnxruntime']} INT8; {r['utterances']} DailyDialog test "
        f"utterances arriving W at a time (each window sorted by length, then cut into calls); median of "
        f"{r['rounds']} interleaved rounds, utterances/s (slowest–fastest round in brackets)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for kind, rows_, tokens in [("rows", b, None) for b in ROW_LIMITS] + [
        ("tokens", 256, t) for t in TOKEN_BUDGETS
    ]:
        label = f"{rows_} rows" if kind == "rows" else f"{tokens} tokens (≤ {rows_} rows)"
        cells = []
        for w in WINDOWS:
            x = by[(w, kind, rows_, tokens)]
            cells.append(f"{x['utterances_per_s']:.0f} ({x['spread'][0]:.0f}–{x['spread'][1]:.0f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Read: a call's cost follows its padded tokens, not its rows; past a few hundred tokens per call "
        "the engine gets slower per utterance on this CPU, so a token budget keeps every call near the "
        "best size whatever the lengths, and a larger window (more in flight) only helps the sort.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
