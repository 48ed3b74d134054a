"""The worker against the real Kafka and Redis: nothing lost, bad input to the DLQ, state, crashes."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from parley.connections import KafkaSettings, TopicSettings
from parley.samples import conversations_path
from stream.contracts import DlqRecord, Utterance, UtteranceLabels
from stream.send import Message, messages_for, read_utterances, send_messages
from stream.tail import read

from .conftest import WorkerProcess, free_port_pair

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def conversations(n_conversations: int, turns: int) -> list[Utterance]:
    """Synthetic conversations reusing the sample texts, interleaved as live traffic would be."""
    texts = [u.text for u in read_utterances(conversations_path())]
    run = uuid.uuid4().hex[:6]
    out = []
    for turn in range(turns):
        for c in range(n_conversations):
            cid = f"conv-{run}-{c}"
            out.append(
                Utterance(
                    conversation_id=cid,
                    utterance_id=f"{cid}-{turn}",
                    turn=turn,
                    text=texts[(c * 7 + turn) % len(texts)],
                    speaker="customer" if turn % 2 else "agent",
                )
            )
    return out


async def collect(
    kafka: KafkaSettings, topic: str, n: int, idle_s: float = 60.0, extra_s: float = 2.0
) -> list[tuple[int, bytes | None, bytes]]:
    """Every record of ``topic`` once at least ``n`` arrived (waiting up to ``idle_s`` between
    records) and ``extra_s`` more passed: extras are returned, not hidden, so tests count them."""
    async for _ in read(kafka, topic, start="beginning", max_messages=n, idle_timeout_s=idle_s):
        pass
    await asyncio.sleep(extra_s)
    return [
        (r.partition, r.key, r.value) async for r in read(kafka, topic, start="beginning", idle_timeout_s=1.0)
    ]


async def test_every_utterance_gets_exactly_one_output_in_conversation_order(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """N utterances in → N outputs keyed by conversation, with the input's ids, ordered per conversation,
    each naming the model version, with the turn count kept in Redis."""
    worker = worker_factory()
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    utterances = conversations(12, 15)
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances))
    records = await collect(kafka_settings, worker_topics.utterance_labels, len(utterances))
    outputs = [(p, k, UtteranceLabels.model_validate_json(v)) for p, k, v in records]
    assert sorted(o.utterance_id for _, _, o in outputs) == sorted(u.utterance_id for u in utterances)
    by_conversation: dict[str, list[UtteranceLabels]] = defaultdict(list)
    for _, key, o in outputs:
        assert key == o.conversation_id.encode()
        by_conversation[o.conversation_id].append(o)
    for cid, outs in by_conversation.items():
        assert [o.turn for o in outs] == list(range(15)), cid
        assert [o.state.turn_count for o in outs] == list(range(1, 16)), cid
        assert all(o.state.available and o.model.version == "demo-1" for o in outs)
        assert set(outs[0].predictions) == {"intent", "sentiment", "dialogue_act"}
    # Selection for labelling is off by default: nothing on the queue.
    queue = read(kafka_settings, worker_topics.labelling_queue, start="beginning", idle_timeout_s=1.0)
    assert [r async for r in queue] == []
    assert worker.stop() == 0  # SIGTERM: a clean stop


async def test_bad_input_goes_to_the_dlq_with_its_reason_and_the_worker_lives_on(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """A mix of valid and malformed messages: each bad one is one DLQ record with its original bytes,
    its reason and its source; every good one is labelled; the worker stays ready."""
    worker = worker_factory(PARLEY_WORKER_MAX_TEXT_CHARS="200")
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    good = conversations(3, 4)
    bad = {
        "not_json": b"this is not json",
        "not_utf8": b'{"conversation_id": "c", "utterance_id": "u", "text": "\xff\xfe"}',
        "empty_text": json.dumps({"conversation_id": "c", "utterance_id": "u1", "text": "  "}).encode(),
        "text_too_long": json.dumps(
            {"conversation_id": "c", "utterance_id": "u2", "text": "x" * 201}
        ).encode(),
        "wrong_type": json.dumps(
            {"conversation_id": "c", "utterance_id": "u3", "text": "hi", "turn": "3"}
        ).encode(),
        "unknown_schema_version": json.dumps({"schema_version": 9, "conversation_id": "c"}).encode(),
        "missing_field": json.dumps({"conversation_id": "c", "text": "no id"}).encode(),
        "not_object": b"[1, 2, 3]",
    }
    mixed = messages_for(good)
    for i, value in enumerate(bad.values()):
        mixed.insert(i * 2, Message(b"c", value))
    await send_messages(kafka_settings, worker_topics.utterances, mixed)
    dead = [
        DlqRecord.model_validate_json(v)
        for _, _, v in await collect(kafka_settings, worker_topics.utterances_dlq, len(bad))
    ]
    assert Counter(d.reason.value for d in dead) == Counter(bad.keys())
    for record in dead:
        assert record.original_value == bad[record.reason.value]
        assert record.source.topic == worker_topics.utterances
        assert record.errors[0].message
    labelled = await collect(kafka_settings, worker_topics.utterance_labels, len(good))
    assert len(labelled) == len(good)
    assert worker.readyz() == {"ready": True, "engine": True, "kafka": True, "state": True}


async def test_a_replayed_utterance_is_labelled_again_but_not_counted_twice(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """Sending the same utterances twice gives two outputs each; the turn count never goes past the
    number of distinct utterances (a replay reports the conversation's state, it does not add a turn)."""
    worker = worker_factory()
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    utterances = conversations(2, 3)
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances))
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances))
    outputs = [
        UtteranceLabels.model_validate_json(v)
        for _, _, v in await collect(kafka_settings, worker_topics.utterance_labels, 2 * len(utterances))
    ]
    assert Counter(o.utterance_id for o in outputs) == Counter({u.utterance_id: 2 for u in utterances})
    highest: dict[str, int] = defaultdict(int)
    for o in outputs:
        highest[o.conversation_id] = max(highest[o.conversation_id], o.state.turn_count or 0)
    assert set(highest.values()) == {3}


async def test_labelling_goes_on_without_redis(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    demo_registry,
    tmp_path,
) -> None:
    """With Redis unreachable, every utterance is still labelled and says state is unavailable."""
    registry, _ = demo_registry
    bundle = f"{registry}/demo-student/demo-1"
    worker = worker_factory(
        PARLEY_REDIS_PORT="1", PARLEY_REDIS_SOCKET_TIMEOUT_S="0.5", PARLEY_WORKER_BUNDLE_PATH=bundle
    )
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    utterances = conversations(4, 5)
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances))
    outputs = [
        UtteranceLabels.model_validate_json(v)
        for _, _, v in await collect(kafka_settings, worker_topics.utterance_labels, len(utterances))
    ]
    assert len(outputs) == len(utterances)
    assert all(not o.state.available for o in outputs)


async def test_engine_swap_under_load_switches_version_once_and_loses_nothing(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    demo_registry,
    demo_v2: tuple[str, str],
) -> None:
    """A new version promoted and announced while traffic flows: every input is labelled once, and in
    each partition's output order the version changes once, from the old to the new."""
    from engines.events import EngineReady
    from engines.pointer import PointerStore
    from engines.publish import publish
    from engines.registry import Registry
    from parley.clients import redis_client

    registry_uri, redis = demo_registry
    version, engine_id = demo_v2
    worker = worker_factory()
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    bundle = Registry(registry_uri).open("demo-student", version)
    record = bundle.engine_record(engine_id)

    utterances = conversations(10, 40)  # 400 utterances at 100/s: four seconds of traffic
    sender = asyncio.create_task(
        send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances), rate=100)
    )
    await asyncio.sleep(1.5)
    client = redis_client(redis)
    try:
        store = PointerStore(client, redis.key_prefix)
        before = await store.get("demo-student", "cpu")
        await store.promote("demo-student", version, engine_id, "onnxruntime", "cpu")
        await publish(
            kafka_settings,
            worker_topics.model_events,
            EngineReady(
                model="demo-student",
                version="demo-2",
                backend="onnxruntime",
                precision="int8",
                runtime_version=record.runtime_version,
                engine_uri=str(bundle.path / record.file),
            ),
        )
        await sender
        records = await collect(kafka_settings, worker_topics.utterance_labels, len(utterances))
    finally:
        if before is not None:  # leave demo-1 serving for the other tests
            await PointerStore(client, redis.key_prefix).promote(
                "demo-student", before.version, before.engine_id, before.backend, "cpu"
            )
        await client.aclose()
    outputs = [(p, UtteranceLabels.model_validate_json(v)) for p, _, v in records]
    assert sorted(o.utterance_id for _, o in outputs) == sorted(u.utterance_id for u in utterances)
    per_partition: dict[int, list[str]] = defaultdict(list)
    for partition, o in outputs:
        per_partition[partition].append(o.model.version)
    for versions in per_partition.values():
        switches = sum(1 for a, b in itertools.pairwise(versions) if a != b)
        assert switches <= 1
        assert versions == sorted(versions)  # demo-1 … then demo-2, never back
    assert {v for vs in per_partition.values() for v in vs} == {"demo-1", "demo-2"}


async def test_broker_stopped_and_restarted_mid_stream_loses_nothing(
    demo_registry,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path,
    unique_name: Callable[[str], str],
) -> None:
    """A second broker (spare ports) is stopped while the worker labels and started again on the same
    data: every utterance sent before and after gets its output."""
    import os
    import subprocess

    from stream.topics import ensure_topics, parley_topics

    port = free_port_pair()
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "PARLEY_RUN_DIR": str(tmp_path / "run"),
        "KAFKA_HEAP": "384M",
    }
    script = ["bash", str(SCRIPTS / "kafka.sh")]

    def broker(action: str) -> None:
        result = subprocess.run([*script, action], env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr

    await asyncio.to_thread(broker, "up")
    try:
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
        topics = TopicSettings(
            utterances=unique_name("in"),
            utterance_labels=unique_name("out"),
            utterances_dlq=unique_name("dlq"),
            model_events=unique_name("ev"),
            partitions=3,
        )
        await ensure_topics(kafka, parley_topics(topics))
        worker = worker_factory(
            PARLEY_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
            PARLEY_TOPIC_UTTERANCES=topics.utterances,
            PARLEY_TOPIC_UTTERANCE_LABELS=topics.utterance_labels,
            PARLEY_TOPIC_UTTERANCES_DLQ=topics.utterances_dlq,
            PARLEY_TOPIC_MODEL_EVENTS=topics.model_events,
        )
        worker.start()
        await asyncio.to_thread(worker.wait_ready)
        before, after = conversations(10, 20), conversations(10, 20)
        await send_messages(kafka, topics.utterances, messages_for(before))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(broker, "stop")
        await asyncio.sleep(5)
        await asyncio.to_thread(broker, "up")
        await send_messages(kafka, topics.utterances, messages_for(after))
        seen: set[str] = set()
        wanted = {u.utterance_id for u in before + after}
        async for r in read(kafka, topics.utterance_labels, start="beginning", idle_timeout_s=90):
            seen.add(UtteranceLabels.model_validate_json(r.value).utterance_id)
            if seen >= wanted:
                break
        assert seen == wanted, worker.tail()
        assert worker.proc is not None
        assert worker.proc.poll() is None  # the worker rode it out
    finally:
        await asyncio.to_thread(broker, "down")


async def test_redis_stopped_mid_stream_loses_nothing_and_state_comes_back(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    demo_registry,
    tmp_path,
) -> None:
    """A Redis of its own is stopped while the worker labels, then started again: every utterance is
    labelled throughout, outputs say when state was unavailable, and state returns with Redis."""
    import os
    import subprocess

    from .conftest import free_port

    registry, _ = demo_registry
    port = free_port()
    env = {**os.environ, "REDIS_PORT": str(port), "PARLEY_RUN_DIR": str(tmp_path / "run")}

    def redis(action: str) -> None:
        result = subprocess.run(
            ["bash", str(SCRIPTS / "redis.sh"), action], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr

    await asyncio.to_thread(redis, "up")
    try:
        worker = worker_factory(
            PARLEY_REDIS_PORT=str(port),
            PARLEY_REDIS_SOCKET_TIMEOUT_S="1",
            PARLEY_WORKER_BUNDLE_PATH=f"{registry}/demo-student/demo-1",
        )
        worker.start()
        await asyncio.to_thread(worker.wait_ready)
        phases = [conversations(3, 4) for _ in range(3)]
        got: list[UtteranceLabels] = []
        for i, batch in enumerate(phases):
            if i == 1:
                await asyncio.to_thread(redis, "stop")
            if i == 2:
                await asyncio.to_thread(redis, "up")
                await asyncio.sleep(
                    5
                )  # past the back-off (a few failed batches: seconds), so Redis is tried again
            await send_messages(kafka_settings, worker_topics.utterances, messages_for(batch))
            got = [
                UtteranceLabels.model_validate_json(v)
                for _, _, v in await collect(
                    kafka_settings, worker_topics.utterance_labels, sum(map(len, phases[: i + 1]))
                )
            ]
        by_phase = [
            {o.state.available for o in got if o.utterance_id in {u.utterance_id for u in batch}}
            for batch in phases
        ]
        assert sorted(o.utterance_id for o in got) == sorted(u.utterance_id for b in phases for u in b)
        assert by_phase == [{True}, {False}, {True}]
    finally:
        await asyncio.to_thread(redis, "down")


async def test_a_new_engine_that_fails_to_load_leaves_the_old_one_serving(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    demo_registry,
    tmp_path,
) -> None:
    """The pointer moved to a version whose engine is corrupt: the worker logs it and keeps serving
    the old version; nothing is lost."""
    import json as _json
    import shutil

    from engines.events import EngineReady
    from engines.pointer import PointerStore
    from engines.publish import publish
    from parley.clients import redis_client

    registry, redis = demo_registry
    broken = Path(registry) / "demo-student" / "demo-broken"
    if not broken.exists():
        shutil.copytree(Path(registry) / "demo-student" / "demo-1", broken)
        manifest = _json.loads((broken / "manifest.json").read_text())
        manifest["version"] = "demo-broken"
        (broken / "manifest.json").write_text(_json.dumps(manifest))
        (broken / "model.onnx").write_bytes(b"corrupted after registration")
    worker = worker_factory()
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    client = redis_client(redis)
    store = PointerStore(client, redis.key_prefix)
    before = await store.get("demo-student", "cpu")
    assert before is not None
    try:
        await store.promote("demo-student", "demo-broken", before.engine_id, "onnxruntime", "cpu")
        await publish(
            kafka_settings,
            worker_topics.model_events,
            EngineReady(
                model="demo-student",
                version="demo-broken",
                backend="onnxruntime",
                runtime_version="x",
                engine_uri=str(broken),
            ),
        )
        await asyncio.sleep(5)
        utterances = conversations(3, 5)
        await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances))
        outputs = [
            UtteranceLabels.model_validate_json(v)
            for _, _, v in await collect(kafka_settings, worker_topics.utterance_labels, len(utterances))
        ]
    finally:
        await store.promote("demo-student", before.version, before.engine_id, before.backend, "cpu")
        await client.aclose()
    assert len(outputs) == len(utterances)
    assert {o.model.version for o in outputs} == {"demo-1"}
    assert "new engine failed to load" in worker.tail(200)
    assert worker.readyz() == {"ready": True, "engine": True, "kafka": True, "state": True}


async def test_a_model_that_reads_context_is_served_the_previous_turn(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    demo_registry,
    tmp_path,
) -> None:
    """A bundle trained with one previous turn as context: the worker gives each utterance its
    conversation's previous text — from earlier in the same batch, or from Redis when it came in an
    earlier wave — and its scores are the engine's on (text, previous text), not on the text alone."""
    from engines.base import EngineOptions, load_engine
    from engines.build import build_onnxruntime
    from engines.export import build_bundle
    from engines.pointer import PointerStore
    from engines.registry import Registry
    from parley.clients import redis_client
    from train.demo import labelled_samples, write_demo_checkpoint

    registry_uri, redis = demo_registry
    registry = Registry(registry_uri)
    ckpt = await asyncio.to_thread(write_demo_checkpoint, tmp_path / "ckpt", "ctx-1")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["model"] = "ctx-student"
    manifest["training"]["config"]["context_turns"] = 1
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    rows = [{"text": t, "gold": g} for t, g in labelled_samples()]
    bundle = registry.put(await asyncio.to_thread(build_bundle, ckpt, registry.staging_dir(), rows))
    assert bundle.manifest.context_turns == 1
    built = await asyncio.to_thread(build_onnxruntime, bundle, registry, "fp32")
    client = redis_client(redis)
    try:
        await PointerStore(client, redis.key_prefix).promote(
            "ctx-student", "ctx-1", built.record.engine_id, "onnxruntime", "cpu"
        )
    finally:
        await client.aclose()

    worker = worker_factory(PARLEY_WORKER_MODEL="ctx-student")
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    utterances = conversations(4, 6)  # turn-major: the first 12 are turns 0-2 of the 4 conversations
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances[:12]))
    await collect(kafka_settings, worker_topics.utterance_labels, 12)  # wave 1 done: its texts in Redis
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances[12:]))
    records = await collect(kafka_settings, worker_topics.utterance_labels, len(utterances))
    got = {o.utterance_id: o for o in (UtteranceLabels.model_validate_json(v) for _, _, v in records)}
    assert sorted(got) == sorted(u.utterance_id for u in utterances)

    previous: dict[str, str] = {}
    contexts: list[str | None] = []
    for u in utterances:
        contexts.append(previous.get(u.conversation_id))
        previous[u.conversation_id] = u.text
    texts = [u.text for u in utterances]
    with load_engine(bundle, "onnxruntime", EngineOptions(precision="fp32")) as engine:
        expected, alone = engine.infer(texts, contexts), engine.infer(texts)
    moved = 0
    for i, u in enumerate(utterances):
        for task, prediction in got[u.utterance_id].predictions.items():
            best = int(expected[task][i].argmax())
            assert prediction.label == bundle.manifest.task(task).labels[best], (u.utterance_id, task)
            assert abs(prediction.score - float(expected[task][i, best])) < 1e-4, (u.utterance_id, task)
            moved += abs(float(alone[task][i, best]) - float(expected[task][i, best])) > 1e-4
    assert moved > 0  # the context changed the scores: the test would catch a worker that ignored it
    assert worker.stop() == 0
