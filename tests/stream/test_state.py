"""Conversation state against the real Redis: replays keep their first context and do not count
twice, memory per conversation stays bounded whatever arrives, and an outage's updates wait."""

from __future__ import annotations

import pytest

from parley.connections import RedisSettings
from stream.state import CONTEXT_CHARS, ConversationStore, StateUpdate, Turn, context_for

pytestmark = pytest.mark.integration


def _updates(cid: str, n: int, text: str = "turn {i}", start: int = 0) -> list[StateUpdate]:
    return [StateUpdate(cid, f"{cid}-u{i}", text.format(i=i), 0.5, "inform") for i in range(start, start + n)]


def test_a_new_utterance_gets_the_newest_turns_and_a_replay_the_turns_it_had() -> None:
    """context_for: new utterances see the last n turns (and join the history); a replayed one sees
    the n turns before its own entry."""
    history = [Turn("a", "one"), Turn("b", "two"), Turn("c", "three")]
    assert context_for(history, "d", "four", 2) == "two three"
    assert [t.utterance_id for t in history] == ["a", "b", "c", "d"]
    assert context_for(history, "b", "two", 2) == "one"
    assert context_for(history, "a", "one", 2) is None
    assert len(history) == 4  # replays are not appended


async def test_replayed_utterances_get_their_first_context_from_redis(redis_settings: RedisSettings) -> None:
    """After six turns are stored, a replay of turn 3 is given turns 1-2 from Redis, not turns 4-5."""
    store = ConversationStore(redis_settings, ttl_s=60, recent=10)
    try:
        await store.apply(_updates("c", 6))
        history = (await store.history(["c"]))["c"]
        assert [t.text for t in history] == [f"turn {i}" for i in range(6)]
        assert context_for(history, "c-u3", "turn 3", 2) == "turn 1 turn 2"
        assert context_for(history, "c-u6", "turn 6", 2) == "turn 4 turn 5"
    finally:
        await store.aclose()


async def test_a_replay_does_not_count_twice_or_move_the_rolling_sentiment(
    redis_settings: RedisSettings,
) -> None:
    """Applying the same utterances again reports the state without changing it."""
    store = ConversationStore(redis_settings, ttl_s=60, recent=3)
    try:
        first = await store.apply(_updates("r", 4))
        again = await store.apply(_updates("r", 4))
        assert [s.turn_count for s in first] == [1, 2, 3, 4]
        assert {s.turn_count for s in again} == {4}
        assert {s.rolling_sentiment for s in again} == {first[-1].rolling_sentiment}
    finally:
        await store.aclose()


async def test_memory_per_conversation_is_bounded_whatever_arrives(redis_settings: RedisSettings) -> None:
    """3,000 utterances with 200-character ids and 10,000-character texts: Redis keeps the newest
    100 ids and 5 texts cut to CONTEXT_CHARS, so the conversation's keys stay under 64 KB."""
    from parley.clients import redis_client

    store = ConversationStore(redis_settings, ttl_s=60, recent=5, seen_max=100)
    client = redis_client(redis_settings)
    try:
        cid = "m" * 200
        for start in range(0, 3000, 500):
            await store.apply(_updates(cid, 500, text="x{i}" + "y" * 10_000, start=start))
        keys = store._keys(cid)
        assert await client.zcard(keys[1]) == 100
        history = (await store.history([cid]))[cid]
        assert len(history) == 5
        assert all(len(t.text) <= CONTEXT_CHARS for t in history)
        used = sum([await client.memory_usage(k) or 0 for k in keys])
        assert used < 64 * 1024, used
        # The newest ids are still recognised as replays.
        (state,) = await store.apply(_updates(cid, 1, start=2999))
        assert state.turn_count == 3000
    finally:
        await store.aclose()
        await client.aclose()


async def test_updates_wait_in_a_bounded_backlog_while_redis_is_away(redis_settings: RedisSettings) -> None:
    """Redis unreachable: every state is UNAVAILABLE, the updates wait, and past backlog_max the
    oldest are dropped and counted."""
    away = redis_settings.model_copy(update={"port": 1, "socket_timeout_s": 0.2})
    dropped: list[int] = []
    store = ConversationStore(away, ttl_s=60, backlog_max=5, backoff_s=(0.0, 0.0), on_dropped=dropped.append)
    try:
        for i in range(3):
            states = await store.apply(_updates("b", 4, start=4 * i))
            assert {s.available for s in states} == {False}
        assert store.backlog == 5
        assert store.backlog_dropped == 7
        assert sum(dropped) == 7  # reported as it happens (the worker counts it in a metric)
    finally:
        await store.aclose()
