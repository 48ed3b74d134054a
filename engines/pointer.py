"""The "current" pointer: which bundle version (and engine) serves a model on a kind of node, in Redis.

    <prefix>current:<model>:<target>   hash: version, engine_id, backend, promoted_at
    <prefix>history:<model>:<target>   list of earlier pointers (JSON), newest first, for rollback

``target`` names a kind of node: ``cpu`` for ONNX Runtime on CPU, ``gpu-sm90`` for TensorRT plans
built for compute capability 9.0, and so on; each kind compiles and verifies its own engines, so each
has its own pointer. Workers read it at start-up (the source of truth) and follow ``engine_ready``.
Moving it is one MULTI/EXEC transaction: pointer and history change together or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from engines.errors import EngineError

if TYPE_CHECKING:
    from redis.asyncio import Redis

HISTORY_LIMIT: Final = 50


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Current:
    model: str
    target: str
    version: str
    engine_id: str
    backend: str
    promoted_at: str


class PointerStore:
    def __init__(self, redis: Redis, prefix: str = "parley:") -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, kind: str, model: str, target: str) -> str:
        return f"{self.prefix}{kind}:{model}:{target}"

    async def get(self, model: str, target: str = "cpu") -> Current | None:
        raw = await self.redis.hgetall(self._key("current", model, target))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return Current(model=model, target=target, **fields)

    async def history(self, model: str, target: str = "cpu") -> list[Current]:
        items = await self.redis.lrange(self._key("history", model, target), 0, -1)
        return [Current(**json.loads(item)) for item in items]

    async def promote(
        self, model: str, version: str, engine_id: str, backend: str, target: str = "cpu"
    ) -> Current:
        """Point ``model`` on ``target`` at a verified engine; the previous pointer goes to the history.
        Promoting what is already current changes nothing."""
        now = datetime.now(UTC).isoformat()
        await self.redis.eval(
            _PROMOTE,
            2,
            self._key("current", model, target),
            self._key("history", model, target),
            version,
            engine_id,
            backend,
            now,
            str(HISTORY_LIMIT),
            model,
            target,
        )
        current = await self.get(model, target)
        assert current is not None
        return current

    async def rollback(self, model: str, target: str = "cpu") -> Current:
        """Restore the pointer from before the last promotion (atomically: pop and set together)."""
        raw = await self.redis.eval(
            _ROLLBACK, 2, self._key("current", model, target), self._key("history", model, target)
        )
        if raw is None:
            raise EngineError(f"{model} on {target} has no earlier version to roll back to")
        return Current(**json.loads(raw))


# Both scripts run atomically inside Redis: a pointer and its history never disagree.
_PROMOTE: Final = """
local cur = redis.call('HGETALL', KEYS[1])
if #cur > 0 then
  local t = {}
  for i = 1, #cur, 2 do t[cur[i]] = cur[i + 1] end
  if t.version == ARGV[1] and t.engine_id == ARGV[2] then return 0 end
  t.model = ARGV[6]
  t.target = ARGV[7]
  redis.call('LPUSH', KEYS[2], cjson.encode(t))
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'engine_id', ARGV[2], 'backend', ARGV[3],
           'promoted_at', ARGV[4])
return 1
"""

_ROLLBACK: Final = """
local prev = redis.call('LPOP', KEYS[2])
if not prev then return nil end
local p = cjson.decode(prev)
redis.call('HSET', KEYS[1], 'version', p.version, 'engine_id', p.engine_id, 'backend', p.backend,
           'promoted_at', p.promoted_at)
return prev
"""
