"""The worker's HTTP endpoints, up from the first second to the last: ``/metrics``, ``/healthz``,
``/readyz``.

parley serves them itself (aiohttp) rather than through faust's web server, because the worker is
alive, and must say so, before it joins the consumer group: while it waits for a first engine it is
alive but not ready, and consumes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class WebServer:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, status: Callable[[], dict[str, Any]]
    ) -> None:
        self.host, self.port = host, port
        self._registry = registry
        self._status = status
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self._status()  # refreshes parley_ready for this scrape
        return web.Response(
            body=generate_latest(self._registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        body = self._status()
        return web.json_response(body, status=200 if body.get("ready") else 503)
