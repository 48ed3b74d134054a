"""The worker choosing what to label, against the real Kafka and Redis (stream/labelling_queue.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from parley.connections import KafkaSettings, TopicSettings
from stream.contracts import LabellingCandidate, UtteranceLabels
from stream.selection import text_key
from stream.send import messages_for, send_messages

from .conftest import WorkerProcess, wait_committed
from .test_worker import collect, conversations

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_chosen_utterances_reach_the_queue_with_context_and_nothing_else_changes(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """With every utterance considered and no score threshold, the queue gets one candidate per
    distinct text (near-duplicates dropped), each with the engine's predictions as its output has
    them, the (up to five) turns just before it in its conversation, and the model version; every input
    still has exactly one output and the offsets are committed to the end."""
    worker = worker_factory(PARLEY_WORKER_SELECT_SHARE="1", PARLEY_WORKER_SELECT_MIN_SCORE="0")
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    utterances = conversations(4, 6)
    await send_messages(kafka_settings, worker_topics.utterances, messages_for(utterances))
    outputs = {
        o.utterance_id: o
        for o in (
            UtteranceLabels.model_validate_json(v)
            for _, _, v in await collect(kafka_settings, worker_topics.utterance_labels, len(utterances))
        )
    }
    assert sorted(outputs) == sorted(u.utterance_id for u in utterances)
    distinct = {text_key(u.text) for u in utterances}
    queued = [
        (key, LabellingCandidate.model_validate_json(v))
        for _, key, v in await collect(kafka_settings, worker_topics.labelling_queue, len(distinct))
    ]
    assert len(queued) == len(distinct)
    assert {text_key(c.text) for _, c in queued} == distinct
    by_id = {u.utterance_id: u for u in utterances}
    for key, candidate in queued:
        source = by_id[candidate.utterance_id]
        assert key == source.conversation_id.encode()
        assert (candidate.text, candidate.turn, candidate.speaker) == (
            source.text,
            source.turn,
            source.speaker,
        )
        assert candidate.predictions == outputs[candidate.utterance_id].predictions
        assert candidate.model.version == "demo-1"
        earlier = [u.utterance_id for u in utterances if u.conversation_id == source.conversation_id]
        earlier = earlier[: source.turn]
        assert [t.utterance_id for t in candidate.context] == earlier[len(earlier) - len(candidate.context) :]
        assert len(candidate.context) == min(source.turn or 0, 5)  # PARLEY_WORKER_STATE_RECENT
        assert 0.0 <= candidate.scores.score <= 1.0
    await wait_committed(kafka_settings, worker.env["PARLEY_WORKER_CONSUMER_GROUP"], worker_topics.utterances)
    assert worker.stop() == 0
