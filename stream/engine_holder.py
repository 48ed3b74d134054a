"""Which engine serves: loaded from the registry pointer, swapped between batches, never mid-batch.

At start-up the Redis pointer (``current:<model>:<target>``) is the source of truth; :meth:`start`
keeps trying (Redis down, no pointer yet, a version that does not load) with a back-off until an
engine serves or the worker stops. Afterwards the worker re-reads the pointer whenever
``engine_ready`` for its model arrives on ``model-events`` and every ``poll_s`` seconds. A new engine
is loaded and activated in a thread, off the event loop, while the current one keeps serving; the
processor calls :meth:`swap_if_ready` between batches, so a batch never mixes versions.

Every engine the holder activates is deactivated exactly once: a loaded engine the pointer no
longer names (promoted twice, or promoted then rolled back while it loaded) is freed at once, and
the engine before the current one is kept only as the fallback for an engine that turns out to fail
every input (:meth:`fall_back`). A version that failed to load is retried with a back-off, not on
every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from engines.base import Engine, EngineOptions, load_engine
from engines.bundle import Bundle
from engines.pointer import Current, PointerStore
from engines.registry import Registry

log = structlog.get_logger(__name__)

EngineKey = tuple[str, str]
"""(version, engine_id): what the pointer names."""


@dataclass(frozen=True)
class Serving:
    engine: Engine
    model: str
    version: str
    engine_id: str

    @property
    def key(self) -> EngineKey:
        return (self.version, self.engine_id)

    @property
    def backend(self) -> str:
        return self.engine.name

    @property
    def labels(self) -> dict[str, list[str]]:
        return {t.name: list(t.labels) for t in self.engine.bundle.manifest.tasks}

    @property
    def context_turns(self) -> int:
        return self.engine.bundle.manifest.context_turns


@dataclass
class _Retry:
    """Back-off for a version that failed to load: tried again at ``at``, waits doubling up to 5 min."""

    failures: int = 0
    at: float = 0.0

    def failed(self, base_s: float) -> float:
        self.failures += 1
        wait: float = min(base_s * 2.0 ** (self.failures - 1), 300.0)
        self.at = time.monotonic() + wait
        return wait


class EngineHolder:
    def __init__(
        self,
        *,
        registry: Registry,
        pointers: PointerStore | None,
        model: str,
        target: str,
        options: EngineOptions,
        bundle_path: Path | None = None,
        retry_s: float = 2.0,
    ) -> None:
        self.registry = registry
        self.pointers = pointers
        self.model = model
        self.target = target
        self.options = options
        self.bundle_path = bundle_path
        self.retry_s = retry_s
        self.current: Serving | None = None
        self.previous: Serving | None = None
        self.retire: Callable[[Engine], None] = lambda engine: engine.deactivate()
        """Frees an engine the holder no longer keeps. The worker routes it to the engine's own thread
        (stream.inference), so an engine is never freed under a call still running on it."""
        self.swapped_at: float | None = None
        """time.monotonic() of the last swap (stream.labelling_queue compares the two engines after it)."""
        self._pending: Serving | None = None
        self._wanted: EngineKey | None = None
        self._loader: asyncio.Task[None] | None = None
        self._retry: dict[EngineKey, _Retry] = {}
        self._broken: set[EngineKey] = set()
        self._ready = asyncio.Event()
        self.healthy = True
        """False while the current engine fails a known-good input and nothing can replace it."""
        self.on_event: Callable[[str], None] = lambda kind: None
        """Called with 'swap', 'fallback', 'broken' or 'load_failed' (the worker counts them)."""

    @property
    def ready(self) -> bool:
        return self.current is not None and self.healthy

    async def wait_ready(self) -> Serving:
        await self._ready.wait()
        assert self.current is not None
        return self.current

    # -- start-up ---------------------------------------------------------------------------------
    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Load the first engine (the fixed bundle, or what the pointer names), trying again with a
        back-off whatever fails, until one serves (True) or ``stop`` is set (False)."""
        stop = stop or asyncio.Event()
        wait = self.retry_s
        while not stop.is_set():
            try:
                if self.bundle_path is not None:
                    self._install(await asyncio.to_thread(self._load_path, self.bundle_path))
                    return True
                assert self.pointers is not None
                pointer = await self.pointers.get(self.model, self.target)
                if pointer is None:
                    log.warning(
                        "no current engine yet: waiting for a promotion",
                        model=self.model,
                        target=self.target,
                        retry_in_s=wait,
                    )
                else:
                    self._install(await asyncio.to_thread(self._load_version, pointer))
                    return True
            except Exception as exc:  # Redis down, a missing version, a corrupt engine: wait, retry
                self.on_event("load_failed")
                log.error(
                    "no engine can serve yet; not consuming until one loads",
                    model=self.model,
                    target=self.target,
                    error=_short(exc),
                    retry_in_s=wait,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            wait = min(wait * 2, 30.0)
        return False

    # -- following the pointer --------------------------------------------------------------------
    async def refresh(self) -> None:
        """Re-read the pointer; load what it names in the background if it is new. Redis errors
        propagate: the caller logs them and tries again later."""
        if self.pointers is None:
            return
        pointer = await self.pointers.get(self.model, self.target)
        if pointer is None:
            return
        self.want((pointer.version, pointer.engine_id))

    def want(self, key: EngineKey) -> None:
        """The pointer names ``key``: make it the next engine (or drop a pending one it replaced)."""
        self._wanted = key
        if self.current is not None and key == self.current.key:
            self._drop_pending("the pointer went back to the serving engine")
            return
        if key in self._broken:
            return
        if self._pending is not None and key == self._pending.key:
            return
        retry = self._retry.get(key)
        if retry is not None and time.monotonic() < retry.at:
            return
        if self._loader is None or self._loader.done():
            self._loader = asyncio.create_task(self._load_wanted())

    async def _load_wanted(self) -> None:
        while (key := self._wanted) is not None:
            if self.current is not None and key == self.current.key:
                return
            if self._pending is not None and key == self._pending.key:
                return
            version, engine_id = key
            pointer = Current(self.model, self.target, version, engine_id, "", "")
            try:
                serving = await asyncio.to_thread(self._load_version, pointer)
            except Exception as exc:  # whatever breaks a new engine must not touch the serving one
                self.on_event("load_failed")
                wait = self._retry.setdefault(key, _Retry()).failed(self.retry_s * 5)
                log.error(
                    "new engine failed to load; the current one keeps serving",
                    model=self.model,
                    version=version,
                    engine=engine_id,
                    error=_short(exc),
                    retry_in_s=round(wait, 1),
                )
                return
            self._retry.pop(key, None)
            if self._wanted != key:  # superseded while loading: free it, load what is wanted now
                log.info("loaded engine no longer wanted; freed", version=version, engine=engine_id)
                serving.engine.deactivate()
                continue
            if self.current is None:
                self._install(serving)
            else:
                self._drop_pending("a newer engine replaced it")
                self._pending = serving
                log.info("new engine loaded; swapping at the next batch", version=version, engine=engine_id)
            return

    def _load_version(self, current: Current) -> Serving:
        bundle = self.registry.open(current.model, current.version)
        record = bundle.engine_record(current.engine_id)
        options = replace(self.options, engine_id=record.engine_id, precision=record.precision)  # type: ignore[arg-type]
        engine = load_engine(bundle, record.backend, options)
        engine.activate()
        return Serving(engine, current.model, current.version, current.engine_id)

    def _load_path(self, path: Path) -> Serving:
        bundle = Bundle.open(path)
        engine = load_engine(bundle, "onnxruntime", self.options)
        engine.activate()
        return Serving(engine, bundle.manifest.model, bundle.manifest.version, engine.name)

    def _install(self, serving: Serving) -> None:
        self.current = serving
        self.healthy = True
        self._ready.set()
        log.info("engine serving", model=serving.model, version=serving.version, engine=serving.engine_id)

    def _drop_pending(self, why: str) -> None:
        if self._pending is not None:
            log.info("pending engine dropped", version=self._pending.version, why=why)
            self._pending.engine.deactivate()
            self._pending = None

    # -- between batches --------------------------------------------------------------------------
    def swap_if_ready(self) -> bool:
        """Between batches (nothing in flight): put a loaded engine in service. The engine it
        replaces stays loaded as the fallback; the one before that is freed."""
        if self._pending is None:
            return False
        if self.previous is not None:
            self.retire(self.previous.engine)
        self.previous, self.current, self._pending = self.current, self._pending, None
        self.swapped_at = time.monotonic()
        assert self.current is not None
        self.healthy = True
        self.on_event("swap")
        log.info(
            "engine swapped",
            model=self.current.model,
            version=self.current.version,
            engine=self.current.engine_id,
            previous=self.previous.version if self.previous else None,
        )
        return True

    def fall_back(self, broken: Serving, error: str) -> bool:
        """``broken`` failed a known-good input. Serve the previous engine instead if there is one
        (True); otherwise mark the worker unhealthy (False) until :meth:`recovered` or a new engine."""
        self._broken.add(broken.key)
        if self.current is broken and self.previous is not None:
            self.current, self.previous = self.previous, None
            broken.engine.deactivate()
            self.healthy = True
            self.on_event("fallback")
            log.error(
                "engine fails every input; serving the previous one again",
                broken_version=broken.version,
                engine=broken.engine_id,
                version=self.current.version,
                error=error,
            )
            return True
        self.healthy = False
        self.on_event("broken")
        log.error(
            "engine fails every input and there is no previous engine: consumption stopped (not ready) "
            "until a working engine is promoted",
            version=broken.version,
            engine=broken.engine_id,
            error=error,
        )
        return False

    def recovered(self, serving: Serving) -> None:
        """The engine that failed a known-good input passes it again."""
        self._broken.discard(serving.key)
        if not self.healthy:
            log.info("engine works again; consuming", version=serving.version)
        self.healthy = True

    def close(self) -> None:
        if self._loader is not None:
            self._loader.cancel()
        for serving in (self.current, self.previous, self._pending):
            if serving is not None:
                serving.engine.deactivate()
        self.current = self.previous = self._pending = None


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."
