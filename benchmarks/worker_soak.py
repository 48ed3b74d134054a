"""Ten minutes of live traffic with varied lengths: does the worker's memory stay flat?

    python benchmarks/engines_cpu.py --data ../shared/data/dailydialog     # builds the bundle (cached)
    make up && python benchmarks/worker_soak.py --data ../shared/data/dailydialog

The worker (defaults, the bench student's INT8 engine) labels DailyDialog test utterances at a steady
``--rate`` for ``--minutes``; every tenth utterance is made long (several utterances joined, up to the
model's max length and past it), so engine calls see every shape and ONNX Runtime's memory arena
every size. The worker's resident set size is sampled every second; the report gives it at the start,
the middle and the end, its maximum, and a plot. Writes docs/benchmarks/worker-soak.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engines_cpu import bench_arguments, machine, open_bench_student  # noqa: E402
from worker_e2e import MODEL, PORT, VERSION, RssSampler, test_texts, wait_ready  # noqa: E402


def varied(rows: list[dict], n: int, seed: int) -> list:
    """``n`` utterances: DailyDialog texts, every tenth one several texts joined (20-400 words)."""
    from stream.contracts import Utterance
    from stream.send import messages_for

    rng = random.Random(seed)
    out = []
    for i in range(n):
        u = rows[i % len(rows)]
        text = u["text"]
        if i % 10 == 9:
            text = " ".join(rng.choice(rows)["text"] for _ in range(rng.randint(2, 30)))[:1999]
        out.append(
            Utterance(
                conversation_id=f"s-{u['dialogue_id']}", utterance_id=f"s{i}", turn=u["turn"], text=text
            )
        )
    return messages_for(out)


async def main_async(args: argparse.Namespace) -> dict:
    from engines.pointer import PointerStore
    from parley.clients import redis_client
    from parley.connections import KafkaSettings, RedisSettings, TopicSettings
    from stream.contracts import UtteranceLabels
    from stream.send import send_messages
    from stream.tail import read
    from stream.topics import delete_topics, ensure_topics, parley_topics

    bundle = open_bench_student(args.work)
    int8 = next(r for r in bundle.engine_records() if r.precision == "int8")
    kafka, redis = KafkaSettings(), RedisSettings(key_prefix=f"parley-soak-{uuid.uuid4().hex[:6]}:")
    client = redis_client(redis)
    await PointerStore(client, redis.key_prefix).promote(MODEL, VERSION, int8.engine_id, "onnxruntime")
    await client.aclose()
    run = uuid.uuid4().hex[:6]
    topics = TopicSettings(
        utterances=f"soak-in-{run}",
        utterance_labels=f"soak-out-{run}",
        utterances_dlq=f"soak-dlq-{run}",
        model_events=f"soak-events-{run}",
        labelling_queue=f"soak-queue-{run}",
        partitions=3,
    )
    await ensure_topics(kafka, parley_topics(topics))
    env = {
        **os.environ,
        "PARLEY_REDIS_KEY_PREFIX": redis.key_prefix,
        "PARLEY_WORKER_MODEL": MODEL,
        "PARLEY_WORKER_REGISTRY_URI": str(args.work / "registry"),
        "PARLEY_WORKER_CONSUMER_GROUP": f"soak-{run}",
        "PARLEY_TOPIC_UTTERANCES": topics.utterances,
        "PARLEY_TOPIC_UTTERANCE_LABELS": topics.utterance_labels,
        "PARLEY_TOPIC_UTTERANCES_DLQ": topics.utterances_dlq,
        "PARLEY_TOPIC_MODEL_EVENTS": topics.model_events,
        "PARLEY_WORKER_WEB_PORT": str(PORT),
        "PARLEY_WORKER_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "stream", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_ready()
        rss = RssSampler(worker.pid, every_s=1.0)
        n = int(args.rate * args.minutes * 60)
        messages = varied(test_texts(args.data), n, seed=0)
        t0 = time.monotonic()
        await send_messages(kafka, topics.utterances, messages, rate=args.rate)
        sent_s = time.monotonic() - t0
        latencies, seen = [], set()
        async for r in read(kafka, topics.utterance_labels, start="beginning", idle_timeout_s=30):
            out = UtteranceLabels.model_validate_json(r.value)
            if out.utterance_id not in seen:
                seen.add(out.utterance_id)
                latencies.append(out.latency_ms)
                if len(seen) == n:
                    break
        memory = rss.stop()
        series = rss.samples
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    await delete_topics(kafka, topics.all_names())

    def at(fraction: float) -> float:
        return round(series[min(int(len(series) * fraction), len(series) - 1)][1], 1)

    ms = np.array(latencies)
    return {
        "rate": args.rate,
        "minutes": args.minutes,
        "sent": n,
        "labelled": len(seen),
        "send_seconds": round(sent_s, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "rss": {
            **memory,
            "after_1_min": round(next((mb for t, mb in series if t >= 60), series[-1][1]), 1),
            "middle": at(0.5),
            "end": at(0.99),
        },
        "series": [(round(t, 1), round(m, 1)) for t, m in series],
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] / 60 for s in report["series"]]
    mb = [s[1] for s in report["series"]]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(t, mb, lw=1)
    ax.set_xlabel("minutes")
    ax.set_ylabel("worker RSS (MB)")
    ax.set_ylim(0, max(mb) * 1.2)
    ax.set_title(f"worker memory at {report['rate']:.0f} utt/s, varied lengths")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(r: dict) -> str:
    m = r["rss"]
    growth = m["end"] - m["after_1_min"]
    return "\n".join(
        [
            "# Worker memory over a long run",
            "",
            f"- date: {r['date']}",
            f"- machine: {r['machine']}",
            f"- command: `{r['command']}`",
            f"- load: {r['sent']} utterances at {r['rate']:.0f}/s for {r['minutes']} minutes; DailyDialog test "
            "texts, every tenth made long (2–30 texts joined, up to 1,999 characters: past the model's "
            "max length); the worker's defaults, bench student INT8",
            "",
            "| resident memory | MB |",
            "|---|---|",
            f"| after the first minute | {m['after_1_min']:.0f} |",
            f"| halfway | {m['middle']:.0f} |",
            f"| at the end | {m['end']:.0f} |",
            f"| highest | {m['max_mb']:.0f} |",
            "",
            f"Growth from the first minute to the end: {growth:+.0f} MB. Labelled {r['labelled']}/{r['sent']}; "
            f"latency p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms.",
            "",
            "![worker RSS over time](worker-soak.png)",
            "",
        ]
    )


def main() -> None:
    parser = bench_arguments(__doc__)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    report.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        command="python benchmarks/worker_soak.py --data ../shared/data/dailydialog",
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "worker-soak.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "worker-soak.png")
    (args.out / "worker-soak.md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
