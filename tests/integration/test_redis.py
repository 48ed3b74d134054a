"""Against the real Redis: round trip, pipelined writes, expiry, and a clear error when it is down."""

from __future__ import annotations

import pytest

from parley.clients import redis_client
from parley.connections import RedisSettings

pytestmark = pytest.mark.integration


async def test_round_trip_and_pipeline(redis_settings: RedisSettings) -> None:
    """Values written in one pipelined round trip are read back exactly."""
    client = redis_client(redis_settings)
    try:
        keys = [f"{redis_settings.key_prefix}conv:{i}" for i in range(50)]
        async with client.pipeline(transaction=False) as pipe:
            for i, key in enumerate(keys):
                pipe.hset(key, mapping={"turns": i, "last_intent": f"intent-{i}"})
                pipe.expire(key, 60)
            await pipe.execute()
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            values = await pipe.execute()
        assert [int(v[b"turns"]) for v in values] == list(range(50))
        assert values[7][b"last_intent"] == b"intent-7"
        ttl = await client.ttl(keys[0])
        assert 0 < ttl <= 60
    finally:
        await client.aclose()


async def test_unreachable_redis_raises_a_connection_error(redis_settings: RedisSettings) -> None:
    """A Redis that is not there fails with ConnectionError within the socket time-out."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    nowhere = redis_settings.model_copy(update={"port": 1, "socket_timeout_s": 1.0})
    client = redis_client(nowhere)
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()
