"""End-to-end worker benchmark: Kafka in → worker → Kafka out, beside the raw engine and a naive consumer.

    python benchmarks/engines_cpu.py --data ../shared/data/dailydialog     # builds the bundle (cached)
    make up && python benchmarks/worker_e2e.py --data ../shared/data/dailydialog

On the student of benchmarks/engines_cpu.py (ONNX Runtime INT8) and DailyDialog's test utterances:
1. capacity: as many utterances as fast as possible; throughput = utterances / (first send → last output);
2. latency at 50% and 90% of that capacity: p50/p99 of each output's ``latency_ms`` (input's Kafka
   timestamp → processed);
3. in the same run, the raw engine (engines.bench, same engine and batch size, length-bucketed);
4. the consumer a user would otherwise write: one aiokafka consumer, the torch model called per message
   (what a transformers pipeline does per call), one acknowledged send per output; its capacity and its
   latency at 50% of that.
Writes docs/benchmarks/worker-e2e.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engines_cpu import load, machine  # noqa: E402

MODEL, VERSION = "bench-student", "dailydialog-e1"


def utterance_messages(data: Path, limit: int, tag: str) -> list:
    from stream.contracts import Utterance
    from stream.send import messages_for

    utterances, _, _ = load(data)
    rows = [u for u in utterances.values() if u["split"] == "test"][:limit]
    return messages_for(
        [
            Utterance(
                conversation_id=f"{tag}-{u['dialogue_id']}",
                utterance_id=f"{tag}-{u['id']}",
                turn=u["turn"],
                text=u["text"],
            )
            for u in rows
        ]
    )


async def run_through(kafka, topics, messages, rate: float | None, timeout_s: float = 300) -> dict:
    """Send messages, read until every output arrived; throughput and output latencies."""
    from stream.contracts import UtteranceLabels
    from stream.send import send_messages
    from stream.tail import end_offsets, read

    start = await end_offsets(kafka, topics.utterance_labels)
    t0 = time.perf_counter()
    sender = asyncio.create_task(send_messages(kafka, topics.utterances, messages, rate=rate))
    wanted = {json.loads(m.value)["utterance_id"] for m in messages}
    latencies, got = [], set()
    async for r in read(kafka, topics.utterance_labels, start=start, idle_timeout_s=timeout_s):
        out = UtteranceLabels.model_validate_json(r.value)
        if out.utterance_id in wanted and out.utterance_id not in got:
            got.add(out.utterance_id)
            latencies.append(out.latency_ms)
            if len(got) == len(wanted):
                break
    seconds = time.perf_counter() - t0
    await sender
    ms = np.array(latencies)
    return {
        "utterances": len(got),
        "seconds": round(seconds, 2),
        "utterances_per_s": round(len(got) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "rate": rate,
    }


async def naive_consumer(kafka, topics, bundle, stop: asyncio.Event) -> None:
    """The consumer a user would write first: one message at a time, model call, acknowledged send."""
    from datetime import UTC as _UTC

    from engines.base import EngineOptions, load_engine
    from parley.clients import kafka_consumer, kafka_producer
    from stream.contracts import ConversationState, ModelRef, UtteranceLabels, decode_utterance, encode
    from stream.predictions import predictions_for

    engine = load_engine(bundle, "torch", EngineOptions(max_batch=1))
    labels = {t.name: list(t.labels) for t in bundle.manifest.tasks}
    consumer = kafka_consumer(
        kafka,
        topics.utterances,
        group_id=f"naive-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="latest",
        enable_auto_commit=True,
    )
    producer = kafka_producer(kafka)
    await consumer.start()
    await producer.start()
    try:
        with engine:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for msg in records:
                        u = decode_utterance(msg.value).utterance
                        probs = engine.infer([u.text])
                        now = datetime.now(_UTC)
                        out = UtteranceLabels(
                            conversation_id=u.conversation_id,
                            utterance_id=u.utterance_id,
                            turn=u.turn,
                            predictions=predictions_for(0, probs, labels, 3),
                            model=ModelRef(name=MODEL, version=VERSION, backend=engine.name),
                            state=ConversationState(available=False),
                            processed_at=now,
                            latency_ms=max(now.timestamp() * 1000 - msg.timestamp, 0),
                        )
                        await producer.send_and_wait(topics.utterance_labels, encode(out), key=msg.key)
    finally:
        await consumer.stop()
        await producer.stop()


async def main_async(args: argparse.Namespace) -> dict:
    from engines.base import EngineOptions
    from engines.bench import bench
    from engines.pointer import PointerStore
    from engines.registry import Registry
    from parley.clients import redis_client
    from parley.connections import KafkaSettings, RedisSettings, TopicSettings
    from stream.topics import delete_topics, ensure_topics, parley_topics

    registry = Registry(str(args.work / "registry"))
    if not registry.has(MODEL, VERSION):
        sys.exit("run benchmarks/engines_cpu.py first: it trains and registers the benchmark student")
    bundle = registry.open(MODEL, VERSION)
    int8 = next(r for r in bundle.engine_records() if r.precision == "int8")
    kafka, redis = KafkaSettings(), RedisSettings(key_prefix=f"parley-bench-{uuid.uuid4().hex[:6]}:")
    client = redis_client(redis)
    await PointerStore(client, redis.key_prefix).promote(MODEL, VERSION, int8.engine_id, "onnxruntime")
    await client.aclose()
    run = uuid.uuid4().hex[:6]
    topics = TopicSettings(
        utterances=f"bench-in-{run}",
        utterance_labels=f"bench-out-{run}",
        utterances_dlq=f"bench-dlq-{run}",
        model_events=f"bench-events-{run}",
        partitions=3,
    )
    await ensure_topics(kafka, parley_topics(topics))
    report: dict = {}
    env = {
        **os.environ,
        "PARLEY_REDIS_KEY_PREFIX": redis.key_prefix,
        "PARLEY_WORKER_MODEL": MODEL,
        "PARLEY_WORKER_REGISTRY_URI": registry.uri,
        "PARLEY_WORKER_CONSUMER_GROUP": f"bench-{run}",
        "PARLEY_TOPIC_UTTERANCES": topics.utterances,
        "PARLEY_TOPIC_UTTERANCE_LABELS": topics.utterance_labels,
        "PARLEY_TOPIC_UTTERANCES_DLQ": topics.utterances_dlq,
        "PARLEY_TOPIC_MODEL_EVENTS": topics.model_events,
        "PARLEY_WORKER_WEB_PORT": "16099",
        "PARLEY_WORKER_LOG_LEVEL": "WARNING",
        "PARLEY_WORKER_BATCH_MAX_SIZE": str(args.batch),
        "PARLEY_WORKER_ENGINE_MAX_BATCH": str(args.engine_batch),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "stream", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen("http://127.0.0.1:16099/readyz", timeout=2) as r:
                    if json.loads(r.read()).get("ready"):
                        break
            except OSError:
                pass
            await asyncio.sleep(0.5)
        await run_through(kafka, topics, utterance_messages(args.data, 200, "warm"), None)  # warm-up
        capacity = await run_through(kafka, topics, utterance_messages(args.data, args.n, "cap"), None)
        report["worker_capacity"] = capacity
        for share in (0.5, 0.9):
            rate = capacity["utterances_per_s"] * share
            report[f"worker_at_{int(share * 100)}pct"] = await run_through(
                kafka, topics, utterance_messages(args.data, int(rate * args.rate_seconds), f"r{share}"), rate
            )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    texts = [json.loads(m.value)["text"] for m in utterance_messages(args.data, args.n, "raw")]
    raw = bench(
        bundle,
        "onnxruntime",
        EngineOptions(precision="int8"),
        texts,
        [args.engine_batch],
        bucket_modes=(True,),
        min_seconds=5,
    )
    report["raw_engine"] = raw[0].as_dict()

    stop = asyncio.Event()
    naive = asyncio.create_task(naive_consumer(kafka, topics, bundle, stop))
    await asyncio.sleep(5)
    naive_cap = await run_through(kafka, topics, utterance_messages(args.data, args.naive_n, "ncap"), None)
    report["naive_capacity"] = naive_cap
    rate = naive_cap["utterances_per_s"] * 0.5
    report["naive_at_50pct"] = await run_through(
        kafka, topics, utterance_messages(args.data, int(rate * args.rate_seconds), "n50"), rate
    )
    stop.set()
    await naive
    await delete_topics(kafka, topics.all_names())
    return report


def render(r: dict) -> str:
    cap, raw, naive = r["worker_capacity"], r["raw_engine"], r["naive_capacity"]
    lines = [
        "# Worker end to end (Kafka in → Kafka out)",
        "",
        f"- date: {r['date']}",
        f"- machine: {r['machine']}",
        f"- command: `{r['command']}`",
        f"- engine: {MODEL}/{VERSION}, ONNX Runtime INT8; worker batches of {r['batch']} "
        f"(engine slices of {r['engine_batch']}); texts: DailyDialog test utterances; Kafka and Redis on this "
        "machine, sharing its two cores with the worker and the load generator",
        "",
        "| run | utterances | utterances/s | p50 latency ms | p99 latency ms |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("worker_capacity", "worker, as fast as possible"),
        ("worker_at_50pct", "worker at 50% of capacity"),
        ("worker_at_90pct", "worker at 90% of capacity"),
        ("naive_capacity", "naive consumer, as fast as possible"),
        ("naive_at_50pct", "naive consumer at 50% of its capacity"),
    ):
        x = r[key]
        lines.append(
            f"| {label} | {x['utterances']} | {x['utterances_per_s']:.0f} | {x['p50_ms']:.0f} | {x['p99_ms']:.0f} |"
        )
    lines += [
        f"| raw engine, batch {raw['batch']}, bucketed (per batch latency) | {raw['utterances']} | "
        f"{raw['utterances_per_s']:.0f} | {raw['p50_ms']:.0f} | {raw['p99_ms']:.0f} |",
        "",
        f"Pipeline / raw engine throughput: **{cap['utterances_per_s'] / raw['utterances_per_s']:.2f}** (goal ≥ 0.90). "
        f"Worker / naive consumer throughput: **{cap['utterances_per_s'] / naive['utterances_per_s']:.1f}×** (goal ≥ 10×).",
        "",
        "Latency is each output's `latency_ms`: from the input's Kafka timestamp to the worker's processed time; "
        "at capacity it includes the time spent queued behind earlier messages.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dailydialog")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-engines")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--naive-n", type=int, default=300)
    parser.add_argument("--rate-seconds", type=float, default=15)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--engine-batch", type=int, default=32)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    report.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        batch=args.batch,
        engine_batch=args.engine_batch,
        command="python benchmarks/worker_e2e.py --data ../shared/data/dailydialog",
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "worker-e2e.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "worker-e2e.md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
