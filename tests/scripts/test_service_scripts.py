"""scripts/kafka.sh and scripts/redis.sh: idempotent, clear about what is wrong, nothing left behind."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.connections import KafkaSettings, RedisSettings
from tests.ports import free_port_pair

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _run(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A port held by a listening socket of this test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _pids(pattern: str) -> set[str]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return set(out.split())


@pytest.mark.parametrize("script", ["kafka.sh", "redis.sh"])
def test_port_in_use_is_a_clear_error(script: str, occupied_port: int, tmp_path: Path) -> None:
    """Another process on the port stops start-up with a message naming the port and that process."""
    env = {
        "KAFKA_PORT": str(occupied_port),
        "REDIS_PORT": str(occupied_port),
        "PARLEY_RUN_DIR": str(tmp_path),
    }
    result = _run(script, "up", env=env)
    assert result.returncode == 1
    assert f"port {occupied_port}" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr  # names the process that holds it (this test)


def test_old_java_is_refused_with_what_to_install(tmp_path: Path) -> None:
    """A Java older than 17 stops kafka.sh with the exact package to install."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "java").write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    (fake / "java").chmod(0o755)
    env = {
        "PATH": f"{fake}:{os.environ['PATH']}",
        "KAFKA_PORT": str(free_port_pair()),
        "PARLEY_RUN_DIR": str(tmp_path / "run"),
    }
    result = _run("kafka.sh", "up", env=env)
    assert result.returncode == 1
    assert "Java 17 or newer" in result.stderr
    assert "openjdk-17-jre-headless" in result.stderr


def test_missing_maven_is_refused_with_what_to_install(tmp_path: Path) -> None:
    """Without cached jars and without Maven, kafka.sh says to install Maven."""
    env = {
        "MAVEN": "mvn-not-installed",
        "PARLEY_CACHE_DIR": str(tmp_path / "cache"),
        "KAFKA_PORT": str(free_port_pair()),
        "PARLEY_RUN_DIR": str(tmp_path / "run"),
    }
    result = _run("kafka.sh", "up", env=env)
    assert result.returncode == 1
    assert "apt-get install -y maven" in result.stderr


def test_status_of_a_broker_that_is_not_running(tmp_path: Path) -> None:
    """status exits 3 and says 'not running' when no broker runs on the port."""
    result = _run(
        "kafka.sh", "status", env={"KAFKA_PORT": str(free_port_pair()), "PARLEY_RUN_DIR": str(tmp_path)}
    )
    assert result.returncode == 3
    assert "not running" in result.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_kafka_up_twice_then_down_leaves_nothing_behind(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """A second broker on spare ports: up, up again (harmless), down: no process, no data left."""
    port = free_port_pair()
    run_dir = tmp_path / "run"
    env = {"KAFKA_PORT": str(port), "PARLEY_RUN_DIR": str(run_dir), "KAFKA_HEAP": "384M"}
    pattern = f"{run_dir}/kafka-{port}/server.properties"
    try:
        first = _run("kafka.sh", "up", env=env)
        assert first.returncode == 0, first.stderr
        assert f"ready on 127.0.0.1:{port}" in first.stdout
        second = _run("kafka.sh", "up", env=env)
        assert second.returncode == 0
        assert "already running" in second.stdout
        assert len(_pids(pattern)) == 1
        assert (run_dir / f"kafka-{port}" / "logs" / "server.log").stat().st_size > 0  # the broker logs
    finally:
        down = _run("kafka.sh", "down", env=env)
    assert down.returncode == 0
    assert _pids(pattern) == set()
    assert not (run_dir / f"kafka-{port}").exists()


@pytest.mark.integration
def test_redis_up_twice_then_down_leaves_nothing_behind(
    redis_settings_base: RedisSettings, tmp_path: Path
) -> None:
    """A second Redis on a spare port: up, up again (harmless), down: no process left."""
    port = free_port_pair()
    env = {"REDIS_PORT": str(port), "PARLEY_RUN_DIR": str(tmp_path)}
    try:
        assert _run("redis.sh", "up", env=env).returncode == 0
        again = _run("redis.sh", "up", env=env)
        assert "already running" in again.stdout
        assert len(_pids(f"redis-server 127.0.0.1:{port}")) == 1
    finally:
        assert _run("redis.sh", "down", env=env).returncode == 0
    assert _pids(f"redis-server 127.0.0.1:{port}") == set()
