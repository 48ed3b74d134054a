"""The Redis pointer and the rebuild loop against the real Kafka and Redis."""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from engines.events import EngineFailed, EngineReady, ModelTrained, decode_model_event
from engines.pointer import PointerStore
from engines.publish import publish
from engines.registry import Registry
from engines.settings import EngineBuilderSettings
from engines.watch import Watcher
from parley.clients import redis_client
from parley.connections import KafkaSettings, RedisSettings, TopicSettings
from stream.tail import read

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_promote_rollback_and_history(redis_settings: RedisSettings) -> None:
    """Promotions stack up in the history; promoting the current again is a no-op; rollback restores."""
    client = redis_client(redis_settings)
    store = PointerStore(client, redis_settings.key_prefix)
    try:
        assert await store.get("student") is None
        await store.promote("student", "v1", "onnxruntime-fp32-cpu-1.32.0", "onnxruntime")
        await store.promote("student", "v2", "onnxruntime-int8-cpu-1.32.0", "onnxruntime")
        await store.promote("student", "v2", "onnxruntime-int8-cpu-1.32.0", "onnxruntime")
        assert (await store.get("student")).version == "v2"
        assert [h.version for h in await store.history("student")] == ["v1"]
        back = await store.rollback("student")
        assert back.version == "v1"
        assert (await store.get("student")).engine_id == "onnxruntime-fp32-cpu-1.32.0"
        assert await store.get("student", target="gpu-sm90") is None  # each node kind has its own pointer
        with pytest.raises(Exception, match="no earlier version"):
            await store.rollback("student")
    finally:
        await client.aclose()


async def _events(kafka: KafkaSettings, topic: str, n: int) -> list:
    return [
        decode_model_event(r.value)
        async for r in read(kafka, topic, start="beginning", max_messages=n, idle_timeout_s=15)
    ]


async def test_watch_builds_promotes_and_ignores_replays(
    registered,
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    topic_factory: Callable[..., Awaitable[str]],
    group_factory: Callable[[], str],
    tmp_path: Path,
) -> None:
    """model_trained → engines built and verified, pointer moved, engine_ready published; a replay of
    the same event changes nothing; a broken bundle → engine_failed and the pointer stays."""
    _, bundle = registered
    registry = Registry(str(tmp_path / "registry"))
    shutil.copytree(
        bundle.path, Path(registry.root) / "student" / "v1", ignore=shutil.ignore_patterns("engines")
    )
    broken = Path(registry.root) / "student" / "v2-broken"
    shutil.copytree(bundle.path, broken, ignore=shutil.ignore_patterns("engines"))
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["version"] = "v2-broken"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    (broken / "model.onnx").write_bytes(b"corrupted")

    topic = await topic_factory(partitions=1, kind="events")
    settings = EngineBuilderSettings(
        kafka=kafka_settings,
        redis=redis_settings,
        topics=TopicSettings(model_events=topic),
        registry_uri=registry.uri,
        consumer_group=group_factory(),
    )
    trained = ModelTrained(model="student", version="v1", bundle_uri=f"{registry.uri}/student/v1")
    await publish(kafka_settings, topic, trained, trained)  # the second one is a replay

    outcomes = await Watcher(settings, target="cpu").run(idle_timeout_s=5)
    assert [o.status for o in outcomes] == ["ready", "replay"]
    events = await _events(kafka_settings, topic, 3)
    ready = [e for e in events if isinstance(e, EngineReady)]
    assert len(ready) == 1
    assert ready[0].backend == "onnxruntime"
    assert ready[0].precision == "int8"

    client = redis_client(redis_settings)
    store = PointerStore(client, redis_settings.key_prefix)
    try:
        current = await store.get("student", "cpu")
        assert current is not None
        assert current.version == "v1"
        assert current.engine_id.startswith("onnxruntime-int8-cpu-")
        assert ready[0].engine_uri.endswith(f"engines/{current.engine_id}.onnx")

        bad = ModelTrained(
            model="student", version="v2-broken", bundle_uri=f"{registry.uri}/student/v2-broken"
        )
        await publish(kafka_settings, topic, bad)
        outcomes = await Watcher(settings, target="cpu").run(idle_timeout_s=5)
        assert [o.status for o in outcomes] == ["failed"]
        failed = [e for e in await _events(kafka_settings, topic, 5) if isinstance(e, EngineFailed)]
        assert len(failed) == 1
        assert failed[0].stage == "load"
        assert "model.onnx" in failed[0].reason
        assert (await store.get("student", "cpu")).version == "v1"  # the old pointer is kept
    finally:
        await client.aclose()


def test_cli_promote_refuses_an_unverified_version(
    registered, tmp_path: Path, redis_settings_base: RedisSettings
) -> None:
    """`parley engine promote` on a version without a verified engine exits 1 and moves nothing."""
    from click.testing import CliRunner

    from parley.cli import cli

    _, bundle = registered
    registry = tmp_path / "reg"
    shutil.copytree(bundle.path, registry / "student" / "v9", ignore=shutil.ignore_patterns("engines"))
    manifest = json.loads((registry / "student" / "v9" / "manifest.json").read_text())
    manifest["version"] = "v9"
    (registry / "student" / "v9" / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(
        cli, ["engine", "promote", "student", "v9"], env={"PARLEY_ENGINE_REGISTRY_URI": str(registry)}
    )
    assert result.exit_code != 0
    assert "no verified" in str(result.exception)
