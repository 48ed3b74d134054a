"""Nothing lost, against the real broker: every input offset ends in exactly one output or one DLQ
record, and the committed offset never passes an input that has neither — whatever arrives, with
workers joining, leaving and dying, and when the output topic cannot be written."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from parley.connections import KafkaSettings, TopicSettings
from stream.contracts import DlqRecord, Utterance, UtteranceLabels
from stream.send import Message, messages_for, send_messages
from stream.tail import end_offsets
from stream.topics import committed_offsets

from .conftest import WorkerProcess, read_all, wait_committed
from .test_worker import conversations

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _utterance(cid: str, uid: str, text: str, **extra: object) -> bytes:
    return json.dumps({"conversation_id": cid, "utterance_id": uid, "text": text, **extra}).encode()


def _hostile() -> list[tuple[str, Message]]:
    """(expected reason, message): every kind of input that once cost the worker valid utterances."""
    deep = "[" * 100_000 + "]" * 100_000  # ~200 KB: under the 256 KiB limit, so it is parsed
    return [
        (
            "too_deep",
            Message(b"h", b'{"conversation_id": "h", "utterance_id": "d", "text": ' + deep.encode() + b"}"),
        ),
        ("number_too_large", Message(b"h", _utterance("h", "n", "hi", turn=int("7" * 4000)))),
        ("too_large", Message(b"h", _utterance("h", "t8", "x" * 800_000))),
        ("too_large", Message(b"h", _utterance("h", "t1", "y" * 1_040_000))),
        (
            "not_finite",
            Message(b"h", b'{"conversation_id": "h", "utterance_id": "f", "text": "a", "turn": NaN}'),
        ),
        ("not_utf8", Message(b"h", b'{"conversation_id": "h", "utterance_id": "s", "text": "\\ud800"}')),
        ("not_utf8", Message(b"h", b'{"conversation_id": "\\udc00", "utterance_id": "s2", "text": "hi"}')),
        (
            "duplicate_key",
            Message(b"h", b'{"conversation_id": "h", "utterance_id": "k", "text": "a", "text": "b"}'),
        ),
        ("empty_value", Message(b"h", b"")),
        ("empty_value", Message(b"h", None)),
        ("not_json", Message(None, b"{oops")),
        ("empty_text", Message(b"h", _utterance("h", "e", "   "))),
    ]


async def _account(
    kafka: KafkaSettings,
    topics: TopicSettings,
    expected: dict[tuple[int, int], str],
    ids: dict[str, tuple[int, int]],
) -> tuple[Counter[tuple[int, int]], dict[tuple[int, int], DlqRecord]]:
    """How many records (outputs + DLQ) each input (partition, offset) got, counting everything."""
    per_input: Counter[tuple[int, int]] = Counter()
    dead: dict[tuple[int, int], DlqRecord] = {}
    for r in await read_all(kafka, topics.utterance_labels):
        per_input[ids[UtteranceLabels.model_validate_json(r.value).utterance_id]] += 1
    for r in await read_all(kafka, topics.utterances_dlq):
        record = DlqRecord.model_validate_json(r.value)
        where = (record.source.partition, record.source.offset)
        per_input[where] += 1
        dead[where] = record
    unknown = set(per_input) - set(expected)
    assert not unknown, f"records for inputs never sent: {sorted(unknown)[:5]}"
    return per_input, dead


@pytest.mark.partitions(1)
async def test_a_poison_mix_in_one_partition_gives_every_offset_exactly_one_record(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """Deep JSON, huge integers, ~800 KB and ~1 MB values, NaN, lone surrogates, duplicate keys,
    null keys, headers and empty values among valid utterances, sent at full speed: each offset has
    exactly one output or one DLQ record with its reason, the big originals are cut with their
    length and hash kept, and the group's committed offset is the end of the partition."""
    worker = worker_factory()
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    run = uuid.uuid4().hex[:6]
    messages: list[Message] = []
    kinds: list[str] = []
    valid_ids: list[str | None] = []
    for i, (reason, hostile) in enumerate(_hostile()):
        for j in range(15):
            uid = f"{run}-{i}-{j}"
            extra: dict[str, object] = {"turn": j}
            key: bytes | None = f"c-{i}".encode()
            headers: tuple[tuple[str, bytes], ...] = ()
            if j == 3:
                key = None  # a null key: still labelled, and keyed by conversation on the way out
            if j == 4:
                headers = (("trace", b"\x00\xff"), ("origin", b"test"))
            messages.append(Message(key, _utterance(f"c-{i}", uid, f"thanks, message {j}", **extra), headers))
            kinds.append("output")
            valid_ids.append(uid)
        messages.append(hostile)
        kinds.append(reason)
        valid_ids.append(None)
    await send_messages(kafka_settings, worker_topics.utterances, messages)

    committed = await wait_committed(
        kafka_settings, worker.env["PARLEY_WORKER_CONSUMER_GROUP"], worker_topics.utterances
    )
    assert committed == {0: len(messages)}
    expected = {(0, offset): kind for offset, kind in enumerate(kinds)}
    ids = {uid: (0, offset) for offset, uid in enumerate(valid_ids) if uid is not None}
    per_input, dead = await _account(kafka_settings, worker_topics, expected, ids)
    assert {where: n for where, n in per_input.items() if n != 1} == {}
    assert set(per_input) == set(expected)
    for where, record in dead.items():
        assert record.reason.value == expected[where], (where, record.errors)
    for where, (_, hostile) in zip(sorted(dead), _hostile(), strict=True):
        original = hostile.value or b""
        record = dead[where]
        assert record.original_size == len(original)
        assert record.original_sha256 == hashlib.sha256(original).hexdigest()
        assert record.original_truncated == (len(original) > 700_000)
        assert original.startswith(record.original_value)
    assert worker.readyz() == {"ready": True, "engine": True, "kafka": True, "state": True}


@pytest.mark.partitions(1)
async def test_an_unwritable_output_topic_stops_the_worker_without_committing(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """The output topic deleted under a running worker: the worker exits non-zero, the committed
    offset stays before the first input that got no output, and once the topic is back a restarted
    worker labels every input."""
    from stream.topics import delete_topics, ensure_topics, parley_topics

    worker = worker_factory(PARLEY_WORKER_PUBLISH_TIMEOUT_S="5")
    group = worker.env["PARLEY_WORKER_CONSUMER_GROUP"]
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    first, second = conversations(2, 10), conversations(2, 10)
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(first))
    assert await wait_committed(kafka_settings, group, worker_topics.utterances) == {0: 20}

    await delete_topics(kafka_settings, [worker_topics.utterance_labels])
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(second))
    assert worker.proc is not None
    code = await asyncio.to_thread(worker.proc.wait, 60)
    assert code != 0, worker.tail()
    assert await committed_offsets(kafka_settings, group, worker_topics.utterances) == {0: 20}

    await ensure_topics(kafka_settings, parley_topics(worker_topics))
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    assert await wait_committed(kafka_settings, group, worker_topics.utterances) == {0: 40}
    labelled = {
        UtteranceLabels.model_validate_json(r.value).utterance_id
        for r in await read_all(kafka_settings, worker_topics.utterance_labels)
    }
    assert labelled == {u.utterance_id for u in second}


def _first_output_order_kept(records: list[tuple[int, int, UtteranceLabels]]) -> None:
    """Per conversation, the first output of each utterance comes in turn order."""
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for _, _, o in sorted(records, key=lambda r: (r[0], r[1])):
        if o.utterance_id not in seen:
            seen.add(o.utterance_id)
            assert o.turn is not None
            firsts[o.conversation_id].append(o.turn)
    for cid, turns in firsts.items():
        assert turns == sorted(turns), (cid, turns)


async def _outputs(kafka: KafkaSettings, topic: str) -> list[tuple[int, int, UtteranceLabels]]:
    return [
        (r.partition, r.offset, UtteranceLabels.model_validate_json(r.value))
        for r in await read_all(kafka, topic)
    ]


def _no_stall(records: list[tuple[int, int, UtteranceLabels]], limit_s: float = 30.0) -> float:
    times = sorted(o.processed_at.timestamp() for _, _, o in records)
    gap = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    assert gap < limit_s
    return gap


async def test_a_second_worker_joins_then_the_first_stops_mid_slow_batch_and_nothing_is_lost(
    kafka_settings: KafkaSettings,
    worker_topics: TopicSettings,
    worker_factory: Callable[..., WorkerProcess],
    own_redis: tuple[str, Callable[[str], None]],
) -> None:
    """Under load a second worker joins (a rebalance), then the first gets SIGTERM while its batch is
    held up by a paused Redis: it finishes the batch, commits and exits 0; every utterance is
    labelled, the first output of each keeps conversation order, and output never stalls 30 s."""
    port, _ = own_redis
    env = {
        "PARLEY_REDIS_PORT": port,
        "PARLEY_REDIS_SOCKET_TIMEOUT_S": "10",
        "PARLEY_WORKER_BATCH_MAX_SIZE": "32",
    }
    first, second = worker_factory(**env), worker_factory(**env)
    group = first.env["PARLEY_WORKER_CONSUMER_GROUP"]
    first.start()
    await asyncio.to_thread(first.wait_ready)
    utterances = conversations(20, 60)  # 1,200 utterances at 100/s: twelve seconds of traffic
    sender = asyncio.create_task(
        send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances), rate=100)
    )
    await asyncio.sleep(1.5)
    second.start()
    await asyncio.to_thread(second.wait_ready)
    await asyncio.sleep(1.0)
    await _redis_cli(port, "CLIENT", "PAUSE", "3000", "WRITE")  # the batch in flight now waits 3 s
    await asyncio.sleep(0.3)
    stopped = time.monotonic()
    assert await asyncio.to_thread(first.stop, signal.SIGTERM, 60) == 0, first.tail()
    assert time.monotonic() - stopped < 30
    await sender
    await wait_committed(kafka_settings, group, worker_topics.utterances)
    records = await _outputs(kafka_settings, worker_topics.utterance_labels)
    assert {o.utterance_id for _, _, o in records} == {u.utterance_id for u in utterances}
    _first_output_order_kept(records)
    _no_stall(records)
    assert [e["why"] for e in first.events("waiting for batches in flight")][-1:] == ["shutdown"]


async def test_kill_9_of_one_of_two_workers_loses_nothing_and_replays_only_uncommitted_inputs(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """Two workers share the load; one is killed with SIGKILL: the other takes its partitions and
    every utterance is labelled. Only inputs at or after the offsets committed before the kill are
    labelled twice."""
    env = {"PARLEY_WORKER_SESSION_TIMEOUT_S": "6", "PARLEY_WORKER_BATCH_MAX_SIZE": "32"}
    doomed, survivor = worker_factory(**env), worker_factory(**env)
    group = doomed.env["PARLEY_WORKER_CONSUMER_GROUP"]
    doomed.start()
    survivor.start()
    await asyncio.gather(asyncio.to_thread(doomed.wait_ready), asyncio.to_thread(survivor.wait_ready))
    utterances = conversations(20, 30)
    where = {u.utterance_id: u for u in utterances}
    sender = asyncio.create_task(
        send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances), rate=150)
    )
    await asyncio.sleep(2.0)
    before = await committed_offsets(kafka_settings, group, worker_topics.utterances)
    assert doomed.stop(signal.SIGKILL) == -signal.SIGKILL
    await sender
    await wait_committed(kafka_settings, group, worker_topics.utterances)
    inputs = {
        Utterance.model_validate_json(r.value).utterance_id: (r.partition, r.offset)
        for r in await read_all(kafka_settings, worker_topics.utterances)
    }
    records = await _outputs(kafka_settings, worker_topics.utterance_labels)
    counts = Counter(o.utterance_id for _, _, o in records)
    assert set(counts) == set(where)
    for uid, n in counts.items():
        if n > 1:
            partition, offset = inputs[uid]
            assert offset >= before.get(partition, 0), (uid, n, before)
    _first_output_order_kept(records)
    assert survivor.proc is not None
    assert survivor.proc.poll() is None


async def _redis_cli(port: str, *args: str) -> None:
    from redis.asyncio import Redis

    client = Redis(host="127.0.0.1", port=int(port))
    try:
        await client.execute_command(*args)
    finally:
        await client.aclose()


@pytest.mark.partitions(1)
async def test_replay_dlq_sends_chosen_originals_back_after_the_cause_is_fixed(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """A worker with a 40-character limit files long texts as text_too_long; after it is restarted
    with the default limit, `parley stream replay-dlq --reason text_too_long` (a dry run first,
    which sends nothing) sends exactly those originals back, and they are labelled."""
    import subprocess
    import sys

    strict = worker_factory(PARLEY_WORKER_MAX_TEXT_CHARS="40")
    group = strict.env["PARLEY_WORKER_CONSUMER_GROUP"]
    strict.start()
    await asyncio.to_thread(strict.wait_ready)
    run = uuid.uuid4().hex[:6]
    long_ids = [f"{run}-long-{i}" for i in range(5)]
    messages = [Message(b"c", _utterance("c", f"{run}-short-{i}", "short")) for i in range(5)]
    messages += [
        Message(b"c", _utterance("c", uid, "a text much longer than forty characters, " * 2))
        for uid in long_ids
    ]
    messages.append(Message(b"c", b"not json at all"))
    await send_messages(kafka_settings, worker_topics.utterances, messages)
    await wait_committed(kafka_settings, group, worker_topics.utterances)
    assert strict.stop() == 0

    relaxed = worker_factory()
    relaxed.start()
    await asyncio.to_thread(relaxed.wait_ready)
    env = {**relaxed.env, "PARLEY_LOG_FORMAT": "json"}

    def replay(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "parley.cli",
            "stream",
            "replay-dlq",
            "--reason",
            "text_too_long",
            *extra,
        ]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    dry = await asyncio.to_thread(replay, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would send 5" in dry.stdout
    assert (await end_offsets(kafka_settings, worker_topics.utterances)) == {0: len(messages)}
    done = await asyncio.to_thread(replay)
    assert done.returncode == 0, done.stderr
    assert "sent 5" in done.stdout
    await wait_committed(kafka_settings, group, worker_topics.utterances)
    labelled = Counter(
        UtteranceLabels.model_validate_json(r.value).utterance_id
        for r in await read_all(kafka_settings, worker_topics.utterance_labels)
    )
    assert {uid: labelled[uid] for uid in long_ids} == dict.fromkeys(long_ids, 1)
    assert sum(labelled.values()) == 10


@pytest.mark.partitions(1)
async def test_a_record_the_broker_refuses_stops_the_worker_without_committing(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """The DLQ topic accepts records of at most 2,000 bytes and a rejected input's DLQ record is
    larger: the broker refuses the send after the worker sent it, the acker sees the failure, the
    worker exits non-zero and the committed offset stays before that input."""
    from stream.topics import TopicSpec, delete_topics, ensure_topics

    await delete_topics(kafka_settings, [worker_topics.utterances_dlq])
    await asyncio.sleep(1)
    await ensure_topics(
        kafka_settings, [TopicSpec(worker_topics.utterances_dlq, 1, configs={"max.message.bytes": "2000"})]
    )
    worker = worker_factory()
    group = worker.env["PARLEY_WORKER_CONSUMER_GROUP"]
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    first = conversations(1, 5)
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(first))
    assert await wait_committed(kafka_settings, group, worker_topics.utterances) == {0: 5}
    big_and_bad = Message(
        b"c", b'{"conversation_id": "c", "text": "' + b"z" * 5000 + b'"}'
    )  # no utterance_id
    await send_messages(
        kafka_settings, worker_topics.utterances, [big_and_bad, *messages_for(conversations(1, 5))]
    )
    assert worker.proc is not None
    code = await asyncio.to_thread(worker.proc.wait, 60)
    assert code != 0, worker.tail()
    stopped = "a record could not be delivered: stopping without committing; inputs from the last commit on "
    assert worker.events(stopped + "will be read again")
    assert await committed_offsets(kafka_settings, group, worker_topics.utterances) == {0: 5}
