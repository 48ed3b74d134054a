"""Per-conversation state in Redis: turn count, rolling sentiment, last intent, the last few utterances.

One pipelined round trip per batch: each utterance is one call of a Lua script that runs atomically
inside Redis. The script records the utterance_id first and changes the state only when the id is
new, so a replayed utterance (at-least-once delivery, a restarted worker) never counts twice. Keys
share a hash tag per conversation, so they live in one Redis Cluster slot:

    <prefix>conv:{<conversation_id>}:state    hash        turns, sentiment, last_intent
    <prefix>conv:{<conversation_id>}:ids      sorted set  utterance_ids already counted, scored by turn
    <prefix>conv:{<conversation_id>}:history  list        "<utterance_id>\\x1f<text>", newest first

Memory per conversation is bounded whatever arrives: ``ids`` keeps the newest ``seen_max`` ids (ids
are at most 256 characters), ``history`` the newest ``recent`` entries with texts cut to
:data:`CONTEXT_CHARS`, and all three expire ``ttl_s`` after the conversation's last utterance.

``history`` carries ids so that a replayed utterance is given the context it had the first time:
the turns before it in the history, not the newest ones (:func:`context_for`).

When Redis cannot be reached, labelling goes on: outputs say ``available: false``, the store retries
after an exponential back-off instead of stalling every batch on a time-out, and the updates it
could not write wait in a bounded backlog that is written, in order, before anything newer once
Redis answers again, so counts and rolling sentiment come out exact after an outage. A backlog that
overflows drops its oldest updates and says so (``parley_state_backlog_dropped``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from parley.clients import redis_client
from parley.connections import RedisSettings
from stream.contracts import ConversationState

log = structlog.get_logger(__name__)

UNAVAILABLE: Final = ConversationState(available=False)
CONTEXT_CHARS: Final = 1000
"""Characters of a text kept for context (in history and in a batch alike): models read at most a
few hundred tokens of context, and the cut keeps Redis memory bounded."""
_SEP: Final = "\x1f"  # identifiers cannot hold control characters, so the first \x1f ends the id

_APPLY: Final = """
local turns
if redis.call('ZSCORE', KEYS[2], ARGV[1]) == false then
  turns = redis.call('HINCRBY', KEYS[1], 'turns', 1)
  redis.call('ZADD', KEYS[2], turns, ARGV[1])
  local keep = tonumber(ARGV[8])
  if redis.call('ZCARD', KEYS[2]) > keep then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(keep + 1)) end
  if ARGV[4] ~= '' then
    local s = tonumber(ARGV[4])
    local prev = redis.call('HGET', KEYS[1], 'sentiment')
    if prev then s = tonumber(ARGV[6]) * s + (1 - tonumber(ARGV[6])) * tonumber(prev) end
    redis.call('HSET', KEYS[1], 'sentiment', tostring(s))
  end
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'last_intent', ARGV[5]) end
  if tonumber(ARGV[7]) > 0 then
    redis.call('LPUSH', KEYS[3], ARGV[1] .. '\\31' .. ARGV[3])
    redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
  end
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


@dataclass(frozen=True, slots=True)
class Turn:
    """One entry of a conversation's history."""

    utterance_id: str | None
    text: str


def turns_before(history: list[Turn], utterance_id: str, text: str, n: int) -> list[Turn]:
    """The (at most ``n``) turns before this utterance: for a replay, the ones before its own entry
    (what it was given the first time); for a new utterance, the newest ones, after which it is
    appended to ``history`` (oldest first) so later utterances of the same batch see it."""
    for i in range(len(history) - 1, -1, -1):
        if history[i].utterance_id == utterance_id:
            return history[max(i - n, 0) : i] if n > 0 else []
    before = history[-n:] if n > 0 else []
    history.append(Turn(utterance_id, text[:CONTEXT_CHARS]))
    return before


def context_for(history: list[Turn], utterance_id: str, text: str, n: int) -> str | None:
    """:func:`turns_before`, joined into the text a context model reads."""
    return " ".join(t.text for t in turns_before(history, utterance_id, text, n)) or None


class ConversationStore:
    def __init__(
        self,
        settings: RedisSettings,
        *,
        ttl_s: int,
        recent: int = 5,
        alpha: float = 0.3,
        seen_max: int = 1000,
        backlog_max: int = 20_000,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        on_dropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self.recent = recent
        self.alpha = alpha
        self.seen_max = seen_max
        self._client = redis_client(settings)
        self._script: Any = self._client.register_script(_APPLY)
        self._backoff_min, self._backoff_max = backoff_s
        self._backoff = 0.0
        self._retry_at = 0.0
        self._backlog: deque[StateUpdate] = deque()
        self.backlog_max = backlog_max
        self.backlog_dropped = 0
        self._on_dropped = on_dropped

    @property
    def available(self) -> bool:
        return self._backoff == 0.0

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def _keys(self, conversation_id: str) -> list[str]:
        base = f"{self.settings.key_prefix}conv:{{{conversation_id}}}"
        return [f"{base}:state", f"{base}:ids", f"{base}:history"]

    def _may_try(self) -> bool:
        return self._backoff == 0.0 or time.monotonic() >= self._retry_at

    def _failed(self, exc: Exception) -> None:
        self._backoff = min(max(self._backoff * 2, self._backoff_min), self._backoff_max)
        self._retry_at = time.monotonic() + self._backoff
        log.warning(
            "redis unavailable; labelling goes on without state",
            address=self.settings.address,
            retry_in_s=self._backoff,
            backlog=len(self._backlog),
            error=str(exc)[:300],
        )

    def _recovered(self) -> None:
        if self._backoff:
            log.info("redis reachable again", address=self.settings.address)
        self._backoff = 0.0

    def _keep(self, updates: Sequence[StateUpdate]) -> None:
        self._backlog.extend(updates)
        overflow = len(self._backlog) - self.backlog_max
        if overflow > 0:
            for _ in range(overflow):
                self._backlog.popleft()
            self.backlog_dropped += overflow
            self._on_dropped(overflow)
            log.warning(
                "state backlog full: oldest updates dropped; turn counts of their conversations will be low",
                dropped=overflow,
                kept=len(self._backlog),
            )

    async def apply(self, updates: Sequence[StateUpdate]) -> list[ConversationState]:
        """Record a batch of utterances (in order, after any backlog) and return each conversation's
        state after it; UNAVAILABLE for every one when Redis does not answer."""
        from redis.exceptions import RedisError

        if not updates:
            return []
        if not self._may_try():
            self._keep(updates)
            return [UNAVAILABLE] * len(updates)
        try:
            while self._backlog:  # what waited through an outage goes first, in chunks
                chunk = [self._backlog[i] for i in range(min(len(self._backlog), 1000))]
                await self._run(chunk)
                for _ in chunk:
                    self._backlog.popleft()
            results = await self._run(updates)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            self._keep(updates)
            return [UNAVAILABLE] * len(updates)
        self._recovered()
        return [_view(r) for r in results]

    async def _run(self, updates: Sequence[StateUpdate]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for u in updates:
                await self._script(
                    keys=self._keys(u.conversation_id),
                    args=[
                        u.utterance_id,
                        self.ttl_s,
                        u.text[:CONTEXT_CHARS],
                        "" if u.sentiment is None else repr(u.sentiment),
                        u.intent or "",
                        self.alpha,
                        self.recent,
                        self.seen_max,
                    ],
                    client=pipe,
                )
            # One conversation's key of the wrong type fails its own script, not the batch.
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def history(self, conversation_ids: Sequence[str]) -> dict[str, list[Turn]]:
        """Each conversation's kept history, oldest first; {} when Redis is unavailable."""
        from redis.exceptions import RedisError

        unique = list(dict.fromkeys(conversation_ids))
        if not unique or self.recent <= 0 or not self._may_try():
            return {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for cid in unique:
                    pipe.lrange(self._keys(cid)[2], 0, self.recent - 1)
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return {}
        self._recovered()
        return {
            cid: [_turn(t) for t in reversed(r)]
            for cid, r in zip(unique, results, strict=True)
            if isinstance(r, list)
        }

    async def aclose(self) -> None:
        await self._client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _turn(entry: bytes | str) -> Turn:
    text = _text(entry)
    uid, sep, rest = text.partition(_SEP)
    return Turn(uid, rest) if sep else Turn(None, text)


def _view(result: Any) -> ConversationState:
    if isinstance(result, Exception):
        log.warning("conversation state not updated", error=str(result)[:200])
        return UNAVAILABLE
    turns, sentiment, intent = (None if v is None else _text(v) for v in result)
    return ConversationState(
        available=True,
        turn_count=int(turns) if turns is not None else 0,
        rolling_sentiment=round(float(sentiment), 4) if sentiment is not None else None,
        last_intent=intent,
    )
