"""The demo's round trip and the send/tail tools against the real Kafka and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from parley.connections import KafkaSettings, RedisSettings, TopicSettings
from parley.samples import conversations_path
from stream.errors import StreamError
from stream.roundtrip import roundtrip
from stream.send import raw_messages, read_utterances, send_messages
from stream.settings import WorkerSettings
from stream.tail import read

pytestmark = pytest.mark.integration

TopicFactory = Callable[..., Awaitable[str]]


def _worker(kafka: KafkaSettings, redis: RedisSettings, topic: str) -> WorkerSettings:
    return WorkerSettings(kafka=kafka, redis=redis, topics=TopicSettings(utterances=topic, partitions=3))


async def test_sample_conversations_round_trip_through_kafka_and_redis(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, topic_factory: TopicFactory
) -> None:
    """Every sample utterance comes back once, each conversation whole, ordered and on one partition."""
    topic = await topic_factory(partitions=3)
    utterances = read_utterances(conversations_path())
    report = await roundtrip(_worker(kafka_settings, redis_settings, topic), utterances, timeout_s=30)
    assert report.sent == report.received == len(utterances)
    assert {t.conversation_id for t in report.conversations} == {u.conversation_id for u in utterances}
    for trip in report.conversations:
        assert trip.sent == trip.received == trip.redis_turns
        assert trip.in_order
        assert len(trip.partitions) == 1


async def test_round_trip_ignores_other_traffic_and_runs_twice(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, topic_factory: TopicFactory
) -> None:
    """A second run on the same topic checks only its own messages (running the demo twice is fine)."""
    topic = await topic_factory(partitions=2)
    utterances = read_utterances(conversations_path())[:10]
    settings = _worker(kafka_settings, redis_settings, topic)
    await roundtrip(settings, utterances, timeout_s=30)
    again = await roundtrip(settings, utterances, timeout_s=30)
    assert again.received == 10


async def test_raw_lines_are_sent_byte_for_byte(
    kafka_settings: KafkaSettings, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    """send --raw delivers malformed lines untouched (keyed where a conversation_id can be read)."""
    topic = await topic_factory(partitions=1)
    lines = [
        b'{"conversation_id": "c1", "utterance_id": "u1", "text": ""}',
        b"not json at all",
        b"\xff\xfe\x00",
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = await send_messages(kafka_settings, topic, raw_messages(path))
    assert report.sent == 3
    got = [
        (r.key, r.value)
        async for r in read(kafka_settings, topic, start="beginning", max_messages=3, idle_timeout_s=20)
    ]
    assert got == [(b"c1", lines[0]), (None, lines[1]), (None, lines[2])]


def test_a_file_with_a_bad_line_is_refused_before_sending(tmp_path: Path) -> None:
    """Validated sending names the file and line of the first bad utterance and sends nothing."""
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"conversation_id": "c", "utterance_id": "u1", "text": "ok"}\n'
        '{"conversation_id": "c", "utterance_id": "u2", "text": "   "}\n'
    )
    with pytest.raises(StreamError, match=r"mixed\.jsonl, line 2: .*empty_text"):
        read_utterances(path)


def test_benchmark_layout_is_mapped_onto_the_contract(tmp_path: Path) -> None:
    """Lines in ../shared/data's layout (id, dialogue_id, split) become valid utterances."""
    path = tmp_path / "bench.jsonl"
    path.write_text(
        '{"id": "dd-1-0", "dialogue_id": "dd-1", "turn": 0, "speaker": "A", "text": "Hi.", "split": "test"}\n'
    )
    (u,) = read_utterances(path)
    assert (u.utterance_id, u.conversation_id, u.turn) == ("dd-1-0", "dd-1", 0)


async def test_cli_send_then_tail(kafka_settings: KafkaSettings, topic_factory: TopicFactory) -> None:
    """`parley stream send` then `parley stream tail --raw` shows every sample utterance."""
    topic = await topic_factory(partitions=3)
    env = {
        **os.environ,
        "PARLEY_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "PARLEY_TOPIC_UTTERANCES": topic,
        "PARLEY_WORKER_LOG_FORMAT": "json",
    }
    cli = [sys.executable, "-m", "parley.cli", "stream"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=60)

    sent = await asyncio.to_thread(run, "send", "--rate", "500")
    assert sent.returncode == 0, sent.stderr
    expected = len(read_utterances(conversations_path()))
    assert f"sent {expected} messages" in sent.stdout
    tailed = await asyncio.to_thread(
        run,
        "tail",
        "--topic",
        topic,
        "--from-beginning",
        "--max",
        str(expected),
        "--raw",
        "--idle-timeout",
        "20",
    )
    assert tailed.returncode == 0, tailed.stderr
    ids = [json.loads(line)["utterance_id"] for line in tailed.stdout.splitlines() if line.startswith("{")]
    assert sorted(ids) == sorted(u.utterance_id for u in read_utterances(conversations_path()))
