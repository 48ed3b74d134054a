"""Which engine serves, with real demo engines: no session leaks when a loaded engine is superseded,
and an engine that fails every input is replaced (or holds the batch) instead of filling the DLQ."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from engines.base import EngineOptions
from engines.registry import Registry
from parley.contracts import RejectCode
from stream.contracts import TextLimits, Utterance, encode
from stream.engine_holder import EngineHolder, Serving
from stream.metrics import WorkerMetrics
from stream.processor import BatchProcessor, InRecord, Topics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engines(demo_registry, demo_v2: tuple[str, str]) -> dict[str, tuple[str, str]]:
    """Three engine keys (version, engine_id) of the demo student: demo-1, demo-2 INT8, demo-2 FP32."""
    from engines.build import build_onnxruntime

    registry = Registry(demo_registry[0])
    demo1 = registry.open("demo-student", "demo-1").engine_records()[0].engine_id
    fp32 = build_onnxruntime(registry.open("demo-student", "demo-2"), registry, "fp32").record.engine_id
    return {"v1": ("demo-1", demo1), "v2": demo_v2, "v2-fp32": ("demo-2", fp32)}


class _Recording(EngineHolder):
    """An EngineHolder that remembers every engine it loaded, to check each is freed."""

    def __init__(self, registry_uri: str) -> None:
        super().__init__(
            registry=Registry(registry_uri),
            pointers=None,
            model="demo-student",
            target="cpu",
            options=EngineOptions(precision="int8"),
            retry_s=0.05,
        )
        self.loaded: list[Serving] = []

    def _load_version(self, current: Any) -> Serving:
        serving = super()._load_version(current)
        self.loaded.append(serving)
        return serving


async def _loaded(holder: EngineHolder) -> None:
    assert holder._loader is not None
    await holder._loader


def _active(holder: _Recording) -> set[tuple[str, str]]:
    return {s.key for s in holder.loaded if s.engine.active}


async def test_a_pending_engine_is_freed_when_the_pointer_goes_back(demo_registry, engines) -> None:
    """Promote then roll back before the swap: the loaded engine is deactivated, nothing else."""
    holder = _Recording(demo_registry[0])
    holder.want(engines["v1"])
    await _loaded(holder)
    holder.want(engines["v2"])
    await _loaded(holder)
    assert _active(holder) == {engines["v1"], engines["v2"]}
    holder.want(engines["v1"])  # rolled back
    assert _active(holder) == {engines["v1"]}
    assert holder.swap_if_ready() is False
    holder.close()
    assert _active(holder) == set()


async def test_an_engine_superseded_while_loading_is_freed_and_the_newest_is_loaded(
    demo_registry, engines
) -> None:
    """Promote twice in quick succession: the first engine is freed when its load completes, the
    second becomes the pending one; a third promotion frees the pending one it replaces."""
    holder = _Recording(demo_registry[0])
    holder.want(engines["v1"])
    await _loaded(holder)
    holder.want(engines["v2"])
    await asyncio.sleep(0.01)  # the loader is now inside demo-2 INT8's load, in its thread
    holder.want(engines["v2-fp32"])
    await _loaded(holder)
    assert _active(holder) == {engines["v1"], engines["v2-fp32"]}
    holder.want(engines["v2"])
    await _loaded(holder)
    assert _active(holder) == {engines["v1"], engines["v2"]}
    assert holder.swap_if_ready() is True
    assert holder.current is not None
    assert holder.current.key == engines["v2"]
    assert holder.previous is not None
    assert holder.previous.key == engines["v1"]  # kept as the fallback
    assert len(holder.loaded) == 4
    holder.close()
    assert _active(holder) == set()


class _Sink:
    """Collects what the processor publishes; every send is acknowledged at once."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[object]:
        self.records.append((topic, key, value))
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _batch(n: int) -> list[InRecord]:
    return [
        InRecord(
            key=b"c",
            value=encode(
                Utterance(conversation_id="c", utterance_id=f"u{i}", text=f"where is my order {i}?")
            ),
            topic="in",
            partition=0,
            offset=i,
            timestamp_ms=None,
        )
        for i in range(n)
    ]


def _processor(holder: EngineHolder, sink: _Sink, metrics: WorkerMetrics) -> BatchProcessor:
    return BatchProcessor(
        engines=holder,
        store=None,
        publish=sink,
        topics=Topics(labels="out", dlq="dlq"),
        limits=TextLimits(),
        metrics=metrics,
        broken_retry_s=0.1,
    )


async def test_an_engine_that_fails_every_input_falls_back_to_the_previous_one(
    demo_registry, engines
) -> None:
    """After a swap the new engine fails every call (here: a real engine, deactivated): the batch is
    labelled by the previous engine, nothing goes to the DLQ, and the fallback is counted."""
    holder = _Recording(demo_registry[0])
    holder.want(engines["v1"])
    await _loaded(holder)
    holder.want(engines["v2"])
    await _loaded(holder)
    holder.swap_if_ready()
    assert holder.current is not None
    holder.current.engine.deactivate()  # loads, then fails every call
    sink, metrics = _Sink(), WorkerMetrics()
    processor = _processor(holder, sink, metrics)
    sent = await processor.process(_batch(6))
    assert sent.report.labelled == 6
    assert sent.report.dead_lettered == 0
    assert {t for t, _, _ in sink.records} == {"out"}
    assert holder.current.key == engines["v1"]
    assert metrics.engine_failures._value.get() == 1  # type: ignore[attr-defined]
    processor.close()
    holder.close()


async def test_an_engine_that_fails_every_input_with_no_fallback_holds_the_batch_until_one_works(
    demo_registry, engines
) -> None:
    """The only engine fails every call: the batch is held (nothing sent, not healthy, so not
    ready) until a working engine is loaded, which then labels it; nothing goes to the DLQ."""
    holder = _Recording(demo_registry[0])
    holder.want(engines["v1"])
    await _loaded(holder)
    assert holder.current is not None
    holder.current.engine.deactivate()
    sink, metrics = _Sink(), WorkerMetrics()
    processor = _processor(holder, sink, metrics)
    batch = asyncio.create_task(processor.process(_batch(4)))
    await asyncio.sleep(1.0)
    assert not batch.done()
    assert holder.ready is False
    assert sink.records == []
    holder.want(engines["v2"])  # a new version is promoted
    sent = await asyncio.wait_for(batch, 60)
    assert sent.report.labelled == 4
    assert {_version(v) for _, _, v in sink.records} == {"demo-2"}
    assert holder.ready is True
    processor.close()
    holder.close()


async def test_a_bad_input_still_fails_alone_when_the_engine_works(demo_registry, engines) -> None:
    """The engine returns a non-finite row for one input of a batch (its output wrapped to do so):
    that input alone is filed (not_finite) and the others are labelled."""
    import numpy as np

    holder = _Recording(demo_registry[0])
    holder.want(engines["v1"])
    await _loaded(holder)
    assert holder.current is not None
    engine = holder.current.engine
    real = engine.infer

    def nan_for_second(texts: Any, contexts: Any = None) -> Any:
        probs = real(texts, contexts)
        for p in probs.values():
            if len(texts) > 1:
                p[1] = np.nan
        return probs

    engine.infer = nan_for_second  # type: ignore[method-assign]
    sink, metrics = _Sink(), WorkerMetrics()
    processor = _processor(holder, sink, metrics)
    sent = await processor.process(_batch(5))
    assert sent.report.labelled == 4
    assert sent.report.dlq_reasons == {RejectCode.NOT_FINITE.value: 1}
    processor.close()
    holder.close()


def _version(value: bytes) -> str:
    from stream.contracts import UtteranceLabels

    return UtteranceLabels.model_validate_json(value).model.version


async def test_the_engine_two_swaps_back_is_freed_on_the_engine_thread_after_its_calls(
    demo_registry, engines
) -> None:
    """Three versions served in turn: the one two swaps back goes to ``retire`` (the worker's engine
    thread, queued after any call still running on it, e.g. the labelling tap's), not freed in place."""
    from stream.inference import Inference

    holder = _Recording(demo_registry[0])
    inference = Inference()
    retired: list[tuple[str, str]] = []

    def retire(engine: Any) -> None:
        retired.append(next(s.key for s in holder.loaded if s.engine is engine))
        inference.retire(engine)

    holder.retire = retire
    for key in ("v1", "v2", "v2-fp32"):
        holder.want(engines[key])
        await _loaded(holder)
        holder.swap_if_ready()
    assert retired == [engines["v1"]]
    inference.close()  # runs what was queued on the engine thread
    assert _active(holder) == {engines["v2"], engines["v2-fp32"]}
    holder.close()
