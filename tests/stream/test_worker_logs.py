"""The worker's output, off a terminal, is JSON lines and nothing else: faust's, mode's and
aiokafka's records included. The real worker process against the real Kafka and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from parley.connections import KafkaSettings, TopicSettings
from stream.contracts import Utterance
from stream.send import messages_for, send_messages
from stream.tail import read

from .conftest import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FOREIGN = ("faust", "mode", "aiokafka")


async def test_every_line_the_worker_writes_is_a_json_event_whoever_logged_it(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """A worker at DEBUG with the default log format, stdout and stderr into a file, starts, labels two
    utterances and stops on SIGTERM: every non-empty line it wrote parses as a JSON object with event,
    level, timestamp and logger, and faust's and aiokafka's own records are among them."""
    worker = worker_factory(PARLEY_WORKER_LOG_LEVEL="DEBUG", PARLEY_WORKER_LOG_FORMAT="auto")
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    utterances = [
        Utterance(conversation_id="logs", utterance_id=f"logs-{t}", turn=t, text=text)
        for t, text in enumerate(["hello, I need help with my order", "thanks, that fixed it"])
    ]
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances))
    labelled = [
        r
        async for r in read(
            kafka_settings,
            worker_topics.utterance_labels,
            start="beginning",
            max_messages=2,
            idle_timeout_s=60,
        )
    ]
    assert len(labelled) == 2
    assert worker.stop() == 0

    (log,) = worker.logs
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"line {number} of the worker's output is not JSON: {line[:300]!r}")
        assert isinstance(event, dict), line[:300]
        missing = {"event", "level", "timestamp", "logger"} - set(event)
        assert not missing, f"line {number} lacks {missing}: {line[:300]}"
        events.append(event)
    loggers = {e["logger"] for e in events}
    for library in ("faust", "aiokafka"):
        assert any(name.split(".")[0] == library for name in loggers), (library, sorted(loggers))
    assert {"endpoints up", "batch"} <= {e["event"] for e in events if not e["logger"].startswith(FOREIGN)}
