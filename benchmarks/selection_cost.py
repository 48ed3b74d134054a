"""What choosing for the labelling queue costs the worker: the tap's CPU per utterance against the
engine's, at several considered shares.

    python benchmarks/engines_cpu.py --data ../shared/data/dailydialog     # builds the bench student
    make up && python benchmarks/selection_cost.py

The worker's own LabellingTap (stream/labelling_queue.py: the considered share, the Selector, the
Redis read of the chosen conversations' turns, the LabellingCandidate messages) runs on the bench
student's real INT8 probabilities for DailyDialog test utterances, batch by batch as the worker
emits them, against the real Redis. The engine labels the same batches with the worker's defaults
(lanes, padding cap). CPU time is the process's (every thread), so the engine's counts both lanes.
The share reported is the tap's CPU over the engine's: an upper bound of the cost on throughput,
because the worker spends more per utterance than its engine alone (decoding, state, sending).
The engine is outside its post-swap window here (no previous engine to ask), as it is almost always;
the holder is therefore a stand-in with no previous engine. Writes docs/benchmarks/selection-cost.{md,json}.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from engines_cpu import bench_arguments, load, machine, open_bench_student

SHARES = (0.0, 0.1, 0.5, 1.0)
BATCH = 64


async def measure(args: Any) -> dict[str, Any]:
    from engines.base import EngineOptions, load_engine
    from engines.node import usable_cpus
    from parley.connections import RedisSettings
    from stream.contracts import Utterance
    from stream.engine_holder import Serving
    from stream.labelling_queue import LabellingTap
    from stream.metrics import WorkerMetrics
    from stream.selection import SelectionPolicy, Selector
    from stream.state import ConversationStore

    bundle = open_bench_student(args.work)
    utterances, _, _ = load(args.data)
    rows = [u for u in utterances.values() if u["split"] == "test"][: args.n]
    batch_utts = [
        Utterance(
            conversation_id=u["dialogue_id"],
            utterance_id=f"{u['id']}-{uuid.uuid4().hex[:4]}",
            turn=u["turn"],
            text=u["text"],
        )
        for u in rows
    ]
    batches = [batch_utts[i : i + BATCH] for i in range(0, len(batch_utts), BATCH)]
    engine = load_engine(
        bundle,
        "onnxruntime",
        EngineOptions(precision="int8", lanes=usable_cpus(), max_padding=0.25),
    )
    engine.activate()
    engine.infer([u.text for u in batches[0]])  # warm-up
    serving = Serving(engine, bundle.manifest.model, bundle.manifest.version, "bench")
    store = ConversationStore(RedisSettings(key_prefix=f"parley-selcost-{uuid.uuid4().hex[:6]}:"), ttl_s=600)
    results: dict[str, Any] = {"engine": [], "tap": {str(s): [] for s in SHARES}, "chosen": {}}
    try:
        for _round in range(args.rounds):
            probs_all = []
            c0, w0 = time.process_time(), time.perf_counter()
            for b in batches:
                probs_all.append(engine.infer([u.text for u in b]))
            results["engine"].append(
                {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "n": len(batch_utts)}
            )
            for share in SHARES:
                tap = LabellingTap(
                    Selector(SelectionPolicy(share=share)),
                    engines=SimpleNamespace(previous=None, swapped_at=None),  # type: ignore[arg-type]
                    inference=None,  # type: ignore[arg-type]
                    store=store,
                    metrics=WorkerMetrics(),
                )
                chosen = 0
                now = datetime.now(UTC)
                c0, w0 = time.process_time(), time.perf_counter()
                for b, probs in zip(batches, probs_all, strict=True):
                    if share > 0:  # off: the worker does not call the tap at all
                        chosen += len(await tap.candidates(serving, list(enumerate(b)), probs, now))
                results["tap"][str(share)].append(
                    {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "n": len(batch_utts)}
                )
                results["chosen"][str(share)] = chosen
            print(f"round {_round + 1}/{args.rounds} done", flush=True)
    finally:
        engine.deactivate()
        await store.aclose()
    return results


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    def per_utt(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] / r["n"] * 1e6 for r in runs)

    engine_cpu = per_utt(raw["engine"], "cpu")
    rows = []
    for share, runs in raw["tap"].items():
        cpu = per_utt(runs, "cpu")
        rows.append(
            {
                "share": float(share),
                "tap_cpu_us": cpu,
                "tap_wall_us": per_utt(runs, "wall"),
                "chosen": raw["chosen"][share],
                "of_engine_cpu": cpu / engine_cpu,
            }
        )
    return {"engine_cpu_us": engine_cpu, "engine_wall_us": per_utt(raw["engine"], "wall"), "rows": rows}


def main() -> None:
    parser = bench_arguments(__doc__)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raw = asyncio.run(measure(args))
    summary = summarise(raw)
    report = {
        "command": "python benchmarks/selection_cost.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "utterances": args.n,
        "batch": BATCH,
        "rounds": args.rounds,
        **summary,
        "raw": raw,
    }
    lines = [
        "# The cost of choosing for the labelling queue",
        "",
        f"`{report['command']}` on {report['machine']}, {report['date'][:10]}: {args.n} DailyDialog test "
        f"utterances in batches of {BATCH}, the median of {args.rounds} rounds. The bench student's INT8 "
        f"engine (worker defaults) takes {summary['engine_cpu_us']:.0f} µs of CPU per utterance "
        f"({summary['engine_wall_us']:.0f} µs of wall time).",
        "",
        "| considered share | chosen | tap CPU µs/utt | tap wall µs/utt | tap CPU / engine CPU |",
        "|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['share']:g} | {r['chosen']} | {r['tap_cpu_us']:.1f} | {r['tap_wall_us']:.1f} | "
            f"{100 * r['of_engine_cpu']:.2f}% |"
        )
    lines += [
        "",
        "Wall time above CPU time is the Redis round trip for the chosen conversations' turns, which the "
        "event loop spends waiting, not computing. The share of engine CPU bounds the throughput cost "
        "from above: the worker spends more per utterance than its engine alone.",
    ]
    out = Path(args.out)
    (out / "selection-cost.json").write_text(json.dumps(report, indent=2))
    (out / "selection-cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
