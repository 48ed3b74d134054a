"""Labelling from the queue (train/label/from_topic.py) against the real Kafka broker: a consumer group
reads the candidates, the prompt bank labels them through an OpenAI-compatible server the test
scripts (test_http_failures.py's), and the pool gets them before the offsets are committed."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from parley.clients import kafka_consumer
from parley.connections import KafkaSettings
from parley.messages import LabellingCandidate, ModelRef, PreviousTurn, SelectionScores, TaskPrediction
from stream.contracts import encode
from stream.send import Message, send_messages
from train.label.cache import AnswerCache
from train.label.from_topic import QueueLabelError, QueueOptions, label_queue
from train.label.spec import Prompt, PromptBank, read_task
from train.pool import Pool

from .test_http_failures import MODEL, Script, backend, completion, serve  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

LABELS = ("inform", "question", "directive", "commissive")


def candidate(uid: str, conversation: str, text: str, context: tuple[str, ...] = ()) -> LabellingCandidate:
    return LabellingCandidate(
        conversation_id=conversation,
        utterance_id=uid,
        turn=len(context),
        text=text,
        context=[PreviousTurn(utterance_id=f"{conversation}-{k}", text=t) for k, t in enumerate(context)],
        predictions={"dialogue_act": TaskPrediction(label="inform", score=0.4)},
        scores=SelectionScores(
            score=0.6,
            reason="uncertain",
            task="dialogue_act",
            uncertainty={"dialogue_act": 0.6},
            rarity={"dialogue_act": 0.0},
        ),
        model=ModelRef(name="student", version="v1", backend="onnxruntime"),
        selected_at=datetime.now(UTC),
    )


def bank() -> PromptBank:
    return PromptBank(
        (
            Prompt("plain", 'Label "{text}" as one of {labels}.', tasks=("dialogue_act",)),
            Prompt(
                "context",
                'Before: {context}\nLabel "{text}" as one of {labels}.',
                tasks=("dialogue_act",),
                context_turns=2,
            ),
        )
    )


async def committed(kafka: KafkaSettings, topic: str, group: str) -> int | None:
    consumer = kafka_consumer(kafka, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


async def test_candidates_reach_the_pool_labelled_with_their_context_and_are_committed_once(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., Awaitable[str]],
    group_factory: Callable[[], str],
    serve: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Four candidates (one sent twice) and one message that is not a candidate: the pool holds the
    four with both prompts' records and the ensemble, the context prompt saw the worker's turns, the
    bad message is kept with its reason, and the group's offset is at the end; a second run finds
    nothing new and asks nothing."""
    topic = await topic_factory(partitions=1, kind="queue")
    group = group_factory()
    sent = [
        candidate("u1", "c1", "Where is my parcel?", ("hello", "hi, how can I help?")),
        candidate("u2", "c1", "It was due on Monday."),
        candidate("u3", "c2", "Please cancel it."),
        candidate("u4", "c3", "I will call tomorrow."),
    ]
    messages = [Message(c.conversation_id.encode(), encode(c)) for c in sent]
    messages.insert(2, Message(b"c1", b'{"schema_version": 1, "utterance_id": "broken"}'))
    messages.append(Message(b"c1", encode(sent[0])))  # the worker sent it again after a rebalance
    await send_messages(kafka_settings, topic, messages)

    script = Script([(200, completion("question", [("question", -0.2), ("inform", -2.0)]), {}, 0.0)])
    url = await serve(script)
    task = read_task("dialogue_act")
    pool = Pool(str(tmp_path / "pool"))
    cache = AnswerCache(tmp_path / "cache.sqlite")
    options = QueueOptions(topic=topic, group=group, idle_exit_s=3.0)
    client = backend(url)
    try:
        summary = await label_queue(kafka_settings, options, [task], bank(), client, cache, pool)
        again = await label_queue(kafka_settings, options, [task], bank(), client, cache, pool)
    finally:
        await client.close()
        cache.close()
    assert (summary.candidates, summary.rejected, summary.duplicates) == (4, 1, 1)
    assert summary.backend_calls == 8  # 4 candidates × 2 prompts
    assert (again.candidates, again.backend_calls) == (0, 0)
    assert await committed(kafka_settings, topic, group) == len(messages)

    contents = pool.read()
    assert sorted(contents.items) == ["u1", "u2", "u3", "u4"]
    u1 = contents.items["u1"]
    assert u1.candidate["context"][1]["text"] == "hi, how can I help?"
    assert sorted(r["prompt_id"] for r in u1.records) == ["context", "plain"]
    assert u1.ensemble["dialogue_act"]["label"] == "question"
    assert u1.ensemble["dialogue_act"]["prompts"] == 2
    asked = [p["messages"][-1]["content"] for p in script.payloads]
    assert any("hi, how can I help?" in m and "Where is my parcel?" in m for m in asked)
    rejected = list((tmp_path / "pool" / "rejected").glob("*.jsonl"))
    assert len(rejected) == 1
    [kept] = [json.loads(line) for line in rejected[0].read_text().splitlines()]
    assert kept["source"] == f"{topic}/0/2"
    assert {r["code"] for r in kept["reasons"]} >= {"missing_field"}


async def test_a_backend_that_keeps_failing_commits_nothing_and_the_next_run_labels_everything(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., Awaitable[str]],
    group_factory: Callable[[], str],
    serve: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    topic = await topic_factory(partitions=1, kind="queue")
    group = group_factory()
    sent = [candidate(f"u{k}", f"c{k}", f"utterance number {k}") for k in range(3)]
    await send_messages(kafka_settings, topic, [Message(c.conversation_id.encode(), encode(c)) for c in sent])
    task = read_task("dialogue_act")
    pool = Pool(str(tmp_path / "pool"))
    cache = AnswerCache(tmp_path / "cache.sqlite")
    options = QueueOptions(topic=topic, group=group, idle_exit_s=3.0, retries=1)
    down = backend(await serve(Script([(500, {"error": "down"}, {}, 0.0)])), max_retries=0)
    up = backend(await serve(Script([(200, completion("directive", [("directive", -0.1)]), {}, 0.0)])))
    try:
        with pytest.raises(QueueLabelError, match="not committed"):
            await label_queue(kafka_settings, options, [task], bank(), down, cache, pool)
        assert await committed(kafka_settings, topic, group) is None
        assert pool.read().items == {}
        summary = await label_queue(kafka_settings, options, [task], bank(), up, cache, pool)
    finally:
        await down.close()
        await up.close()
        cache.close()
    assert summary.candidates == 3
    assert await committed(kafka_settings, topic, group) == 3
    assert {i.ensemble["dialogue_act"]["label"] for i in pool.read().items.values()} == {"directive"}


def test_the_cli_needs_a_pool_and_refuses_a_file_with_the_topic(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from parley.cli import cli

    result = CliRunner().invoke(cli, ["train", "label", "--from-topic", "--task", "dialogue_act"])
    assert result.exit_code == 2
    assert "--from-topic needs --pool" in result.output
    (tmp_path / "u.jsonl").write_text('{"id": "a", "text": "hi"}\n')
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "label",
            "--from-topic",
            "q",
            "--utterances",
            str(tmp_path / "u.jsonl"),
            "--task",
            "sentiment",
        ],
    )
    assert result.exit_code == 2
    assert "leave out --utterances" in result.output
