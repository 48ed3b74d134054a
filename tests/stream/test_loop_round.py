"""One round of the learning loop, hands-off, through the real broker and Redis (docs/loop.md):

live traffic → the worker labels it and chooses candidates → labelling-queue → ``parley train label
--from-topic`` (the real SmolLM2 through the local backend) → the pool → ``parley train loop``
(retrain, judge on the held-out set, register, announce) → the engine watcher builds, verifies and
promotes → the worker hot-swaps → new traffic is labelled by the new version; nothing lost.

The round runs on its own copy of the demo registry and its own Redis key prefix, so the demo
student the other worker tests expect stays in service for them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from parley.connections import KafkaSettings, RedisSettings, TopicSettings
from parley.samples import TASKS, read_conversations, read_labels
from stream.contracts import Utterance, UtteranceLabels
from stream.send import messages_for, send_messages

from .conftest import WorkerProcess, wait_committed
from .test_worker import collect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "demo-student"


@pytest.fixture
def own_serving(demo_registry, tmp_path: Path) -> tuple[str, RedisSettings]:
    """A copy of the demo registry, and demo-1 promoted under a key prefix of its own."""
    from engines.pointer import PointerStore
    from parley.clients import redis_client

    registry_uri, redis = demo_registry
    registry = tmp_path / "registry"
    shutil.copytree(registry_uri, registry)
    own = redis.model_copy(update={"key_prefix": f"parley-loop-{uuid.uuid4().hex[:8]}:"})

    async def copy_pointer() -> None:
        client = redis_client(redis)
        try:
            current = await PointerStore(client, redis.key_prefix).get(MODEL, "cpu")
            assert current is not None
            await PointerStore(client, own.key_prefix).promote(
                MODEL, current.version, current.engine_id, current.backend, "cpu"
            )
        finally:
            await client.aclose()

    asyncio.run(copy_pointer())
    return str(registry), own


def earlier_data(folder: Path) -> dict[str, Path]:
    """What the demo student learnt from, in the training layout: the sample conversations' training
    part as ``train`` and the held-out part as ``test``, with their human labels for all tasks."""
    held_out = {u.conversation_id for u in read_conversations("held_out")}
    gold = read_labels()
    rows, labels = [], []
    for u in read_conversations("all"):
        split = "test" if u.conversation_id in held_out else "train"
        rows.append(
            {
                "id": u.utterance_id,
                "dialogue_id": u.conversation_id,
                "turn": u.turn,
                "text": u.text,
                "split": split,
            }
        )
        labels += [
            {"id": u.utterance_id, "task": t, "label": v} for t, v in gold.get(u.utterance_id, {}).items()
        ]
    files = {"utterances": folder / "u.jsonl", "gold": folder / "g.jsonl", "labels": folder / "labels.json"}
    files["utterances"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    files["gold"].write_text("".join(json.dumps(r) + "\n" for r in labels))
    files["labels"].write_text(json.dumps(TASKS))
    return files


def live_traffic(n_conversations: int) -> list[Utterance]:
    """Some of the training conversations again, as new live conversations (new ids)."""
    run = uuid.uuid4().hex[:6]
    chosen = sorted({u.conversation_id for u in read_conversations("train")})[:n_conversations]
    return [
        Utterance(
            conversation_id=f"live-{run}-{u.conversation_id}",
            utterance_id=f"live-{run}-{u.utterance_id}",
            turn=u.turn,
            speaker=u.speaker,
            text=u.text,
        )
        for u in read_conversations("train")
        if u.conversation_id in chosen
    ]


async def labelled(
    kafka: KafkaSettings, topic: str, utterances: list[Utterance]
) -> dict[str, UtteranceLabels]:
    outputs = [
        UtteranceLabels.model_validate_json(v) for _, _, v in await collect(kafka, topic, len(utterances))
    ]
    assert sorted(o.utterance_id for o in outputs) == sorted(u.utterance_id for u in utterances)  # once each
    return {o.utterance_id: o for o in outputs}


def invoke(args: list[str], env: dict[str, str]) -> str:
    from click.testing import CliRunner

    from parley.cli import cli

    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def test_one_round_from_live_traffic_to_a_swapped_engine(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    own_serving: tuple[str, RedisSettings],
    group_factory: Callable[[], str],
    tmp_path: Path,
) -> None:
    from engines.events import ModelTrained, decode_model_event
    from engines.pointer import PointerStore
    from engines.settings import EngineBuilderSettings
    from engines.watch import Watcher
    from parley.clients import redis_client
    from stream.tail import read

    registry, redis = own_serving
    worker = worker_factory(
        PARLEY_WORKER_REGISTRY_URI=registry,
        PARLEY_REDIS_KEY_PREFIX=redis.key_prefix,
        PARLEY_WORKER_SELECT_SHARE="1",
        PARLEY_WORKER_SELECT_MIN_SCORE="0.3",
    )
    worker.start()
    await asyncio.to_thread(worker.wait_ready)

    # 1. live traffic: every utterance labelled by demo-1, the uncertain ones queued
    first = live_traffic(3)
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(first))
    outputs = await labelled(kafka_settings, worker_topics.utterance_labels, first)
    assert {o.model.version for o in outputs.values()} == {"demo-1"}

    # 2. the LLM labels the queue into the pool
    pool = tmp_path / "pool"
    env = {
        "PARLEY_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "PARLEY_TOPIC_LABELLING_QUEUE": worker_topics.labelling_queue,
        "PARLEY_TOPIC_MODEL_EVENTS": worker_topics.model_events,
        "PARLEY_TRAIN_RUNS_DIR": str(tmp_path / "runs"),
        "PARLEY_TRAIN_REGISTRY_URI": registry,
        "PARLEY_TRAIN_LOG_FORMAT": "json",
        "HF_HUB_OFFLINE": "1",
    }
    said = await asyncio.to_thread(
        invoke,
        [
            "train",
            "label",
            "--from-topic",
            "--pool",
            str(pool),
            "--task",
            "sentiment",
            "--prompt",
            "definitions",
            "--idle-exit",
            "5",
        ],
        env,
    )
    from train.pool import Pool

    contents = Pool(str(pool)).read()
    assert contents.items, said
    assert set(contents.items) <= set(outputs)
    assert all(i.ensemble["sentiment"]["label"] in TASKS["sentiment"] for i in contents.items.values())

    # 3. retrain on the earlier data plus the pool; judged against demo-1, published past the rule
    files = earlier_data(tmp_path)
    said = await asyncio.to_thread(
        invoke,
        [
            "train",
            "loop",
            "--utterances",
            str(files["utterances"]),
            "--gold",
            str(files["gold"]),
            "--labels",
            str(files["labels"]),
            "--pool",
            str(pool),
            "--out",
            str(tmp_path / "round-1"),
            "--model-name",
            MODEL,
            "--version",
            "loop-1",
            "--budget",
            "1.0",
            "--pretrain-epochs",
            "1",
            "--finetune-epochs",
            "2",
            "--max-length",
            "32",
            # the rule is exercised in tests/train/test_pool.py; here the round must go all the way
            "--min-gain",
            "-1",
            "--max-task-drop",
            "1",
        ],
        env,
    )
    decision = json.loads((tmp_path / "round-1" / "decision.json").read_text())
    assert decision["published"], said
    assert decision["comparison"]["serving_version"] == "demo-1"
    assert set(decision["comparison"]["candidate"]) == set(TASKS)
    assert decision["pool"]["candidates"] == len(contents.items)
    [event] = [
        decode_model_event(r.value)
        async for r in read(
            kafka_settings, worker_topics.model_events, start="beginning", max_messages=1, idle_timeout_s=10
        )
    ]
    assert isinstance(event, ModelTrained)
    assert event.version == "loop-1"
    assert event.evaluation is not None
    assert event.evaluation.candidate == decision["comparison"]["candidate"]

    # 4. the watcher builds, verifies and promotes; the worker swaps
    settings = EngineBuilderSettings(
        kafka=kafka_settings,
        redis=redis,
        topics=worker_topics,
        registry_uri=registry,
        consumer_group=group_factory(),
    )
    outcomes = await Watcher(settings, target="cpu").run(idle_timeout_s=5)
    assert [o.status for o in outcomes] == ["ready"]
    client = redis_client(redis)
    try:
        current = await PointerStore(client, redis.key_prefix).get(MODEL, "cpu")
    finally:
        await client.aclose()
    assert current is not None
    assert current.version == "loop-1"
    deadline = time.monotonic() + 60
    while not any(
        e.get("version") == "loop-1" for e in worker.events("new engine loaded; swapping at the next batch")
    ):
        assert time.monotonic() < deadline, worker.tail()
        await asyncio.sleep(0.5)

    # 5. new traffic is labelled by the new version; every input of both rounds once, all committed
    second = live_traffic(1)
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(second))
    outputs = await labelled(kafka_settings, worker_topics.utterance_labels, first + second)
    assert {outputs[u.utterance_id].model.version for u in second} == {"loop-1"}
    await wait_committed(kafka_settings, worker.env["PARLEY_WORKER_CONSUMER_GROUP"], worker_topics.utterances)
    assert worker.stop() == 0
