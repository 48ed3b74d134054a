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
from typing import Any

import pytest

from parley.connections import KafkaSettings, RedisSettings, TopicSettings
from stream.topics import committed_offsets, delete_topics, ensure_topics, parley_topics
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


@pytest.fixture(scope="session")
def demo_v2(demo_registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """demo-student/demo-2 (a second demo student, other weights) built in the demo registry:
    (version, engine_id). Not promoted."""
    from engines.build import build_onnxruntime
    from engines.export import build_bundle
    from engines.registry import Registry
    from train.demo import labelled_samples, write_demo_checkpoint

    registry = Registry(demo_registry[0])
    if not registry.has("demo-student", "demo-2"):
        ckpt = write_demo_checkpoint(tmp_path_factory.mktemp("ckpt2") / "ckpt", "demo-2", 1)
        rows = [{"text": t, "gold": g} for t, g in labelled_samples()]
        registry.put(build_bundle(ckpt, registry.staging_dir(), rows))
    built = build_onnxruntime(registry.open("demo-student", "demo-2"), registry, "int8")
    return "demo-2", built.record.engine_id


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

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of the worker's /metrics, None if absent."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
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

    def events(self, event: str) -> list[dict[str, Any]]:
        """parley's JSON log lines (of every start) whose event is ``event``."""
        found = []
        for path in self.logs:
            for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
                if line.startswith("{"):
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if record.get("event") == event:
                        found.append(record)
        return found

    def tail(self, lines: int = 40) -> str:
        text = "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())
        # Debug lines drown the cause of a failure: leave them out (JSON lines and console text).
        noisy = ('"level": "debug"', "[debug", "DEBUG")
        return "\n".join(line for line in text.splitlines() if not any(n in line for n in noisy))[-6000:]


@pytest.fixture
async def worker_topics(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str], request: pytest.FixtureRequest
) -> Iterator[TopicSettings]:
    """The worker's five topics, unique to the test; 3 partitions unless the test is marked
    ``@pytest.mark.partitions(n)``."""
    marker = request.node.get_closest_marker("partitions")
    names = TopicSettings(
        utterances=unique_name("in"),
        utterance_labels=unique_name("out"),
        utterances_dlq=unique_name("dlq"),
        model_events=unique_name("events"),
        labelling_queue=unique_name("queue"),
        partitions=marker.args[0] if marker else 3,
    )
    await ensure_topics(kafka_settings, parley_topics(names))
    yield names
    await delete_topics(kafka_settings, names.all_names())


async def group_members(kafka: KafkaSettings, group: str) -> int:
    """How many members the consumer group has right now (0 for a group never joined)."""
    import asyncio

    from aiokafka.errors import GroupCoordinatorNotAvailableError

    from parley.clients import kafka_admin

    admin = kafka_admin(kafka)
    await admin.start()
    try:
        for _ in range(40):  # on a fresh broker the offsets topic (and coordinator) comes up first
            try:
                (response,) = await admin.describe_consumer_groups([group])
                break
            except GroupCoordinatorNotAvailableError:
                await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"no coordinator for group {group} after 20 s")
    finally:
        await admin.close()
    (described,) = response.to_object()["groups"]
    return len(described["members"])


async def wait_committed(
    kafka: KafkaSettings, group: str, topic: str, timeout_s: float = 120.0
) -> dict[int, int]:
    """Wait until the group has committed the end of every partition of ``topic``."""
    import asyncio

    from stream.tail import end_offsets

    deadline = time.monotonic() + timeout_s
    while True:
        ends = {p: o for p, o in (await end_offsets(kafka, topic)).items() if o > 0}
        committed = await committed_offsets(kafka, group, topic)
        if all(committed.get(p) == o for p, o in ends.items()):
            return committed
        if time.monotonic() > deadline:
            raise AssertionError(f"committed {committed} never reached the end offsets {ends} of {topic}")
        await asyncio.sleep(0.5)


async def read_all(kafka: KafkaSettings, topic: str, idle_s: float = 3.0) -> list[Any]:
    """Every record of ``topic`` from the beginning, until nothing new arrived for ``idle_s``."""
    from stream.tail import read

    return [r async for r in read(kafka, topic, start="beginning", idle_timeout_s=idle_s)]


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
            "PARLEY_TOPIC_LABELLING_QUEUE": worker_topics.labelling_queue,
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


SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
async def own_redis(demo_registry, tmp_path: Path):
    """A Redis server of the test's own, holding the demo student's pointer: yields (port, control)
    where control('stop' | 'up') runs scripts/redis.sh (a stopped Redis comes back empty: it keeps
    no data) and control('freeze' | 'thaw') stops and continues its process (SIGSTOP/SIGCONT): an
    outage that keeps the data, as a hung or partitioned server would."""
    import asyncio

    from engines.pointer import PointerStore
    from parley.clients import redis_client

    _, redis = demo_registry
    port = free_port()
    env = {**os.environ, "REDIS_PORT": str(port), "PARLEY_RUN_DIR": str(tmp_path / "run")}

    def control(action: str) -> None:
        if action in ("freeze", "thaw"):
            pidfile = tmp_path / "run" / f"redis-{port}" / "redis.pid"
            if action == "thaw" and not pidfile.exists():
                return
            os.kill(int(pidfile.read_text()), signal.SIGSTOP if action == "freeze" else signal.SIGCONT)
            return
        result = subprocess.run(
            ["bash", str(SCRIPTS / "redis.sh"), action], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr

    await asyncio.to_thread(control, "up")
    main, own = redis_client(redis), redis_client(redis.model_copy(update={"port": port}))
    try:
        current = await PointerStore(main, redis.key_prefix).get("demo-student", "cpu")
        assert current is not None
        await PointerStore(own, redis.key_prefix).promote(
            "demo-student", current.version, current.engine_id, current.backend, "cpu"
        )
    finally:
        await main.aclose()
        await own.aclose()
    yield str(port), control
    await asyncio.to_thread(control, "thaw")
    await asyncio.to_thread(control, "down")
