"""Which engine serves: loaded from the registry pointer, swapped between batches, never mid-batch.

At start-up the Redis pointer (``current:<model>:<target>``) is the source of truth. Afterwards the
worker re-reads it whenever ``engine_ready`` for its model arrives on ``model-events`` (and every
``poll_s`` seconds, in case an event was missed). A new engine is loaded and activated in a thread,
off the event loop, while the old one keeps serving; the agent calls :meth:`swap_if_ready` between
batches, so a batch never mixes versions. A new engine that fails to load is logged and dropped:
the old one stays.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from engines.base import Engine, EngineOptions, load_engine
from engines.bundle import Bundle
from engines.pointer import Current, PointerStore
from engines.registry import Registry

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Serving:
    engine: Engine
    model: str
    version: str
    engine_id: str

    @property
    def backend(self) -> str:
        return self.engine.name

    @property
    def labels(self) -> dict[str, list[str]]:
        return {t.name: list(t.labels) for t in self.engine.bundle.manifest.tasks}

    @property
    def context_turns(self) -> int:
        return self.engine.bundle.manifest.context_turns


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
    ) -> None:
        self.registry = registry
        self.pointers = pointers
        self.model = model
        self.target = target
        self.options = options
        self.bundle_path = bundle_path
        self.current: Serving | None = None
        self._pending: Serving | None = None
        self._loading: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def wait_ready(self) -> Serving:
        await self._ready.wait()
        assert self.current is not None
        return self.current

    @property
    def ready(self) -> bool:
        return self.current is not None

    async def start(self) -> None:
        """Load the engine the pointer names (or the fixed bundle), then mark the holder ready."""
        if self.bundle_path is not None:
            serving = await asyncio.to_thread(self._load_path, self.bundle_path)
            self._install(serving)
            return
        await self.refresh()

    async def refresh(self) -> None:
        """Re-read the pointer; if it names another engine, load it in the background."""
        if self.pointers is None:
            return
        current = await self.pointers.get(self.model, self.target)
        if current is None:
            if self.current is None:
                log.warning(
                    "no current engine yet: waiting for a promotion", model=self.model, target=self.target
                )
            return
        serving = self._pending or self.current
        if serving is not None and (serving.version, serving.engine_id) == (
            current.version,
            current.engine_id,
        ):
            return
        if self._loading is not None and not self._loading.done():
            return
        self._loading = asyncio.create_task(self._load_pointer(current))

    async def _load_pointer(self, current: Current) -> None:
        try:
            serving = await asyncio.to_thread(self._load_version, current)
        except Exception as exc:  # whatever breaks a new engine must not touch the serving one
            log.error(
                "new engine failed to load; the current one keeps serving",
                model=current.model,
                version=current.version,
                engine=current.engine_id,
                error=str(exc),
            )
            return
        if self.current is None:
            self._install(serving)
        else:
            self._pending = serving
            log.info(
                "new engine loaded; swapping at the next batch",
                version=serving.version,
                engine=serving.engine_id,
            )

    def _load_version(self, current: Current) -> Serving:
        bundle = self.registry.open(current.model, current.version)
        record = bundle.engine_record(current.engine_id)
        backend = record.backend
        options = replace(self.options, engine_id=record.engine_id, precision=record.precision)  # type: ignore[arg-type]
        engine = load_engine(bundle, backend, options)
        engine.activate()
        return Serving(engine, current.model, current.version, current.engine_id)

    def _load_path(self, path: Path) -> Serving:
        bundle = Bundle.open(path)
        engine = load_engine(bundle, "onnxruntime", self.options)
        engine.activate()
        return Serving(engine, bundle.manifest.model, bundle.manifest.version, engine.name)

    def _install(self, serving: Serving) -> None:
        self.current = serving
        self._ready.set()
        log.info("engine serving", model=serving.model, version=serving.version, engine=serving.engine_id)

    def swap_if_ready(self) -> bool:
        """Between batches (nothing in flight): put a loaded engine in service and free the old one."""
        if self._pending is None:
            return False
        old, self.current, self._pending = self.current, self._pending, None
        assert self.current is not None
        if old is not None:
            old.engine.deactivate()
        log.info(
            "engine swapped",
            model=self.current.model,
            version=self.current.version,
            engine=self.current.engine_id,
            previous=old.version if old else None,
        )
        return True

    def close(self) -> None:
        for serving in (self.current, self._pending):
            if serving is not None:
                serving.engine.deactivate()
