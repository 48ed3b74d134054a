"""Shared fixtures: the real Kafka and Redis, and factories for unique topics, groups and key prefixes.

The services are the ones scripts/kafka.sh and scripts/redis.sh start. A session fixture starts
them when they are not answering (and stops what it started); point PARLEY_KAFKA_BOOTSTRAP_SERVERS
or PARLEY_REDIS_HOST/PORT elsewhere to test against other servers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from parley.connections import KafkaSettings, RedisSettings

# Two shared cores, often busy with a training run: judge properties by their results, not their speed.
settings.register_profile("parley", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("parley")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import probe  # noqa: E402  (scripts/probe.py: the same wire-level checks the service scripts use)

_LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def _gpu_missing() -> str | None:
    """Why GPU tests cannot run here, or None when a CUDA GPU is visible to torch."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install 'parley[train]')"
    if not torch.cuda.is_available():
        return "no NVIDIA GPU visible to torch on this machine; run on a GPU node (the device machine)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    reason = _gpu_missing()
    if reason is not None:
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(pytest.mark.skip(reason=reason))


def _ensure_service(
    kind: str, host: str, port: int, answers: Callable[[], bool], env: dict[str, str]
) -> bool:
    """Start a local service with its script if it does not answer; True when this call started it."""
    if answers():
        return False
    if host not in _LOCAL_HOSTS:
        pytest.exit(f"{kind} at {host}:{port} does not answer, and parley only starts local services", 3)
    result = subprocess.run(
        ["bash", str(SCRIPTS / f"{kind}.sh"), "up"], env={**os.environ, **env}, capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.exit(f"could not start {kind}:\n{result.stdout}\n{result.stderr}", 3)
    return True


def _stop_service(kind: str, env: dict[str, str]) -> None:
    subprocess.run(
        ["bash", str(SCRIPTS / f"{kind}.sh"), "down"], env={**os.environ, **env}, capture_output=True
    )


@pytest.fixture(scope="session")
def kafka_settings() -> Iterator[KafkaSettings]:
    """Settings of the real broker, started for the session if it is not running."""
    settings = KafkaSettings()
    host, _, port_text = settings.bootstrap_servers.split(",")[0].strip().rpartition(":")
    port = int(port_text)
    env = {"KAFKA_PORT": str(port)}

    def answers() -> bool:
        try:
            return bool(probe.kafka_metadata(host, port, timeout=2.0))
        except (OSError, ConnectionError):
            return False

    started = _ensure_service("kafka", host, port, answers, env)
    yield settings
    if started:
        _stop_service("kafka", env)


@pytest.fixture(scope="session")
def redis_settings_base() -> Iterator[RedisSettings]:
    settings = RedisSettings()
    env = {"REDIS_PORT": str(settings.port)}

    def answers() -> bool:
        try:
            return probe.redis_ping(settings.host, settings.port)
        except OSError:
            return False

    started = _ensure_service("redis", settings.host, settings.port, answers, env)
    yield settings
    if started:
        _stop_service("redis", env)


@pytest.fixture
async def redis_settings(redis_settings_base: RedisSettings) -> AsyncIterator[RedisSettings]:
    """Redis settings with a key prefix unique to the test; its keys are deleted afterwards."""
    from parley.clients import redis_client

    prefix = f"parley-test:{uuid.uuid4().hex[:10]}:"
    settings = redis_settings_base.model_copy(update={"key_prefix": prefix})
    yield settings
    client = redis_client(settings)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names unique to this test: unique_name('topic') -> 'test-<test>-topic-<random>'."""
    base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40]

    def make(kind: str) -> str:
        return f"test-{base}-{kind}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
async def topic_factory(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str]
) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Create topics with unique names for one test; they are deleted afterwards."""
    from stream.topics import TopicSpec, delete_topics, ensure_topics

    created: list[str] = []

    async def make(partitions: int = 3, kind: str = "topic") -> str:
        name = unique_name(kind)
        await ensure_topics(kafka_settings, [TopicSpec(name, partitions)])
        created.append(name)
        return name

    yield make
    if created:
        await delete_topics(kafka_settings, created)


@pytest.fixture
def group_factory(unique_name: Callable[[str], str]) -> Callable[[], str]:
    """Consumer group ids unique to the test."""
    return lambda: unique_name("group")
