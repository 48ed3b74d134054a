"""Per-conversation state in Redis: turn count, rolling sentiment, last intent, the last few utterances.

One pipelined round trip per batch: each utterance is one call of a Lua script that runs atomically
inside Redis. The script adds the utterance_id to the conversation's *seen* set first and changes the
state only when the id is new, so a replayed utterance (at-least-once delivery, a restarted worker)
never counts twice. Keys share a hash tag per conversation, so they live in one Redis Cluster slot:

    <prefix>conv:{<conversation_id>}:state    hash  turns, sentiment, last_intent
    <prefix>conv:{<conversation_id>}:seen     set   utterance_ids already counted
    <prefix>conv:{<conversation_id>}:recent   list  the last texts, newest first (model context)

All three expire ``ttl_s`` after the conversation's last utterance. When Redis cannot be reached,
labelling goes on: the batch's outputs say ``available: false`` and the store retries after an
exponential back-off instead of stalling every batch on a time-out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from parley.clients import redis_client
from parley.connections import RedisSettings
from stream.contracts import ConversationState

log = structlog.get_logger(__name__)

UNAVAILABLE: Final = ConversationState(available=False)

_APPLY: Final = """
local new = redis.call('SADD', KEYS[2], ARGV[1])
if new == 1 then
  redis.call('HINCRBY', KEYS[1], 'turns', 1)
  if ARGV[4] ~= '' then
    local s = tonumber(ARGV[4])
    local prev = redis.call('HGET', KEYS[1], 'sentiment')
    if prev then s = tonumber(ARGV[6]) * s + (1 - tonumber(ARGV[6])) * tonumber(prev) end
    redis.call('HSET', KEYS[1], 'sentiment', tostring(s))
  end
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'last_intent', ARGV[5]) end
  redis.call('LPUSH', KEYS[3], ARGV[3])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return redis.call('HMGET', KEYS[1], 'turns', 'sentiment', 'last_intent')
"""


@dataclass(frozen=True, slots=True)
class StateUpdate:
    conversation_id: str
    utterance_id: str
    text: str
    sentiment: float | None
    """This utterance's sentiment in [-1, 1] (P(positive) - P(negative)), None if no sentiment task."""
    intent: str | None


class ConversationStore:
    def __init__(
        self,
        settings: RedisSettings,
        *,
        ttl_s: int,
        recent: int = 5,
        alpha: float = 0.3,
        backoff_s: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self.recent = recent
        self.alpha = alpha
        self._client = redis_client(settings)
        self._script: Any = self._client.register_script(_APPLY)
        self._backoff_min, self._backoff_max = backoff_s
        self._backoff = 0.0
        self._retry_at = 0.0

    @property
    def available(self) -> bool:
        return self._backoff == 0.0

    def _keys(self, conversation_id: str) -> list[str]:
        base = f"{self.settings.key_prefix}conv:{{{conversation_id}}}"
        return [f"{base}:state", f"{base}:seen", f"{base}:recent"]

    def _may_try(self) -> bool:
        return self._backoff == 0.0 or time.monotonic() >= self._retry_at

    def _failed(self, exc: Exception) -> None:
        self._backoff = min(max(self._backoff * 2, self._backoff_min), self._backoff_max)
        self._retry_at = time.monotonic() + self._backoff
        log.warning(
            "redis unavailable; labelling goes on without state",
            address=self.settings.address,
            retry_in_s=self._backoff,
            error=str(exc),
        )

    def _recovered(self) -> None:
        if self._backoff:
            log.info("redis reachable again", address=self.settings.address)
        self._backoff = 0.0

    async def apply(self, updates: Sequence[StateUpdate]) -> list[ConversationState]:
        """Record a batch of utterances (in order) and return each conversation's state after it."""
        from redis.exceptions import RedisError

        if not updates:
            return []
        if not self._may_try():
            return [UNAVAILABLE] * len(updates)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for u in updates:
                    await self._script(
                        keys=self._keys(u.conversation_id),
                        args=[
                            u.utterance_id,
                            self.ttl_s,
                            u.text,
                            "" if u.sentiment is None else repr(u.sentiment),
                            u.intent or "",
                            self.alpha,
                            self.recent,
                        ],
                        client=pipe,
                    )
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return [UNAVAILABLE] * len(updates)
        self._recovered()
        return [_view(r) for r in results]

    async def recent_texts(self, conversation_ids: Sequence[str], n: int) -> dict[str, list[str]]:
        """The last ``n`` texts of each conversation, oldest first; {} when Redis is unavailable."""
        from redis.exceptions import RedisError

        unique = list(dict.fromkeys(conversation_ids))
        if not unique or n <= 0 or not self._may_try():
            return {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for cid in unique:
                    pipe.lrange(self._keys(cid)[2], 0, n - 1)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return {}
        self._recovered()
        return {cid: [_text(t) for t in reversed(r)] for cid, r in zip(unique, results, strict=True)}

    async def aclose(self) -> None:
        await self._client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _view(result: Sequence[Any]) -> ConversationState:
    turns, sentiment, intent = (None if v is None else _text(v) for v in result)
    return ConversationState(
        available=True,
        turn_count=int(turns) if turns is not None else 0,
        rolling_sentiment=round(float(sentiment), 4) if sentiment is not None else None,
        last_intent=intent,
    )
