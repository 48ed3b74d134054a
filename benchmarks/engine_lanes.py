"""One engine call on every core, or several single-threaded calls side by side (lanes); and how
much padding a call may carry.

    python benchmarks/engines_cpu.py --data ../shared/data/dailydialog    # builds the bench student (cached)
    python benchmarks/engine_lanes.py --data ../shared/data/dailydialog

The bench student's INT8 engine labels DailyDialog's test utterances arriving in windows of W texts
(what the worker has in flight), each window sorted by length and cut into calls of ≤ 512 padded
tokens, with the rows of a window spread over at least ``lanes`` calls and, with a padding cap, a call
ended before its pad tokens exceed that share of its real ones. Configurations: calls at once ×
intra-op threads per call × padding cap. Every configuration runs ``--rounds`` times, interleaved with the
others, and the median is reported. Writes docs/benchmarks/engine-lanes.{json,md}; the worker's
defaults (one lane per usable CPU, one thread each; pad tokens at most a quarter of the real ones)
come from this table.
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

# (lanes, threads per call, padding cap); threads None: ONNX Runtime's default (one per physical
# core); cap None: calls cut by rows and tokens only.
CONFIGS = (
    (1, None, None),
    (1, None, 0.5),
    (2, 1, None),
    (2, 1, 0.25),
    (2, 1, 0.5),
    (2, 1, 1.0),
    (4, 1, 0.5),
    (2, 2, 0.5),
)
WINDOWS = (8, 32, 128, 256)
MAX_TOKENS = 512


def label(lanes: int, threads: int | None, padding: float | None) -> str:
    per_call = "runtime's threads" if threads is None else f"{threads} thread{'s' * (threads > 1)}"
    cap = "no padding cap" if padding is None else f"padding ≤ {padding:g} × real"
    return f"{lanes} lane{'s' * (lanes > 1)} × {per_call}, {cap}"


def main() -> None:
    args, bundle, texts = interleaved_setup(__doc__)

    import onnxruntime

    from engines.base import EngineOptions, load_engine

    engines = {
        (lanes, threads, padding): load_engine(
            bundle,
            "onnxruntime",
            EngineOptions(
                precision="int8",
                max_batch=128,
                max_tokens=MAX_TOKENS,
                threads=threads,
                lanes=lanes,
                max_padding=padding,
            ),
        )
        for lanes, threads, padding in CONFIGS
    }
    rates = interleaved_rates(engines, texts, WINDOWS, args.rounds)
    rows = [
        {"window": window, "lanes": lanes, "threads": threads, "max_padding": padding, **rate}
        for (window, lanes, threads, padding), rate in rates.items()
    ]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python benchmarks/engine_lanes.py --data ../shared/data/dailydialog",
        "onnxruntime": onnxruntime.__version__,
        "bundle": bundle.label,
        "utterances": len(texts),
        "rounds": args.rounds,
        "max_tokens": MAX_TOKENS,
        "rows": rows,
    }
    write_report(args.out, "engine-lanes", report, render(report))


def render(r: dict) -> str:
    by = {(x["window"], x["lanes"], x["threads"], x["max_padding"]): x for x in r["rows"]}
    head = ["calls at once × threads per call, padding"] + [f"window {w}" for w in WINDOWS]
    lines = [
        "# Engine lanes and padding: one call on every core, or single-threaded calls side by side",
        "",
        f"- date: {r['date']}",
        f"- machine: {r['machine']}",
        f"- command: `{r['command']}`",
        f"- engine: {r['bundle']}, ONNX Runtime {r['onnxruntime']} INT8; {r['utterances']} DailyDialog test "
        f"utterances arriving W at a time (each window sorted by length, cut into calls of ≤ "
        f"{r['max_tokens']} padded tokens, into at least one call per lane and, with a cap, before a call's pad "
        "tokens exceed that share of its real ones); median of "
        f"{r['rounds']} interleaved rounds, utterances/s (slowest–fastest round in brackets)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for config in CONFIGS:
        cells = []
        for w in WINDOWS:
            x = by[(w, *config)]
            cells.append(f"{x['utterances_per_s']:.0f} ({x['spread'][0]:.0f}–{x['spread'][1]:.0f})")
        lines.append(f"| {label(*config)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Read: ONNX Runtime splits each operator of a call over its threads and joins them again; for "
        "MiniLM's small matrices that fork-join costs a large share of the work. Single-threaded calls "
        "running side by side (one lane per core) skip it, so the same cores label more utterances, "
        "small windows (light load) included. More lanes than cores are not faster once windows are "
        "large, and they cut small windows into calls of very few rows. On a CPU a pad token costs what "
        "a real one does: a few texts of mixed lengths padded to the longest waste most of a call, so "
        "a cap on the padding (rather than ever larger calls) keeps small windows efficient.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
