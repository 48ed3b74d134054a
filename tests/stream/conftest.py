"""Worker fixtures: the demo student serving from a test registry, and real worker processes.

Workers run as `parley stream worker` subprocesses, exactly as deployed, so tests can stop them with
SIGTERM or kill them with SIGKILL. Each test gets its own topics, consumer group, Redis key prefix
and web port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from parley.connections import KafkaSettings, RedisSettings, TopicSettings
from stream.topics import delete_topics, ensure_topics, parley_topics
from tests.ports import free_port, free_port_pair  # noqa: F401  (re-exported for the worker tests)


@pytest.fixture(scope="session")
def demo_registry(tmp_path_factory: pytest.TempPathFactory, redis_settings_base: RedisSettings):
    """A registry with demo-student/demo-1 built, verified and promoted under a session key prefix."""
    pytest.importorskip("torch", reason="building the demo student needs the train extra")
    import asyncio

    from train.demo import ensure_demo_bundle

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    registry = tmp_path_factory.mktemp("worker-registry")
    redis = redis_settings_base.model_copy(update={"key_prefix": f"parley-wtest-{uuid.uuid4().hex[:8]}:"})
    asyncio.run(ensure_demo_bundle(str(registry), redis, tmp_path_factory.mktemp("demo-work")))
    return str(registry), redis


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    web_port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        path = self.log_path.with_suffix(f".{self.starts}.log")
        self.logs.append(path)
        with path.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "parley.cli", "stream", "worker"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def readyz(self) -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/readyz", timeout=2) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())
        except OSError:
            return None

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            status = self.readyz()
            if status and status.get("ready"):
                return
            time.sleep(0.5)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        text = "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())
        return "\n".join(line for line in text.splitlines() if "DEBUG" not in line)[-6000:]


@pytest.fixture
async def worker_topics(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str]
) -> Iterator[TopicSettings]:
    names = TopicSettings(
        utterances=unique_name("in"),
        utterance_labels=unique_name("out"),
        utterances_dlq=unique_name("dlq"),
        model_events=unique_name("events"),
        partitions=3,
    )
    await ensure_topics(kafka_settings, parley_topics(names))
    yield names
    await delete_topics(kafka_settings, names.all_names())


@pytest.fixture
def worker_factory(
    kafka_settings: KafkaSettings,
    demo_registry,
    worker_topics: TopicSettings,
    tmp_path: Path,
    group_factory: Callable[[], str],
) -> Iterator[Callable[..., WorkerProcess]]:
    registry, redis = demo_registry
    group = group_factory()
    workers: list[WorkerProcess] = []

    def make(**overrides: str) -> WorkerProcess:
        port = free_port()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PARLEY_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "PARLEY_REDIS_HOST": redis.host,
            "PARLEY_REDIS_PORT": str(redis.port),
            "PARLEY_REDIS_KEY_PREFIX": redis.key_prefix,
            "PARLEY_TOPIC_UTTERANCES": worker_topics.utterances,
            "PARLEY_TOPIC_UTTERANCE_LABELS": worker_topics.utterance_labels,
            "PARLEY_TOPIC_UTTERANCES_DLQ": worker_topics.utterances_dlq,
            "PARLEY_TOPIC_MODEL_EVENTS": worker_topics.model_events,
            "PARLEY_WORKER_CONSUMER_GROUP": group,
            "PARLEY_WORKER_REGISTRY_URI": registry,
            "PARLEY_WORKER_MODEL": "demo-student",
            "PARLEY_WORKER_WEB_PORT": str(port),
            "PARLEY_WORKER_WEB_HOST": "127.0.0.1",
            "PARLEY_WORKER_LOG_FORMAT": "json",
            "PARLEY_WORKER_POINTER_POLL_S": "2",
            **overrides,
        }
        worker = WorkerProcess(env, tmp_path / f"worker-{len(workers)}", port)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        if worker.proc is not None:
            worker.stop(signal.SIGKILL, timeout=10)


TopicFactory = Callable[..., Awaitable[str]]
