"""Dependencies fail, the worker stays up: Redis away (pointer mode included), a pointer that names
a version that does not exist, and state that comes out exact after an outage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from engines.pointer import PointerStore
from parley.clients import redis_client
from parley.connections import KafkaSettings, TopicSettings
from stream.contracts import UtteranceLabels
from stream.send import messages_for, send_messages

from .conftest import WorkerProcess, group_members, read_all, wait_committed
from .test_worker import conversations

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _labels(kafka: KafkaSettings, topic: str) -> dict[str, UtteranceLabels]:
    """The latest output per utterance_id."""
    return {
        o.utterance_id: o
        for o in (UtteranceLabels.model_validate_json(r.value) for r in await read_all(kafka, topic))
    }


async def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s * 4)):
        if condition():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


async def test_pointer_mode_rides_out_redis_restarting_empty_and_rereads_the_pointer(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    own_redis: tuple[str, Callable[[str], None]],
    demo_registry,
    demo_v2: tuple[str, str],
) -> None:
    """In pointer mode (no fixed bundle) Redis is stopped for longer than several pointer polls
    and comes back empty: the worker stays up and labels everything, saying state is unavailable
    meanwhile; once a version is promoted on the new Redis, the poll alone (no engine_ready
    event) swaps it in."""
    port, control = own_redis
    _, redis = demo_registry
    worker = worker_factory(
        PARLEY_REDIS_PORT=port, PARLEY_REDIS_SOCKET_TIMEOUT_S="0.5", PARLEY_WORKER_POINTER_POLL_S="1"
    )
    group = worker.env["PARLEY_WORKER_CONSUMER_GROUP"]
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    waves = [conversations(3, 4) for _ in range(3)]
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(waves[0]))
    await wait_committed(kafka_settings, group, worker_topics.utterances)

    await asyncio.to_thread(control, "stop")
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(waves[1]))
    await wait_committed(kafka_settings, group, worker_topics.utterances)
    await asyncio.sleep(4)  # four polls against a dead Redis
    assert worker.proc is not None
    assert worker.proc.poll() is None, worker.tail()
    assert worker.readyz() == {"ready": True, "engine": True, "kafka": True, "state": False}

    await asyncio.to_thread(control, "up")
    client = redis_client(redis.model_copy(update={"port": int(port)}))
    try:
        await PointerStore(client, redis.key_prefix).promote("demo-student", *demo_v2, "onnxruntime", "cpu")
    finally:
        await client.aclose()
    await _wait_for(
        lambda: bool(worker.events("new engine loaded; swapping at the next batch")),
        30,
        "the poll to load demo-2",
    )
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(waves[2]))
    await wait_committed(kafka_settings, group, worker_topics.utterances)

    got = await _labels(kafka_settings, worker_topics.utterance_labels)
    assert set(got) == {u.utterance_id for w in waves for u in w}
    assert {got[u.utterance_id].state.available for u in waves[1]} == {False}
    assert {got[u.utterance_id].model.version for u in waves[2]} == {demo_v2[0]}
    assert {got[u.utterance_id].state.available for u in waves[2]} == {True}
    assert worker.events("could not read the engine pointer; trying again")


async def test_state_is_exact_after_redis_was_unreachable(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    own_redis: tuple[str, Callable[[str], None]],
) -> None:
    """Redis hangs (its process stopped, its data kept) while turns 4-7 of three conversations are
    labelled: those outputs say state is unavailable, and once Redis answers again the backlog is
    written first, so turns 8-11 report exact turn counts (9-12)."""
    port, control = own_redis
    worker = worker_factory(PARLEY_REDIS_PORT=port, PARLEY_REDIS_SOCKET_TIMEOUT_S="0.5")
    group = worker.env["PARLEY_WORKER_CONSUMER_GROUP"]
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    utterances = conversations(3, 12)  # turn-major: 12 per wave of four turns
    waves = [utterances[0:12], utterances[12:24], utterances[24:36]]
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(waves[0]))
    await wait_committed(kafka_settings, group, worker_topics.utterances)
    await asyncio.to_thread(control, "freeze")
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(waves[1]))
    await wait_committed(kafka_settings, group, worker_topics.utterances)
    await asyncio.to_thread(control, "thaw")
    await asyncio.sleep(3)  # past the store's back-off
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(waves[2]))
    await wait_committed(kafka_settings, group, worker_topics.utterances)

    got = await _labels(kafka_settings, worker_topics.utterance_labels)
    assert {got[u.utterance_id].state.available for u in waves[1]} == {False}
    assert [got[u.utterance_id].state.turn_count for u in waves[0]] == [u.turn + 1 for u in waves[0]]  # type: ignore[operator]
    assert [got[u.utterance_id].state.turn_count for u in waves[2]] == [u.turn + 1 for u in waves[2]]  # type: ignore[operator]


async def test_a_cold_start_whose_pointer_names_a_missing_version_waits_outside_the_group(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    demo_registry,
    unique_name: Callable[[str], str],
) -> None:
    """The pointer names a version the registry does not have: the worker is alive but not ready,
    is not a member of its consumer group and consumes nothing; once a real version is promoted it
    loads it, joins and labels what was waiting."""
    _, redis = demo_registry
    target = unique_name("target")
    client = redis_client(redis)
    pointers = PointerStore(client, redis.key_prefix)
    demo = await pointers.get("demo-student", "cpu")
    assert demo is not None
    try:
        await pointers.promote(
            "demo-student", "no-such-version", "onnxruntime-int8-cpu-x", "onnxruntime", target
        )
        worker = worker_factory(PARLEY_WORKER_TARGET=target, PARLEY_WORKER_ENGINE_RETRY_S="0.5")
        group = worker.env["PARLEY_WORKER_CONSUMER_GROUP"]
        worker.start()
        await _wait_for(lambda: worker.readyz() is not None, 60, "the worker's endpoints")
        utterances = conversations(2, 5)
        await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances))
        await asyncio.sleep(5)
        assert worker.readyz() == {"ready": False, "engine": False, "kafka": False, "state": True}
        assert worker.metric("parley_ready") == 0
        assert (worker.metric("parley_engine_load_failures_total") or 0) >= 1
        assert await group_members(kafka_settings, group) == 0
        assert await read_all(kafka_settings, worker_topics.utterance_labels, idle_s=1) == []
        assert worker.events("no engine can serve yet; not consuming until one loads")

        await pointers.promote("demo-student", demo.version, demo.engine_id, demo.backend, target)
        await asyncio.to_thread(worker.wait_ready, 90)
        assert worker.metric("parley_ready") == 1
        await wait_committed(kafka_settings, group, worker_topics.utterances)
        got = await _labels(kafka_settings, worker_topics.utterance_labels)
        assert set(got) == {u.utterance_id for u in utterances}
    finally:
        await client.aclose()
